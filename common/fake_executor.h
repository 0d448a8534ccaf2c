// FakeExecutor: an Executor for unit tests that queues posted tasks until the test runs them,
// one at a time and in any order it chooses, on its own thread.
#pragma once

#include <deque>
#include <utility>

#include "common/executor.h"

namespace fleet {

// Example:
//   FakeExecutor executor;
//   thing.DoAsync(&executor);
//   ASSERT_EQ(executor.pending(), 1u);
//   executor.RunNext();
class FakeExecutor final : public Executor {
 public:
  void Post(Task task) override { tasks_.push_back(std::move(task)); }

  size_t pending() const { return tasks_.size(); }
  // Runs the task posted `index`-th among those pending (0: the oldest); returns false when
  // there is none. Tasks it posts are queued, not run.
  bool Run(size_t index) {
    if (index >= tasks_.size()) return false;
    Task task = std::move(tasks_[index]);
    tasks_.erase(tasks_.begin() + static_cast<std::ptrdiff_t>(index));
    std::move(task)();
    return true;
  }
  bool RunNext() { return Run(0); }
  // Runs tasks, including the ones they post, until none is left; returns how many ran.
  int RunAll() {
    int ran = 0;
    while (RunNext()) ++ran;
    return ran;
  }

 private:
  std::deque<Task> tasks_;
};

}  // namespace fleet
