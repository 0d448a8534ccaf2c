// RestartBudget: backoff and restart budget of the `restart:` policy.
#include "controller/groups/restart_budget.h"

#include <algorithm>
#include <utility>

namespace fleet::controller {

RestartBudget::RestartBudget(engine::RestartSettings settings, const Clock* clock,
                             std::vector<absl::Time> history)
    : settings_(settings), clock_(clock), history_(std::move(history)) {
  std::sort(history_.begin(), history_.end());
}

std::vector<absl::Time> RestartBudget::history() const {
  const absl::Time since = clock_->Now() - settings_.window;
  std::vector<absl::Time> kept;
  for (absl::Time t : history_) {
    if (t > since) kept.push_back(t);
  }
  return kept;
}

RestartBudget::Decision RestartBudget::Decide() const {
  Decision d;
  if (!settings_.always) return d;
  d.restarts_in_window = static_cast<int>(history().size());
  if (d.restarts_in_window >= settings_.max_restarts) return d;
  d.restart = true;
  d.delay = absl::ZeroDuration();
  // The k-th restart within the window (k from 0) waits initial × 2^(k-1), capped.
  for (int k = 1; k <= d.restarts_in_window; ++k) {
    d.delay = k == 1 ? settings_.initial_backoff : std::min(d.delay * 2, settings_.max_backoff);
  }
  d.delay = std::min(d.delay, settings_.max_backoff);
  return d;
}

void RestartBudget::Record() { history_.push_back(clock_->Now()); }

}  // namespace fleet::controller
