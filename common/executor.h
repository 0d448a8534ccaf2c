// Executor: one worker thread running queued tasks in order. gRPC handlers hand long work
// (a discovery probe that listens for seconds) to it instead of blocking a reactor.
#pragma once

#include <deque>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace fleet {

// Example:
//   Executor executor;
//   executor.Post([reactor] { reactor->Finish(DoSlowThing()); });
//   executor.Shutdown();  // runs what is queued, then joins
class Executor {
 public:
  Executor() : worker_([this] { Run(); }) {}
  ~Executor() { Shutdown(); }
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Tasks posted after Shutdown() run at once on the caller's thread, so a reply is never lost.
  void Post(absl::AnyInvocable<void() &&> task) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopping_) {
        tasks_.push_back(std::move(task));
        return;
      }
    }
    std::move(task)();
  }

  // Runs every queued task, then stops the worker. Idempotent.
  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (worker_.joinable()) worker_.join();
  }

 private:
  void Run() {
    while (true) {
      absl::AnyInvocable<void() &&> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Executor* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
              return e->stopping_ || !e->tasks_.empty();
            },
            this));
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      std::move(task)();
    }
  }

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;  // last: started after the state it uses
};

}  // namespace fleet
