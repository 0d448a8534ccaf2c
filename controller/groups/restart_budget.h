// RestartBudget: the recipe's `restart:` policy as a decision. A group's failure asks it
// whether to restart and after how long: the first restart is immediate; each further one
// within the window waits initial_backoff, doubling up to max_backoff; once max_restarts
// restarts happened within the window, the next failure is final.
#pragma once

#include <vector>

#include "absl/time/time.h"
#include "common/clock.h"
#include "launch/recipe.h"

namespace fleet::controller {

// Example:
//   RestartBudget budget(recipe.restart, clock, stored_restart_times);
//   RestartBudget::Decision d = budget.Decide();
//   if (!d.restart) Fail(...); else { budget.Record(); ScheduleStart(clock->Now() + d.delay); }
class RestartBudget {
 public:
  struct Decision {
    bool restart = false;
    absl::Duration delay;        // wait this long before the new generation starts
    int restarts_in_window = 0;  // restarts already made within the window
  };

  // `history`: the times of earlier restarts of this group (any order), e.g. from its record.
  RestartBudget(engine::RestartSettings settings, const Clock* clock,
                std::vector<absl::Time> history);

  // What to do about a failure now. Does not record anything.
  Decision Decide() const;
  // Counts a restart made now.
  void Record();
  // The restarts still inside the window, oldest first: what the group's record keeps.
  std::vector<absl::Time> history() const;

 private:
  const engine::RestartSettings settings_;
  const Clock* const clock_;
  std::vector<absl::Time> history_;
};

}  // namespace fleet::controller
