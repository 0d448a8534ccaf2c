// Executor: where blocking work goes instead of a gRPC reactor or a caller's thread. The seam
// of rule 1: this interface, ThreadPool (thread_pool.h) for real and FakeExecutor
// (fake_executor.h) for tests that run posted tasks by hand. SerialQueue (serial_queue.h) keeps
// the tasks of one key in order on any Executor.
#pragma once

#include "absl/functional/any_invocable.h"

namespace fleet {

using Task = absl::AnyInvocable<void() &&>;

// Example:
//   void Service::Slow(Executor* executor, Reactor* reactor) {
//     executor->Post([reactor] { reactor->Finish(DoSlowThing()); });
//   }
class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `task` once, some time later, on a thread of the executor's choosing. Never drops a
  // task: an executor that has shut down runs it at once on the caller's thread, so a reply is
  // never lost.
  virtual void Post(Task task) = 0;
};

}  // namespace fleet
