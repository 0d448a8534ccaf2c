// HeartbeatSessions: the controller's side of heartbeat datagrams. A registration opens a
// session (a random id and key); each signed datagram of that session marks the node alive in
// the registry and is answered with an ack that says whether the agent must report its shards
// or register again. Plain class (no sockets): ControllerServer feeds it datagrams from its UDP
// socket and sends back what Handle returns.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "controller/registry/node_registry.h"

namespace fleet::controller {

struct HeartbeatSession {
  uint64_t id = 0;
  std::string key;  // heartbeat::kKeySize random bytes
};

// What became of the datagrams handled so far (for logs, tests and the benchmark).
struct HeartbeatCounters {
  uint64_t answered = 0;          // proven, in sequence, acked (any verdict but REGISTER)
  uint64_t told_to_register = 0;  // answered REGISTER: no such node or session
  uint64_t malformed = 0;         // dropped: not a heartbeat datagram
  uint64_t unproven = 0;          // dropped: the mac does not verify under the session's key
  uint64_t replayed = 0;          // dropped: a sequence not above the session's last one
  // Beats of a session that never arrived: the gaps in the sequence numbers of answered ones.
  uint64_t missed = 0;
};

// Example:
//   HeartbeatSessions sessions(&clock, &registry, absl::Seconds(60));
//   HeartbeatSession s = sessions.Open(node_id, request.shards_version());
//   ... later, for each datagram received:
//   if (std::optional<std::string> ack = sessions.Handle(datagram)) socket.SendTo(..., *ack);
class HeartbeatSessions {
 public:
  // `refresh_shards_after`: a node whose shard list was last reported this long ago is asked to
  // report it again, so a lost report or a failed stop of a stale shard is retried.
  HeartbeatSessions(const Clock* clock, NodeRegistry* registry, absl::Duration refresh_shards_after)
      : clock_(clock), registry_(registry), refresh_shards_after_(refresh_shards_after) {}

  // Starts a new session for a node that has just registered with shards of `shards_version`;
  // its previous session ends. The id and key come from pki::RandomBytes.
  HeartbeatSession Open(absl::string_view node_id, uint64_t shards_version);

  // The node's shard list of `shards_version` has reached the controller (ReportShards).
  void Reported(absl::string_view node_id, uint64_t shards_version);

  // Handles one received datagram: the signed ack to send back to its source, or nullopt when
  // it is dropped (malformed, unproven or replayed; counted, and logged at most once a
  // minute). A proven beat is a heartbeat in the registry; its ack asks for the shards
  // when the agent's version differs from the last one reported or the last report is older
  // than `refresh_shards_after`. A beat for a node or session the controller does not know is
  // answered REGISTER, unsigned.
  std::optional<std::string> Handle(absl::string_view datagram);

  HeartbeatCounters counters() const;

 private:
  struct Session {
    uint64_t id = 0;
    std::string key;
    uint64_t last_sequence = 0;
    uint64_t shards_version = 0;  // the last version reported
    absl::Time reported_at;
  };
  void Dropped(uint64_t HeartbeatCounters::*counter, absl::string_view what,
               absl::string_view detail) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  NodeRegistry* const registry_;
  const absl::Duration refresh_shards_after_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  HeartbeatCounters counters_ ABSL_GUARDED_BY(mu_);
  absl::Time last_drop_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace fleet::controller
