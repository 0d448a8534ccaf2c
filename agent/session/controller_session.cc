// ControllerSession: registration, shard reports and heartbeats with backoff.
#include "agent/session/controller_session.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/wire/heartbeat_wire.h"

namespace fleet::agent {

absl::Duration ControllerSession::Step() {
  std::vector<v1::ShardStatus> shards = ReadShards();
  if (!registered_) return Register(std::move(shards));
  if (report_asked_ || reported_version_ != shards_version_) return Report(std::move(shards));
  v1::HeartbeatDatagram beat;
  beat.set_node_id(registration_.identity().node_id());
  beat.set_session(heartbeat_session_);
  beat.set_sequence(++sequence_);
  beat.set_shards_version(shards_version_);
  absl::StatusOr<v1::HeartbeatVerdict> verdict =
      client_->Heartbeat(beat, heartbeat_key_, heartbeat_port_);
  if (!verdict.ok()) return Fail(verdict.status(), "heartbeat");
  Connected();
  switch (*verdict) {
    case v1::HEARTBEAT_VERDICT_OK:
      return period_;
    case v1::HEARTBEAT_VERDICT_REPORT_SHARDS:
      report_asked_ = true;
      return absl::ZeroDuration();
    case v1::HEARTBEAT_VERDICT_REGISTER:
      Log(LogLevel::kInfo, "agent",
          "controller does not know this node or session; registering again");
      registered_ = false;
      return absl::ZeroDuration();
    default:
      return Fail(absl::InternalError(absl::StrCat("the controller answered verdict ", *verdict,
                                                   ", which this agent does not know; run the "
                                                   "same SparkFleet version everywhere")),
                  "heartbeat");
  }
}

std::vector<v1::ShardStatus> ControllerSession::ReadShards() {
  std::vector<v1::ShardStatus> shards;
  if (shards_) shards = shards_();
  std::string bytes;
  for (const v1::ShardStatus& s : shards) {
    std::string one = s.SerializeAsString();
    absl::StrAppend(&bytes, one.size(), ":", one);
  }
  if (bytes != shards_bytes_) {
    shards_bytes_ = std::move(bytes);
    ++shards_version_;
  }
  return shards;
}

absl::Duration ControllerSession::Register(std::vector<v1::ShardStatus> shards) {
  v1::RegisterRequest registration = registration_;
  for (v1::ShardStatus& s : shards) *registration.add_shards() = std::move(s);
  registration.set_shards_version(shards_version_);
  absl::StatusOr<v1::RegisterResponse> r = client_->Register(registration);
  if (!r.ok()) return Fail(r.status(), "register");
  if (r->heartbeat_port() == 0 || r->heartbeat_port() > 65535 ||
      r->heartbeat_key().size() != heartbeat::kKeySize) {
    return Fail(absl::FailedPreconditionError(
                    "the controller gave no heartbeat port and key: it is older than this "
                    "agent; run the same SparkFleet version everywhere"),
                "register");
  }
  Connected();
  registered_ = true;
  period_ = absl::Milliseconds(r->heartbeat_period_ms() > 0 ? r->heartbeat_period_ms() : 1000);
  heartbeat_port_ = static_cast<uint16_t>(r->heartbeat_port());
  heartbeat_session_ = r->heartbeat_session();
  heartbeat_key_ = r->heartbeat_key();
  sequence_ = 0;
  reported_version_ = shards_version_;
  report_asked_ = false;
  Log(LogLevel::kInfo, "agent", "registered",
      {{"node", registration_.identity().name()},
       {"controller_id", r->controller_id()},
       {"heartbeat_period", absl::FormatDuration(period_)},
       {"heartbeat_port", absl::StrCat(heartbeat_port_, "/udp")}});
  return period_;
}

absl::Duration ControllerSession::Report(std::vector<v1::ShardStatus> shards) {
  v1::ReportShardsRequest report;
  report.set_node_id(registration_.identity().node_id());
  report.set_shards_version(shards_version_);
  for (v1::ShardStatus& s : shards) *report.add_shards() = std::move(s);
  absl::StatusOr<v1::ReportShardsResponse> r = client_->ReportShards(report);
  if (!r.ok()) return Fail(r.status(), "shard report");
  Connected();
  if (r->reregister()) {
    Log(LogLevel::kInfo, "agent", "controller does not know this node; registering again");
    registered_ = false;
    return absl::ZeroDuration();
  }
  reported_version_ = report.shards_version();
  report_asked_ = false;
  return period_;
}

void ControllerSession::Connected() {
  if (!connected_ && registered_) {
    Log(LogLevel::kInfo, "agent", "controller reachable again");
  }
  connected_ = true;
  last_error_.clear();
  backoff_.Reset();
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
