// The seam through which SparkFleet starts every child process (`fleet up`'s daemons, engine
// shards, the docker CLI, probe helpers): a ProcessRunner starts a ChildProcess from
// SpawnOptions. process_runner_impl.h is the real one (fork + exec, pidfds); fake_process_runner.h
// stands in for it in unit tests.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace fleet {

// Where a child's stdout or stderr goes.
enum class OutputTo {
  kInherit,  // the parent's own
  kNull,     // /dev/null
  kFile,     // appended to SpawnOptions::output_path (created 0644)
  kPipe,     // a pipe whose read end ChildProcess::TakeStdout()/TakeStderr() hands over
  kStdout,   // stderr only: wherever stdout goes (one interleaved stream)
};

// One resource limit for the child, set between fork and exec.
struct ResourceLimit {
  int resource = 0;  // RLIMIT_MEMLOCK, ...
  uint64_t soft = 0;
  uint64_t hard = 0;  // RLIM_INFINITY for unlimited
};

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
  // "KEY=VALUE" entries over the inherited environment, in order (a later entry of the same
  // name wins).
  std::vector<std::string> env;
  // The file for OutputTo::kFile. Setting it alone sends stdout and stderr there.
  std::string output_path;
  // setsid(): the child leads its own session and process group, so it outlives a terminal
  // hang-up or Ctrl-C of the parent, and ChildProcess::SignalGroup() reaches what it forks.
  bool new_session = false;
  // The kernel sends SIGTERM to the child when the parent thread dies, so a foreground
  // `fleet up` that is killed -9 leaves no process behind.
  bool die_with_parent = false;
  // The file to execute when it is not argv[0] (a program resolved beforehand); argv[0] is still
  // what the child sees as its name.
  std::string program;
  OutputTo stdout_to = OutputTo::kInherit;  // kFile when output_path is set and this is kInherit
  OutputTo stderr_to = OutputTo::kInherit;  // likewise
  std::string cwd;                          // the parent's when empty
  std::vector<ResourceLimit> limits;
  // Human words for errors about `limits` ("memlock 1 GiB for shard ds4/0"): shown when the
  // parent's hard limit forbids raising one.
  std::string limits_context;
};

// One process this program started (or attached to, see ProcessRunner::Attach). Destroying the
// handle of a started child that still runs kills it (its process group when new_session) and
// reaps it, unless Release()d.
class ChildProcess {
 public:
  virtual ~ChildProcess() = default;

  virtual pid_t pid() const = 0;
  virtual uint64_t start_ticks() const = 0;
  // True for a child this program started: its wait status can be had. False when attached.
  virtual bool is_child() const = 0;
  // Readable (POLLIN) once the process has ended; valid as long as the handle.
  virtual int exit_fd() const = 0;

  // True once the process has ended, waiting at most `timeout`. Does not reap.
  virtual bool WaitForExit(absl::Duration timeout) = 0;
  // Sends `signo` to the process (through its pidfd: never to a process that reused the pid).
  virtual absl::Status Signal(int signo) = 0;
  // Sends `signo` to its process group (a new_session child or an attached group leader).
  virtual absl::Status SignalGroup(int signo) = 0;
  // Once the process has ended: SIGKILLs what is left of its process group when `kill_group`
  // (the unreaped leader keeps the group id from being reused meanwhile), then reaps it and
  // returns its wait status. FailedPrecondition while it runs; NotFound when there is no status
  // to have (attached, or reaped elsewhere).
  virtual absl::StatusOr<int> Reap(bool kill_group) = 0;

  // The read ends of OutputTo::kPipe streams; an invalid fd otherwise or when taken already.
  virtual UniqueFd TakeStdout() = 0;
  virtual UniqueFd TakeStderr() = 0;

  // Gives up the process: the destructor neither kills nor reaps it.
  virtual void Release() = 0;
};

// A command run to completion.
struct RunResult {
  int wait_status = 0;
  std::string out;  // stdout (and stderr too with stderr_to = kStdout)
  std::string err;
  bool ok() const;  // exited with status 0
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;

  // Starts a child. Errors of fork, of setting up the child (a resource limit the hard limit
  // forbids: FailedPrecondition with the fix) and of exec (NotFound for a missing program) are
  // reported here, never as a child that exits 127.
  virtual absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const SpawnOptions& options) = 0;

  // Runs a command to completion with stdout and stderr captured (their *_to fields are
  // ignored unless kStdout). DeadlineExceeded, the process killed, past `timeout`.
  virtual absl::StatusOr<RunResult> Run(const SpawnOptions& options, absl::Duration timeout) = 0;

  // Takes hold of a process this program did not start (a previous agent's shard) by its pid
  // and start time. NotFound when it is gone, a zombie, or the pid now names another process.
  virtual absl::StatusOr<std::unique_ptr<ChildProcess>> Attach(pid_t pid, uint64_t start_ticks) = 0;
};

// SIGTERM (to the group when `group`), up to `grace` for the process to end, then SIGKILL.
// OK at once when it has ended; DeadlineExceeded when it survives SIGKILL for `kill_wait`.
// Does not reap.
absl::Status StopChild(ChildProcess& child, absl::Duration grace, bool group,
                       absl::Duration kill_wait = absl::Seconds(5));

// "exited with status 3", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);

// "8 MiB", "unlimited": a byte limit (RLIMIT_MEMLOCK above all) as operators read it.
std::string FormatMemlock(uint64_t bytes);

}  // namespace fleet
