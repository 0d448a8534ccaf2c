// ControllerSession: registration and heartbeats with backoff.
#include "agent/controller_session.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace fleet::agent {

absl::Duration ControllerSession::Step() {
  if (!registered_) {
    v1::RegisterRequest registration = registration_;
    if (shards_) {
      for (v1::ShardStatus& s : shards_()) *registration.add_shards() = std::move(s);
    }
    absl::StatusOr<v1::RegisterResponse> r = client_->Register(registration);
    if (!r.ok()) return Fail(r.status(), "register");
    registered_ = true;
    period_ = absl::Milliseconds(r->heartbeat_period_ms() > 0 ? r->heartbeat_period_ms() : 1000);
    connected_ = true;
    last_error_.clear();
    backoff_.Reset();
    Log(LogLevel::kInfo, "agent", "registered",
        {{"node", registration_.identity().name()},
         {"controller_id", r->controller_id()},
         {"heartbeat_period", absl::FormatDuration(period_)}});
    return period_;
  }
  v1::HeartbeatRequest beat;
  beat.set_node_id(registration_.identity().node_id());
  beat.set_sequence(++sequence_);
  if (shards_) {
    for (v1::ShardStatus& s : shards_()) *beat.add_shards() = std::move(s);
  }
  absl::StatusOr<v1::HeartbeatResponse> r = client_->Heartbeat(beat);
  if (!r.ok()) return Fail(r.status(), "heartbeat");
  if (!connected_) {
    Log(LogLevel::kInfo, "agent", "controller reachable again");
  }
  connected_ = true;
  last_error_.clear();
  backoff_.Reset();
  if (r->reregister()) {
    Log(LogLevel::kInfo, "agent", "controller does not know this node; registering again");
    registered_ = false;
    return absl::ZeroDuration();
  }
  return period_;
}

absl::Duration ControllerSession::Fail(const absl::Status& status, absl::string_view call) {
  connected_ = false;
  absl::Duration wait = backoff_.Next();
  // One line per distinct error, not one per retry: an agent waiting for its controller for
  // an hour should not fill the journal.
  std::string error(status.ToString());
  if (error != last_error_) {
    Log(LogLevel::kWarning, "agent", absl::StrCat(call, " failed; retrying with backoff"),
        {{"error", error}, {"retry_in", absl::FormatDuration(wait)}});
    last_error_ = error;
  }
  return wait;
}

}  // namespace fleet::agent
