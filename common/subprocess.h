// Child processes as move-only RAII values over the process runner (process/process_runner.h):
// start with an argv, wait with a deadline, stop with SIGTERM then SIGKILL. Used by `fleet up`,
// the device probes and the test harnesses.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process/proc_stat.h"
#include "common/process/process_runner.h"

namespace fleet {

// argv, env, output_path, new_session, die_with_parent and the rest: see SpawnOptions.
using ProcessOptions = SpawnOptions;

// Example:
//   ASSIGN_OR_RETURN(Process p, Process::Start({.argv = {"sleep", "10"}}));
//   RETURN_IF_ERROR(p.Stop(absl::Seconds(2)).status());
class Process {
 public:
  // Fails with the errno of fork or exec (exec errors are reported back, never as exit 127).
  // `runner`: DefaultProcessRunner() when null.
  static absl::StatusOr<Process> Start(const ProcessOptions& options,
                                       ProcessRunner* runner = nullptr);

  Process(Process&& other) noexcept = default;
  Process& operator=(Process&& other) noexcept = default;
  // Kills (SIGKILL) and reaps a child that is still running, unless Release()d.
  ~Process() = default;

  pid_t pid() const { return child_ == nullptr ? -1 : child_->pid(); }
  // True until the child has ended.
  bool Running();
  absl::Status Signal(int signo);
  // The raw wait status once the child exits; DeadlineExceeded if it is still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // SIGTERM, up to `grace` to exit, then SIGKILL. Returns the wait status.
  absl::StatusOr<int> Stop(absl::Duration grace);
  // Gives up ownership: the destructor will neither kill nor reap it.
  void Release();

 private:
  explicit Process(std::unique_ptr<ChildProcess> child) : child_(std::move(child)) {}

  std::unique_ptr<ChildProcess> child_;
};

// Stops a process that is not our child (no wait status available): SIGTERM, up to `grace`
// for it to go, then SIGKILL. Does nothing if `pid` is gone or now names another process
// (different start time). Returns DeadlineExceeded if it survived even SIGKILL for a second.
absl::Status StopProcess(pid_t pid, uint64_t start_ticks, absl::Duration grace,
                         ProcessRunner* runner = nullptr);

}  // namespace fleet
