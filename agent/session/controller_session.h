// ControllerSession: the agent's side of registration, shard reports and heartbeats, as a step
// function so tests drive it by hand. Each Step() makes at most one call and says how long to
// wait before the next one.
//
// Heartbeats are signed UDP datagrams (a key from the registration) that name the version of
// the agent's shard list; the list itself goes over gRPC (ReportShards) only when it changed
// or the controller's ack asks for it. So a steady node costs the controller one datagram a
// period, and a rank that becomes ready or dies is still reported at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "agent/session/controller_client.h"
#include "common/backoff.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::agent {

// Example (the agent's session thread):
//   ControllerSession session(client, registration, BackoffPolicy{}, seed);
//   while (!stopping) WaitFor(session.Step());
class ControllerSession {
 public:
  // The shards the agent holds, read at every step: sent with every registration, and in a
  // report whenever they changed.
  using ShardSource = absl::AnyInvocable<std::vector<v1::ShardStatus>()>;

  ControllerSession(ControllerClient* client, v1::RegisterRequest registration,
                    BackoffPolicy backoff, uint64_t seed, ShardSource shards = nullptr)
      : client_(client),
        registration_(std::move(registration)),
        backoff_(backoff, seed),
        shards_(std::move(shards)) {}

  // Registers when not registered; else reports the shards when they changed or the controller
  // asked for them; else heartbeats. On failure it retries with capped exponential backoff: a
  // controller that is away is retried forever, and when it answers that it does not know
  // this node (or session), the agent registers again.
  absl::Duration Step();

  bool registered() const { return registered_; }
  // Whether the last call reached the controller.
  bool connected() const { return connected_; }

 private:
  absl::Duration Fail(const absl::Status& status, absl::string_view call);
  // A call reached the controller.
  void Connected();
  // Reads the shards; counts the version up when they differ from the last read.
  std::vector<v1::ShardStatus> ReadShards();
  absl::Duration Register(std::vector<v1::ShardStatus> shards);
  absl::Duration Report(std::vector<v1::ShardStatus> shards);

  ControllerClient* const client_;
  const v1::RegisterRequest registration_;
  Backoff backoff_;
  ShardSource shards_;
  bool registered_ = false;
  bool connected_ = false;
  absl::Duration period_ = absl::Seconds(1);
  // The heartbeat session of the last registration.
  uint16_t heartbeat_port_ = 0;
  uint64_t heartbeat_session_ = 0;
  std::string heartbeat_key_;
  uint64_t sequence_ = 0;
  std::string shards_bytes_;     // the shard list last read, serialized
  uint64_t shards_version_ = 0;  // counts changes of that list
  uint64_t reported_version_ = 0;
  bool report_asked_ = false;
  std::string last_error_;
};

}  // namespace fleet::agent
