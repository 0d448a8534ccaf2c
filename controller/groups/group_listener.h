// GroupListener: what the group manager tells an observer (the controller's metrics) about the
// work it does. Calls come from the manager's threads, sometimes under its lock: an
// implementation only counts, never blocks and never calls back into the manager.
#pragma once

#include <vector>

#include "absl/strings/string_view.h"
#include "controller/preflight/preflight.h"

namespace fleet::controller {

class GroupListener {
 public:
  virtual ~GroupListener() = default;
  // Every event the manager records ("rank-exited", "rank-failed", "group-failed", ...).
  virtual void OnGroupEvent(absl::string_view group, absl::string_view kind) = 0;
  // The judged rows of every preflight, explicit or run by an apply.
  virtual void OnPreflight(const std::vector<CheckRow>& rows) = 0;
};

}  // namespace fleet::controller
