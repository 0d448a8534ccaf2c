// Waiting in tests for a condition that another thread or process makes true.
#pragma once

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fleet::testing {

// Polls `done` every `interval` until it holds (true) or `limit` has passed (false, after
// asking `done` once more).
//
// Example: ASSERT_TRUE(Eventually(absl::Seconds(5), [&] { return server.calls() == 1; }));
inline bool Eventually(absl::Duration limit, const std::function<bool()>& done,
                       absl::Duration interval = absl::Milliseconds(5)) {
  for (absl::Time deadline = absl::Now() + limit; absl::Now() < deadline;) {
    if (done()) return true;
    absl::SleepFor(interval);
  }
  return done();
}

}  // namespace fleet::testing
