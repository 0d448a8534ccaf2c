// Discoverer: the controller's side of UDP discovery. It probes the fabric for agents, lists
// who answered (proven or not), and tells a proven agent to join this controller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/wire/discovery_wire.h"

namespace fleet::controller {

// Where one Probe() call sends its PROBE.
struct ProbeScope {
  // Interfaces to probe on by name; empty means every up, non-loopback IPv4 interface.
  std::vector<std::string> interfaces;
  bool broadcast = true;  // to each interface's broadcast address
  bool multicast = true;  // to discovery::kMulticastGroup out of each interface
  // Unicast IPv4 targets as well (a static node list, or 127.0.0.1 in tests).
  std::vector<std::string> target_ips;
  // Return as soon as this many distinct nodes have answered with proof (a static node list
  // knows how many to expect); 0 listens for the whole listen_for.
  size_t stop_after_proven = 0;
};

// One agent that answered a probe.
struct Found {
  std::string node_id;
  std::string hostname;
  std::string source_ip;  // where the answer came from; ADOPT goes back there
  uint16_t source_port = 0;
  uint16_t agent_port = 0;
  bool joined = false;
  std::vector<discovery::InterfaceInfo> interfaces;
  std::vector<std::string> rdma_devices;
  // False when the answer's mac failed under every key: the node does not hold a join token of
  // this cluster. Shown to the operator, never adopted.
  bool proven = false;
  size_t key_index = 0;      // which of the Discoverer's keys proved it (when proven)
  discovery::Nonce nonce{};  // of the probe it answered
};

// Example:
//   Discoverer discoverer({discovery_key}, "ctl-1", 7100);
//   ASSIGN_OR_RETURN(std::vector<Found> found, discoverer.Probe({}, absl::Seconds(2)));
//   for (const Found& node : found) {
//     if (node.proven && !node.joined) RETURN_IF_ERROR(discoverer.Adopt(node, "10.0.0.1:7100"));
//   }
//
// Every Probe() call uses a fresh socket and a fresh random 128-bit nonce, and accepts only
// answers that echo that nonce, so an answer captured earlier and replayed is ignored. Methods
// keep no state between calls and may be called from several threads.
class Discoverer {
 public:
  // `keys` are discovery::DeriveKey(secret) of every join token that may still admit a node:
  // an answer is proven when its mac checks out under any of them. Agents answer probes
  // whatever their mac (see DiscoveryResponder), so a probe is made with the first key, or
  // none when there is no token (then every answer is listed unproven).
  Discoverer(std::vector<std::string> keys, std::string controller_id, uint16_t controller_port,
             uint16_t udp_port = discovery::kDefaultPort);

  // Sends one PROBE to every target in `scope` and collects ANSWERs for `listen_for` (or until
  // scope.stop_after_proven nodes have answered with proof). Answers
  // are listed in arrival order, one per node id (a proven answer replaces an unproven one with
  // the same node id). InvalidArgument for a bad target address; FailedPrecondition when the
  // scope names nothing to send to; Unavailable when no probe could be sent at all.
  absl::StatusOr<std::vector<Found>> Probe(const ProbeScope& scope, absl::Duration listen_for);

  // Sends ADOPT to `node`'s answering address, echoing the nonce of the probe it answered, so
  // the agent joins the controller at `controller_address` ("HOST:PORT"). Delivery is not
  // confirmed here: the agent confirms by registering. FailedPrecondition for an unproven node.
  absl::Status Adopt(const Found& node, std::string controller_address);

 private:
  const std::vector<std::string> keys_;
  const std::string controller_id_;
  const uint16_t controller_port_;
  const uint16_t udp_port_;
};

}  // namespace fleet::controller
