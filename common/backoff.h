// Capped exponential backoff with jitter, for retrying a peer that is away.
#pragma once

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace fleet {

struct BackoffPolicy {
  absl::Duration initial = absl::Milliseconds(200);
  absl::Duration max = absl::Seconds(5);
  double multiplier = 2.0;
  // Each delay is drawn uniformly from [delay * (1 - jitter), delay], so a rack of agents that
  // lost the controller together does not come back in lockstep.
  double jitter = 0.2;
};

// Example:
//   Backoff backoff(BackoffPolicy{}, /*seed=*/42);
//   while (!Connect().ok()) Sleep(backoff.Next());
//   backoff.Reset();
class Backoff {
 public:
  Backoff(BackoffPolicy policy, uint64_t seed) : policy_(policy), bits_(seed) {}

  // The delay before the next attempt; grows by `multiplier` up to `max`.
  absl::Duration Next();
  // Back to `initial` after a success.
  void Reset() { attempts_ = 0; }
  int attempts() const { return attempts_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 bits_;
  int attempts_ = 0;
};

}  // namespace fleet
