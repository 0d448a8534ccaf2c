// SerialQueue: tasks posted under one key run one at a time, in the order posted; tasks of
// different keys run in parallel on the underlying Executor. The controller keys group work by
// application, so two applies of one group never interleave while another group's stop goes
// ahead.
#pragma once

#include <deque>
#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/executor.h"

namespace fleet {

// Example:
//   SerialQueue queue(&pool);
//   queue.Post("echo", [] { Apply(...); });
//   queue.Post("echo", [] { Stop(...); });   // starts once the apply returned
//   queue.Post("other", [] { Stop(...); });  // runs beside them
//
// A key waiting behind a running task holds no thread of the executor, so a long task of one
// key never takes the pool from the others. Must outlive every task it posted: shut the
// executor down first.
class SerialQueue {
 public:
  explicit SerialQueue(Executor* executor) : executor_(executor) {}
  SerialQueue(const SerialQueue&) = delete;
  SerialQueue& operator=(const SerialQueue&) = delete;

  void Post(absl::string_view key, Task task) {
    {
      absl::MutexLock lock(&mu_);
      if (auto it = waiting_.find(key); it != waiting_.end()) {
        it->second.push_back(std::move(task));
        return;
      }
      waiting_.emplace(std::string(key), std::deque<Task>());
    }
    RunOnExecutor(std::string(key), std::move(task));
  }

  // Keys with a task running or waiting; for tests and metrics.
  size_t busy_keys() const {
    absl::MutexLock lock(&mu_);
    return waiting_.size();
  }

 private:
  // Runs `task`, then hands the key's next task to the executor, or marks the key idle. One
  // task per executor slot (rather than draining the key in a loop) keeps keys fair.
  void RunOnExecutor(std::string key, Task task) {
    executor_->Post([this, key = std::move(key), task = std::move(task)]() mutable {
      std::move(task)();
      Task next;
      {
        absl::MutexLock lock(&mu_);
        auto it = waiting_.find(key);
        if (it->second.empty()) {
          waiting_.erase(it);
          return;
        }
        next = std::move(it->second.front());
        it->second.pop_front();
      }
      RunOnExecutor(std::move(key), std::move(next));
    });
  }

  Executor* const executor_;
  mutable absl::Mutex mu_;
  // A key is present while one of its tasks runs (or is posted to run); its deque holds the
  // tasks behind that one.
  std::map<std::string, std::deque<Task>, std::less<>> waiting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet
