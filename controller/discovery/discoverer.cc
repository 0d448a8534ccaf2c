// Discoverer: sends PROBEs, collects ANSWERs bound to this call's nonce, sends ADOPTs.
#include "controller/discovery/discoverer.h"

#include <arpa/inet.h>

#include <optional>
#include <utility>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/udp.h"

namespace fleet::controller {

Discoverer::Discoverer(std::vector<std::string> keys, std::string controller_id,
                       uint16_t controller_port, uint16_t udp_port)
    : keys_(std::move(keys)),
      controller_id_(std::move(controller_id)),
      controller_port_(controller_port),
      udp_port_(udp_port) {}

absl::StatusOr<std::vector<Found>> Discoverer::Probe(const ProbeScope& scope,
                                                     absl::Duration listen_for) {
  // A malformed target is the caller's mistake, not the network's: fail before sending.
  for (const std::string& ip : scope.target_ips) {
    in_addr parsed{};
    if (inet_pton(AF_INET, ip.c_str(), &parsed) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("probe target \"", ip,
                       "\" is not an IPv4 address (expected a dotted quad like 10.0.0.2)"));
    }
  }
  const discovery::Nonce nonce = discovery::NewNonce();
  ASSIGN_OR_RETURN(std::string probe,
                   discovery::Encode(discovery::Probe{.nonce = nonce,
                                                      .controller_port = controller_port_,
                                                      .controller_id = controller_id_},
                                     keys_.empty() ? std::string() : keys_.front()));
  ASSIGN_OR_RETURN(UdpSocket socket, UdpSocket::Bind("0.0.0.0", 0));

  std::vector<BroadcastTarget> interfaces;
  if (scope.broadcast || scope.multicast) {
    ASSIGN_OR_RETURN(interfaces, ListBroadcastTargets(scope.interfaces));
  }
  int attempted = 0;
  int sent = 0;
  std::vector<std::string> send_errors;
  auto send = [&](absl::string_view ip) {
    ++attempted;
    if (absl::Status status = socket.SendTo(ip, udp_port_, probe); status.ok()) {
      ++sent;
    } else {
      send_errors.push_back(std::string(status.message()));
    }
  };
  for (const std::string& ip : scope.target_ips) send(ip);
  for (const BroadcastTarget& interface : interfaces) {
    if (scope.broadcast) send(interface.broadcast);
    if (scope.multicast) {
      if (absl::Status status = socket.SetMulticastInterface(interface.address); status.ok()) {
        send(discovery::kMulticastGroup);
      } else {
        ++attempted;
        send_errors.push_back(std::string(status.message()));
      }
    }
  }
  if (attempted == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("nothing to probe: no up IPv4 interface with a broadcast address",
                     scope.interfaces.empty()
                         ? ""
                         : absl::StrCat(" among [", absl::StrJoin(scope.interfaces, ", "), "]"),
                     " and no target addresses; name an interface that is up or give target IPs"));
  }
  if (sent == 0) {
    return absl::UnavailableError(
        absl::StrCat("no discovery probe could be sent: ", absl::StrJoin(send_errors, "; ")));
  }
  for (const std::string& error : send_errors) {
    Log(LogLevel::kWarning, "discovery", "probe not sent", {{"error", error}});
  }

  std::vector<Found> found;
  absl::flat_hash_map<std::string, size_t> index_by_node;
  size_t proven = 0;
  int malformed = 0;
  int unexpected = 0;
  int stale = 0;
  const absl::Time deadline = absl::Now() + listen_for;
  for (absl::Duration left = listen_for; left > absl::ZeroDuration();
       left = deadline - absl::Now()) {
    ASSIGN_OR_RETURN(std::optional<Datagram> datagram, socket.Receive(left));
    if (!datagram.has_value()) continue;
    // Tried under each key until one proves it; an unproven answer is still listed.
    absl::StatusOr<discovery::Decoded> decoded =
        discovery::Decode(datagram->bytes, keys_.empty() ? std::string() : keys_.front());
    size_t key_index = 0;
    while (decoded.ok() && !decoded->proven && key_index + 1 < keys_.size()) {
      decoded = discovery::Decode(datagram->bytes, keys_[++key_index]);
    }
    if (!decoded.ok()) {
      ++malformed;
      continue;
    }
    auto* answer = std::get_if<discovery::Answer>(&decoded->message);
    if (answer == nullptr) {
      ++unexpected;
      continue;
    }
    // Only answers to this call's probe count: anything else is late, replayed or forged.
    if (answer->nonce != nonce) {
      ++stale;
      continue;
    }
    Found node{.node_id = std::move(answer->node_id),
               .hostname = std::move(answer->hostname),
               .source_ip = std::move(datagram->source_ip),
               .source_port = datagram->source_port,
               .agent_port = answer->agent_port,
               .joined = answer->joined,
               .interfaces = std::move(answer->interfaces),
               .rdma_devices = std::move(answer->rdma_devices),
               .proven = decoded->proven,
               .key_index = key_index,
               .nonce = nonce};
    auto [it, inserted] = index_by_node.try_emplace(node.node_id, found.size());
    const bool proven_node = node.proven;
    if (inserted) {
      found.push_back(std::move(node));
    } else if (proven_node && !found[it->second].proven) {
      // Someone without the key cannot hide a node by answering first in its name.
      found[it->second] = std::move(node);
    } else {
      continue;  // a duplicate (the probe reached the node by several paths)
    }
    if (proven_node && ++proven == scope.stop_after_proven) break;
  }

  Log(LogLevel::kInfo, "discovery", "probe finished",
      {{"sent", absl::StrCat(sent)},
       {"proven", absl::StrCat(proven)},
       {"unproven", absl::StrCat(found.size() - proven)},
       {"malformed", absl::StrCat(malformed)},
       {"unexpected", absl::StrCat(unexpected)},
       {"stale", absl::StrCat(stale)}});
  return found;
}

absl::Status Discoverer::Adopt(const Found& node, std::string controller_address) {
  if (!node.proven) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", node.node_id, " at ", node.source_ip,
        " answered without proving it holds this cluster's token (its answer's mac failed); "
        "give it this cluster's join token, or add it by address instead"));
  }
  ASSIGN_OR_RETURN(
      std::string adopt,
      discovery::Encode(discovery::Adopt{.nonce = node.nonce,
                                         .node_id = node.node_id,
                                         .controller_address = std::move(controller_address)},
                        keys_.at(node.key_index)));
  ASSIGN_OR_RETURN(UdpSocket socket, UdpSocket::Bind("0.0.0.0", 0));
  return socket.SendTo(node.source_ip, node.source_port, adopt);
}

}  // namespace fleet::controller
