// HeartbeatSessions: keys, sequences and verdicts of heartbeat datagrams.
#include "controller/registry/heartbeat_sessions.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/wire/heartbeat_wire.h"

namespace fleet::controller {
namespace {

std::optional<std::string> Ack(const v1::HeartbeatDatagram& beat, v1::HeartbeatVerdict verdict,
                               absl::string_view key) {
  v1::HeartbeatAck ack;
  ack.set_session(beat.session());
  ack.set_sequence(beat.sequence());
  ack.set_verdict(verdict);
  // Cannot fail: an ack is a few bytes.
  absl::StatusOr<std::string> datagram = heartbeat::EncodeAck(ack, key);
  if (!datagram.ok()) return std::nullopt;
  return *std::move(datagram);
}

}  // namespace

HeartbeatSession HeartbeatSessions::Open(absl::string_view node_id, uint64_t shards_version) {
  const std::string id = pki::RandomBytes(sizeof(uint64_t));
  HeartbeatSession opened;
  std::memcpy(&opened.id, id.data(), sizeof(opened.id));
  opened.key = pki::RandomBytes(heartbeat::kKeySize);
  absl::MutexLock lock(&mu_);
  sessions_[node_id] = Session{.id = opened.id,
                               .key = opened.key,
                               .shards_version = shards_version,
                               .reported_at = clock_->Now()};
  return opened;
}

void HeartbeatSessions::Reported(absl::string_view node_id, uint64_t shards_version) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(node_id);
  if (it == sessions_.end()) return;
  it->second.shards_version = shards_version;
  it->second.reported_at = clock_->Now();
}

std::optional<std::string> HeartbeatSessions::Handle(absl::string_view datagram) {
  absl::StatusOr<v1::HeartbeatDatagram> beat = heartbeat::ParseBeat(datagram);
  absl::MutexLock lock(&mu_);
  if (!beat.ok()) {
    Dropped(&HeartbeatCounters::malformed, "malformed heartbeat datagram", beat.status().message());
    return std::nullopt;
  }
  auto it = sessions_.find(beat->node_id());
  if (it == sessions_.end() || it->second.id != beat->session()) {
    ++counters_.told_to_register;
    return Ack(*beat, v1::HEARTBEAT_VERDICT_REGISTER, "");
  }
  Session& session = it->second;
  if (!heartbeat::Verify(datagram, session.key)) {
    Dropped(&HeartbeatCounters::unproven, "heartbeat datagram with a bad signature",
            absl::StrCat("node ", beat->node_id()));
    return std::nullopt;
  }
  if (beat->sequence() <= session.last_sequence) {
    Dropped(&HeartbeatCounters::replayed, "heartbeat datagram replayed or out of order",
            absl::StrCat("node ", beat->node_id(), ", sequence ", beat->sequence(), " after ",
                         session.last_sequence));
    return std::nullopt;
  }
  if (session.last_sequence != 0) counters_.missed += beat->sequence() - session.last_sequence - 1;
  session.last_sequence = beat->sequence();
  absl::StatusOr<v1::NodeState> before = registry_->Heartbeat(beat->node_id());
  if (absl::IsNotFound(before.status())) {
    // Removed while its session was open.
    sessions_.erase(it);
    ++counters_.told_to_register;
    return Ack(*beat, v1::HEARTBEAT_VERDICT_REGISTER, "");
  }
  // A node back from Lost (its link cut, say) kept its session, but its groups may have been
  // placed elsewhere meanwhile: what still runs there is asked for until it is reported, so
  // ranks of an old generation are stopped at once rather than at the next refresh.
  if (before.ok() && *before == v1::NODE_STATE_LOST) session.reported_at = absl::InfinitePast();
  const bool stale = beat->shards_version() != session.shards_version ||
                     clock_->Now() - session.reported_at >= refresh_shards_after_;
  ++counters_.answered;
  return Ack(*beat, stale ? v1::HEARTBEAT_VERDICT_REPORT_SHARDS : v1::HEARTBEAT_VERDICT_OK,
             session.key);
}

HeartbeatCounters HeartbeatSessions::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void HeartbeatSessions::Dropped(uint64_t HeartbeatCounters::*counter, absl::string_view what,
                                absl::string_view detail) {
  ++(counters_.*counter);
  // Anyone can send datagrams to the port: log the first of a minute, not each one.
  absl::Time now = clock_->Now();
  if (now - last_drop_log_ < absl::Minutes(1)) return;
  last_drop_log_ = now;
  Log(LogLevel::kWarning, "heartbeats", absl::StrCat("dropped a ", what),
      {{"detail", detail},
       {"dropped_so_far",
        absl::StrCat(counters_.malformed + counters_.unproven + counters_.replayed)}});
}

}  // namespace fleet::controller
