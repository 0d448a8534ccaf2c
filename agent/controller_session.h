// ControllerSession: the agent's side of registration and heartbeats, as a step function so
// tests drive it by hand. Each Step() makes at most one call and says how long to wait before
// the next one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "agent/controller_client.h"
#include "common/backoff.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::agent {

// Example (the agent's session thread):
//   ControllerSession session(client, registration, BackoffPolicy{}, seed);
//   while (!stopping) WaitFor(session.Step());
class ControllerSession {
 public:
  // The shards the agent holds, sent with every registration and heartbeat.
  using ShardSource = absl::AnyInvocable<std::vector<v1::ShardStatus>()>;

  ControllerSession(ControllerClient* client, v1::RegisterRequest registration,
                    BackoffPolicy backoff, uint64_t seed, ShardSource shards = nullptr)
      : client_(client),
        registration_(std::move(registration)),
        backoff_(backoff, seed),
        shards_(std::move(shards)) {}

  // Registers when not registered, else heartbeats. On failure it retries with capped
  // exponential backoff: a controller that is away is retried forever, and when it answers
  // that it does not know this node, the agent registers again.
  absl::Duration Step();

  bool registered() const { return registered_; }
  // Whether the last call reached the controller.
  bool connected() const { return connected_; }

 private:
  absl::Duration Fail(const absl::Status& status, absl::string_view call);

  ControllerClient* const client_;
  const v1::RegisterRequest registration_;
  Backoff backoff_;
  ShardSource shards_;
  bool registered_ = false;
  bool connected_ = false;
  absl::Duration period_ = absl::Seconds(1);
  uint64_t sequence_ = 0;
  std::string last_error_;
};

}  // namespace fleet::agent
