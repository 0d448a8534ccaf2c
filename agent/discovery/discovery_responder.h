// DiscoveryResponder: the agent's side of UDP discovery. A thread answers PROBEs with this
// node's description, proven by an HMAC under its join token's key, and hands a proven, fresh
// ADOPT to the agent; everything else is dropped and counted.
//
// Probes are answered whatever their own mac: a controller holding another token still learns
// that this node exists (and lists it as unproven), which is what an operator needs to see to
// fix a wrong token. What an answer reveals (node id, hostname, interfaces) is not secret on
// the fabric; answers are rate-limited so replayed probes cannot turn a node into an amplifier.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/udp.h"
#include "common/wire/discovery_wire.h"

namespace fleet::agent {

struct DiscoveryResponderOptions {
  std::string key;  // discovery::DeriveKey(join token secret)
  std::string bind_ip = "0.0.0.0";
  uint16_t udp_port = discovery::kDefaultPort;  // 0 picks a free port (tests; see port())
  // Join discovery::kMulticastGroup on every up IPv4 interface (only when bound to 0.0.0.0,
  // since a socket bound to one address does not receive multicast).
  bool join_multicast = true;
  // This node's current description, called for every probe answered. The nonce is filled in
  // by the responder. Put fabric interfaces first: when the answer does not fit in one
  // datagram, interfaces are dropped from the end.
  std::function<discovery::Answer()> answer;
  // Called on the responder's thread, once per adopting probe nonce, with the controller's
  // "HOST:PORT". It must return quickly and must not call Stop().
  std::function<void(const std::string& controller_address)> on_adopt;
};

// Example:
//   DiscoveryResponder responder({.key = key, .answer = DescribeNode,
//                                 .on_adopt = [&](const std::string& a) { JoinLater(a); }});
//   RETURN_IF_ERROR(responder.Start());
//   ...
//   responder.Stop();  // also done by the destructor
class DiscoveryResponder {
 public:
  // How many datagrams met each fate since Start().
  struct Counters {
    uint64_t answered = 0;         // PROBEs answered
    uint64_t rate_limited = 0;     // PROBEs not answered: over kMaxAnswersPerSecond
    uint64_t adopted = 0;          // ADOPTs passed to on_adopt
    uint64_t malformed = 0;        // not a well-formed discovery datagram
    uint64_t bad_mac = 0;          // an ADOPT not made with our key
    uint64_t wrong_type = 0;       // proven, but an ANSWER (only controllers want those)
    uint64_t unknown_nonce = 0;    // ADOPT for a probe we did not answer, or another node id
    uint64_t replayed_adopt = 0;   // ADOPT for a nonce already adopted
    uint64_t answer_failures = 0;  // our answer could not be encoded or sent
  };

  explicit DiscoveryResponder(DiscoveryResponderOptions options);
  DiscoveryResponder(const DiscoveryResponder&) = delete;
  DiscoveryResponder& operator=(const DiscoveryResponder&) = delete;
  ~DiscoveryResponder();

  // Binds the socket, joins the multicast group and starts the thread. Errors from binding
  // (Unavailable when the port is taken); a failed multicast join is only logged, since
  // broadcast and unicast probes still arrive. FailedPrecondition when already started.
  absl::Status Start();

  // Stops the thread within about 50 ms. Safe to call twice, or without Start().
  void Stop();

  // The bound UDP port; valid after a successful Start().
  uint16_t port() const { return port_; }

  Counters counters() const;

 private:
  // One probe this responder answered, kept to check a later ADOPT against.
  struct AnsweredProbe {
    discovery::Nonce nonce;
    std::string node_id;
    bool adopted = false;
  };
  enum class Drop { kMalformed, kBadMac, kWrongType, kUnknownNonce, kReplayedAdopt, kCount };

  void Run();
  void Handle(const Datagram& datagram);
  void HandleProbe(const discovery::Probe& probe, const Datagram& datagram);
  void HandleAdopt(const discovery::Adopt& adopt, const Datagram& datagram);
  void Dropped(Drop reason, const Datagram& datagram, absl::string_view detail);

  // Answers are small but larger than probes; this bounds what replayed probes can make a node
  // send. A controller's probe reaches a node by at most a few paths, well under this.
  static constexpr int kMaxAnswersPerSecond = 20;

  // Probes kept for ADOPT: a controller adopts right after probing, so a short memory suffices
  // and bounds what a flood of proven probes can make us hold.
  static constexpr size_t kRememberedProbes = 64;

  const DiscoveryResponderOptions options_;
  std::optional<UdpSocket> socket_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};

  // Touched only by the responder thread.
  std::deque<AnsweredProbe> answered_;
  bool logged_[static_cast<size_t>(Drop::kCount)] = {};
  bool logged_trim_ = false;
  bool logged_answer_failure_ = false;
  bool logged_rate_limit_ = false;
  absl::Time window_start_ = absl::InfinitePast();
  int answers_in_window_ = 0;

  mutable absl::Mutex mu_;
  Counters counters_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;  // last: started after everything it uses exists
};

}  // namespace fleet::agent
