// ThreadPool: a fixed number of worker threads taking tasks from one queue, in the order they
// were posted. Components own theirs (the controller's group work, its RPC work, an agent's log
// reads) so one slow kind of work never holds up another.
#pragma once

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/executor.h"

namespace fleet {

// Example:
//   ThreadPool pool(4);
//   pool.Post([reactor] { reactor->Finish(DoSlowThing()); });
//   pool.Shutdown();  // runs what is queued, then joins
class ThreadPool final : public Executor {
 public:
  // `threads` below 1 is taken as 1: a pool always makes progress.
  explicit ThreadPool(int threads) {
    const int n = threads < 1 ? 1 : threads;
    workers_.reserve(n);
    for (int i = 0; i < n; ++i) workers_.emplace_back([this] { Run(); });
  }
  ~ThreadPool() override { Shutdown(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Tasks posted after Shutdown() run at once on the caller's thread.
  void Post(Task task) override {
    {
      absl::MutexLock lock(&mu_);
      if (!stopping_) {
        tasks_.push_back(std::move(task));
        return;
      }
    }
    std::move(task)();
  }

  // Runs every queued task (and what they post meanwhile), then stops the workers. Idempotent;
  // not to be called from one of the pool's own tasks.
  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

  int size() const { return static_cast<int>(workers_.size()); }

 private:
  void Run() {
    while (true) {
      Task task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return p->stopping_ || !p->tasks_.empty();
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
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;  // last: started after the state they use
};

}  // namespace fleet
