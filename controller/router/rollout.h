// Rollout: `fleet roll` as a step function. State in (each replica's group, as the controller
// sees it, and its router slot), actions out (drain, restart, put back); the RouterManager
// carries the actions out and feeds the observations back. No threads, no clock of its own: the
// caller passes the time, so a fake clock tests every path.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fleet::controller {

// One replica as the roll sees it at a step.
struct RollReplica {
  std::string group;
  uint64_t generation = 0;
  bool ready = false;        // the group is Ready
  bool in_rotation = false;  // the router sends it requests (its slot is READY)
  // Requests it still serves: the engine's vllm:num_requests_running, or the router's count of
  // requests in flight to it, whichever is larger; unset when neither could be read.
  std::optional<int> requests_running;
};

struct RollActions {
  std::vector<int> drain;          // replicas to take out of rotation (new requests go elsewhere)
  std::vector<int> restart;        // replicas to restart now (a coordinated restart of the group)
  std::vector<int> put_back;       // replicas to return to rotation
  std::vector<std::string> steps;  // what happened, for the answer and the log
  bool done = false;               // every replica rolled
  absl::Status failed;             // the roll stopped: why, which replicas were and were not rolled
};

// Example:
//   Roll roll(2, {.max_unavailable = 1, .drain_timeout = absl::Seconds(60), ...});
//   while (true) {
//     RollActions a = roll.Step(clock->Now(), Observe());
//     Carry(a);  // drain / restart / put back
//     if (a.done || !a.failed.ok()) break;
//     Sleep(period);
//   }
struct RollSettings {
  int max_unavailable = 1;
  absl::Duration drain_timeout = absl::Seconds(60);
  // A restarted replica must be Ready and back in rotation this long after its restart.
  absl::Duration ready_timeout = absl::Minutes(30);
};

class Roll {
 public:
  Roll(int replicas, RollSettings settings);

  // One step at `now` given what each replica looks like (index = replica). The caller reports a
  // restart that could not be ordered with RestartFailed before its next Step.
  RollActions Step(absl::Time now, const std::vector<RollReplica>& replicas);
  void RestartFailed(int replica, const absl::Status& error);

 private:
  enum class Phase { kWaiting, kDraining, kRestarting, kReturning, kDone };
  struct Progress {
    Phase phase = Phase::kWaiting;
    absl::Time since;             // when the phase began
    uint64_t old_generation = 0;  // the generation it had when restarted
  };
  absl::Status Stopped(const std::vector<RollReplica>& replicas, const std::string& why) const;

  RollSettings settings_;
  std::vector<Progress> progress_;
  absl::Status failed_;
};

}  // namespace fleet::controller
