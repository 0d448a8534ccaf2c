// The clock seam: production code reads time and sleeps through a Clock so tests can use
// FakeClock (fake_clock.h) and never sleep for correctness.
#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fleet {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// Wall-clock time from the system.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // The process-wide instance, for composition roots.
  static RealClock* Get() {
    static RealClock clock;
    return &clock;
  }
};

}  // namespace fleet
