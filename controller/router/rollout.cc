// `fleet roll` as a step function (rollout.h).
#include "controller/router/rollout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fleet::controller {

Roll::Roll(int replicas, RollSettings settings)
    : settings_(settings), progress_(static_cast<size_t>(std::max(replicas, 0))) {
  settings_.max_unavailable = std::max(settings_.max_unavailable, 1);
}

void Roll::RestartFailed(int replica, const absl::Status& error) {
  failed_ = absl::FailedPreconditionError(
      absl::StrCat("replica ", replica, " could not be restarted: ", error.message()));
}

absl::Status Roll::Stopped(const std::vector<RollReplica>& replicas, const std::string& why) const {
  std::vector<std::string> done, left;
  for (size_t i = 0; i < progress_.size(); ++i) {
    const std::string& name = i < replicas.size() ? replicas[i].group : absl::StrCat(i);
    if (progress_[i].phase == Phase::kDone) done.push_back(name);
    if (progress_[i].phase == Phase::kWaiting) left.push_back(name);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      why, "; the roll stopped. Rolled: ", done.empty() ? "none" : absl::StrJoin(done, ", "),
      "; not touched: ", left.empty() ? "none" : absl::StrJoin(left, ", "),
      ". `fleet describe group` and `fleet logs` show why; `fleet roll` again once it is fixed"));
}

RollActions Roll::Step(absl::Time now, const std::vector<RollReplica>& replicas) {
  RollActions actions;
  if (replicas.size() != progress_.size()) {
    actions.failed = absl::AbortedError(absl::StrCat("the application now has ", replicas.size(),
                                                     " replicas instead of ", progress_.size(),
                                                     "; the roll stopped (apply changed it)"));
    return actions;
  }
  if (!failed_.ok()) {
    actions.failed = Stopped(replicas, std::string(failed_.message()));
    return actions;
  }
  int busy = 0;
  for (size_t i = 0; i < progress_.size(); ++i) {
    Progress& p = progress_[i];
    const RollReplica& r = replicas[i];
    switch (p.phase) {
      case Phase::kDraining: {
        const bool drained = r.requests_running.has_value() && *r.requests_running == 0;
        const bool timed_out = now - p.since >= settings_.drain_timeout;
        if (!drained && !timed_out) break;
        actions.steps.push_back(
            drained ? absl::StrCat(r.group, " drained")
                    : absl::StrCat(r.group, " still had ",
                                   r.requests_running.has_value()
                                       ? absl::StrCat(*r.requests_running, " requests")
                                       : std::string("an unknown number of requests"),
                                   " after rollout.drain_timeout ",
                                   absl::FormatDuration(settings_.drain_timeout), "; restarting"));
        p = {.phase = Phase::kRestarting, .since = now, .old_generation = r.generation};
        actions.restart.push_back(static_cast<int>(i));
        break;
      }
      case Phase::kRestarting:
        if (r.ready && r.generation > p.old_generation) {
          actions.steps.push_back(absl::StrCat(r.group, " Ready on generation ", r.generation));
          p.phase = Phase::kReturning;
          actions.put_back.push_back(static_cast<int>(i));
          break;
        }
        [[fallthrough]];
      case Phase::kReturning:
        if (p.phase == Phase::kReturning && r.in_rotation) {
          actions.steps.push_back(absl::StrCat(r.group, " back in rotation"));
          p.phase = Phase::kDone;
          break;
        }
        if (p.phase == Phase::kReturning) actions.put_back.push_back(static_cast<int>(i));
        if (now - p.since >= settings_.ready_timeout) {
          actions.failed = Stopped(
              replicas,
              absl::StrCat(r.group, " did not come back Ready and in rotation within ",
                           absl::FormatDuration(settings_.ready_timeout), " of its restart"));
          return actions;
        }
        break;
      default:
        break;
    }
    if (p.phase == Phase::kDraining || p.phase == Phase::kRestarting ||
        p.phase == Phase::kReturning) {
      ++busy;
    }
  }
  for (size_t i = 0; i < progress_.size() && busy < settings_.max_unavailable; ++i) {
    Progress& p = progress_[i];
    if (p.phase != Phase::kWaiting) continue;
    // Never take a serving replica out while too few others serve: the roll keeps at least
    // (replicas - max_unavailable) in rotation. A replica that serves nothing may go at once.
    int serving = 0;
    for (size_t j = 0; j < replicas.size(); ++j) {
      if (j != i && replicas[j].in_rotation) ++serving;
    }
    if (replicas[i].in_rotation && replicas.size() > 1 &&
        serving < static_cast<int>(replicas.size()) - settings_.max_unavailable) {
      break;
    }
    p = {.phase = Phase::kDraining, .since = now};
    actions.drain.push_back(static_cast<int>(i));
    actions.steps.push_back(absl::StrCat(replicas[i].group, " out of rotation, draining"));
    ++busy;
  }
  actions.done = std::all_of(progress_.begin(), progress_.end(),
                             [](const Progress& p) { return p.phase == Phase::kDone; });
  return actions;
}

}  // namespace fleet::controller
