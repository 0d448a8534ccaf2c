// Child processes as move-only RAII handles: start with an argv, wait with a deadline, stop
// with SIGTERM then SIGKILL. Used by `fleet up` and by the test harness.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleet {

struct ProcessOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
  // Extra "KEY=VALUE" entries added to (or replacing in) the inherited environment.
  std::vector<std::string> env;
  // stdout and stderr are appended to this file when set; otherwise inherited.
  std::string output_path;
  // setsid(): the child leads its own session and process group, so it outlives a terminal
  // hang-up or Ctrl-C of the parent (for daemons that `fleet up --detach` leaves running).
  bool new_session = false;
  // The kernel sends SIGTERM to the child when the parent thread dies, so a foreground
  // `fleet up` that is killed -9 leaves no process behind.
  bool die_with_parent = false;
};

// Example:
//   ASSIGN_OR_RETURN(Process p, Process::Start({.argv = {"sleep", "10"}}));
//   RETURN_IF_ERROR(p.Stop(absl::Seconds(2)).status());
class Process {
 public:
  // Fails with the errno of fork or exec (exec errors are reported back through a pipe).
  static absl::StatusOr<Process> Start(const ProcessOptions& options);

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Kills (SIGKILL) and reaps a child that is still running, unless Release()d.
  ~Process();

  pid_t pid() const { return pid_; }
  // True until the child has been reaped.
  bool Running();
  absl::Status Signal(int signo);
  // The raw wait status once the child exits; DeadlineExceeded if it is still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // SIGTERM, up to `grace` to exit, then SIGKILL. Returns the wait status.
  absl::StatusOr<int> Stop(absl::Duration grace);
  // Gives up ownership: the destructor will neither kill nor reap it.
  void Release() { pid_ = -1; }

 private:
  explicit Process(pid_t pid) : pid_(pid) {}
  bool Reap(bool block);

  pid_t pid_ = -1;
  std::optional<int> wait_status_;
};

// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat). A pid plus its
// start time names one process even after the pid number is reused.
absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid);

// Stops a process that is not our child (no wait status available): SIGTERM, up to `grace`
// for it to go, then SIGKILL. Does nothing if `pid` is gone or now names another process
// (different start time). Returns DeadlineExceeded if it survived even SIGKILL for a second.
absl::Status StopProcess(pid_t pid, uint64_t start_ticks, absl::Duration grace);

// "exited with status 3", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);

}  // namespace fleet
