// Capped exponential backoff with jitter.
#include "common/backoff.h"

#include <algorithm>
#include <cmath>

namespace fleet {

absl::Duration Backoff::Next() {
  double factor = std::pow(policy_.multiplier, std::min(attempts_, 30));
  absl::Duration delay = std::min(policy_.initial * factor, policy_.max);
  ++attempts_;
  double scale = std::uniform_real_distribution<double>(1.0 - policy_.jitter, 1.0)(bits_);
  return delay * scale;
}

}  // namespace fleet
