// The real process runner (process_runner_impl.h).
#include "common/process/process_runner_impl.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/process/pidfd.h"
#include "common/process/proc_stat.h"
#include "common/process/rlimits.h"
#include "common/status_macros.h"

extern char** environ;

namespace fleet {
namespace {

// Stages of the child between fork and exec, reported through a pipe when one fails.
enum ChildStage : int { kSetsid = 1, kDeathSignal, kLimit, kCwd, kOutput, kExec };
struct ChildReport {
  int stage;
  int index;  // the failing entry of SpawnOptions::limits
  int err;
};

[[noreturn]] void ChildFail(int fd, ChildStage stage, int index = 0) {
  ChildReport report = {stage, index, errno};
  ssize_t ignored = ::write(fd, &report, sizeof report);
  (void)ignored;
  ::_exit(127);
}

// The environment: the inherited one, then `extra` in order (a later entry of a name wins).
std::vector<std::string> MergedEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  absl::flat_hash_map<std::string, size_t> index;
  auto set = [&](absl::string_view entry) {
    auto [it, inserted] =
        index.try_emplace(std::string(entry.substr(0, entry.find('='))), env.size());
    if (inserted) {
      env.emplace_back(entry);
    } else {
      env[it->second] = std::string(entry);
    }
  };
  for (char** e = environ; *e != nullptr; ++e) set(*e);
  for (const std::string& entry : extra) set(entry);
  return env;
}

absl::Status LimitError(const SpawnOptions& options, const ResourceLimit& limit, int err) {
  std::string what =
      absl::StrCat(options.limits_context.empty() ? options.argv[0] : options.limits_context, ": ",
                   ResourceName(limit.resource), " ", FormatMemlock(limit.hard), " cannot be set (",
                   std::strerror(err), ")");
  if (err != EPERM) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the soft limit ", FormatMemlock(limit.soft), " must not exceed the hard one"));
  }
  struct rlimit own = {};
  ::getrlimit(limit.resource, &own);
  return absl::FailedPreconditionError(absl::StrCat(
      what, ": this process's hard limit is ", FormatMemlock(own.rlim_max),
      " and it may not raise it; run it with a higher hard limit (LimitMEMLOCK=infinity under "
      "systemd, /etc/security/limits.conf) or with CAP_SYS_RESOURCE"));
}

int PidfdSendSignal(int pidfd, int signo) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, signo, nullptr, 0));
}

// The status waitpid() would have given, from waitid()'s siginfo.
int WaitStatusOf(const siginfo_t& info) {
  switch (info.si_code) {
    case CLD_EXITED:
      return (info.si_status & 0xff) << 8;
    case CLD_DUMPED:
      return info.si_status | 0x80;
    default:
      return info.si_status;
  }
}

class RealChild final : public ChildProcess {
 public:
  // `started`: this program forked it, so the destructor kills and reaps it unless released.
  RealChild(pid_t pid, uint64_t start_ticks, UniqueFd pidfd, bool started, bool is_child,
            bool group)
      : pid_(pid),
        start_ticks_(start_ticks),
        pidfd_(std::move(pidfd)),
        started_(started),
        is_child_(is_child),
        group_(group) {}

  ~RealChild() override {
    if (!started_ || released_ || status_) return;
    if (group_) ::kill(-pid_, SIGKILL);
    PidfdSendSignal(pidfd_.get(), SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }

  pid_t pid() const override { return pid_; }
  uint64_t start_ticks() const override { return start_ticks_; }
  bool is_child() const override { return is_child_; }
  int exit_fd() const override { return pidfd_.get(); }

  bool WaitForExit(absl::Duration timeout) override {
    return status_.has_value() || WaitReadable(pidfd_.get(), timeout);
  }

  absl::Status Signal(int signo) override {
    if (status_ || PidfdSendSignal(pidfd_.get(), signo) != 0) {
      return absl::FailedPreconditionError(absl::StrCat("process ", pid_, " has already ended"));
    }
    return absl::OkStatus();
  }

  absl::Status SignalGroup(int signo) override {
    if (::kill(-pid_, signo) != 0) return ErrnoStatus(absl::StrCat("kill process group ", pid_));
    return absl::OkStatus();
  }

  absl::StatusOr<int> Reap(bool kill_group) override {
    if (status_) return *status_;
    if (!is_child_) {
      return absl::NotFoundError(absl::StrCat("process ", pid_, " is not a child of this one"));
    }
    if (!WaitReadable(pidfd_.get(), absl::ZeroDuration())) {
      return absl::FailedPreconditionError(absl::StrCat("process ", pid_, " still runs"));
    }
    // Look first (WNOWAIT) so the pid, and with it the group id, stays ours while the rest of
    // the group is killed.
    siginfo_t info = {};
    if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) {
      return absl::NotFoundError(absl::StrCat("process ", pid_, " was reaped elsewhere"));
    }
    if (kill_group) ::kill(-pid_, SIGKILL);
    while (::waitid(P_PID, pid_, &info, WEXITED) != 0 && errno == EINTR) {
    }
    status_ = WaitStatusOf(info);
    return *status_;
  }

  UniqueFd TakeStdout() override { return std::move(stdout_); }
  UniqueFd TakeStderr() override { return std::move(stderr_); }
  void Release() override { released_ = true; }

  void SetPipes(UniqueFd out, UniqueFd err) {
    stdout_ = std::move(out);
    stderr_ = std::move(err);
  }

 private:
  const pid_t pid_;
  const uint64_t start_ticks_;
  const UniqueFd pidfd_;
  const bool started_;
  const bool is_child_;
  const bool group_;
  bool released_ = false;
  std::optional<int> status_;
  UniqueFd stdout_;
  UniqueFd stderr_;
};

// The descriptors a stream of the child is given: `child` to dup2 onto it, `parent` the read
// end kept for OutputTo::kPipe.
struct Stream {
  UniqueFd child;
  UniqueFd parent;
};

absl::StatusOr<Stream> OpenStream(OutputTo to, const std::string& path) {
  Stream stream;
  switch (to) {
    case OutputTo::kInherit:
    case OutputTo::kStdout:
      return stream;
    case OutputTo::kNull:
      stream.child.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
      if (!stream.child.valid()) return ErrnoStatus("open /dev/null");
      return stream;
    case OutputTo::kFile:
      if (path.empty()) {
        return absl::InvalidArgumentError("output goes to a file but output_path is empty");
      }
      stream.child.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
      if (!stream.child.valid()) return ErrnoStatus(absl::StrCat("open ", path));
      return stream;
    case OutputTo::kPipe: {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2");
      stream.parent.reset(fds[0]);
      stream.child.reset(fds[1]);
      return stream;
    }
  }
  return stream;
}

absl::StatusOr<std::unique_ptr<RealChild>> StartChild(const SpawnOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("cannot start a process: empty argv");
  OutputTo out_to = options.stdout_to;
  OutputTo err_to = options.stderr_to;
  if (!options.output_path.empty()) {
    if (out_to == OutputTo::kInherit) out_to = OutputTo::kFile;
    if (err_to == OutputTo::kInherit) err_to = OutputTo::kFile;
  }
  if (out_to == OutputTo::kStdout) {
    return absl::InvalidArgumentError("stdout cannot go to stdout; use it for stderr only");
  }
  // Everything the child needs is prepared before fork(): it makes only async-signal-safe calls.
  std::vector<std::string> env = MergedEnvironment(options.env);
  std::vector<char*> argv;
  for (const std::string& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<struct rlimit> limits;
  for (const ResourceLimit& l : options.limits) limits.push_back({l.soft, l.hard});
  const char* program = options.program.empty() ? options.argv[0].c_str() : options.program.c_str();

  ASSIGN_OR_RETURN(Stream out, OpenStream(out_to, options.output_path));
  ASSIGN_OR_RETURN(Stream err, OpenStream(err_to, options.output_path));
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) return ErrnoStatus("open /dev/null");
  int report_fds[2];
  if (::pipe2(report_fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2");
  UniqueFd report_read(report_fds[0]);
  UniqueFd report_write(report_fds[1]);
  const int out_fd = out.child.get();
  const int err_fd = err_to == OutputTo::kStdout ? out_fd : err.child.get();
  const int report = report_write.get();
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    // Nothing of the parent's (an agent's listening sockets above all) may stay open in the
    // child, or a shard would hold the agent's port after the agent is gone.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (options.new_session && ::setsid() < 0) ChildFail(report, kSetsid);
    if (options.die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) ChildFail(report, kDeathSignal);
      if (::getppid() != parent) ::_exit(0);  // the parent is already gone
    }
    for (size_t i = 0; i < limits.size(); ++i) {
      if (::setrlimit(options.limits[i].resource, &limits[i]) != 0) {
        ChildFail(report, kLimit, static_cast<int>(i));
      }
    }
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ChildFail(report, kCwd);
    if (::dup2(devnull.get(), STDIN_FILENO) < 0) ChildFail(report, kOutput);
    if (out_fd >= 0 && ::dup2(out_fd, STDOUT_FILENO) < 0) ChildFail(report, kOutput);
    if (err_fd >= 0 && ::dup2(err_fd, STDERR_FILENO) < 0) ChildFail(report, kOutput);
    // Undo signal dispositions and masks of the parent (`fleet up` ignores SIGINT while it
    // stops; the agent blocks signals in threads).
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(program, argv.data(), envp.data());
    ChildFail(report, kExec);
  }
  report_write.reset();
  out.child.reset();
  err.child.reset();
  ChildReport child = {};
  ssize_t n;
  do {
    n = ::read(report_read.get(), &child, sizeof child);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof child) {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    switch (child.stage) {
      case kLimit:
        return LimitError(options, options.limits[child.index], child.err);
      case kCwd:
        return ErrnoStatus(absl::StrCat("start ", program, ": chdir ", options.cwd), child.err);
      case kExec:
        return ErrnoStatus(absl::StrCat("start ", program), child.err);
      default:
        return ErrnoStatus(absl::StrCat("start ", program, " (stage ", child.stage, ")"),
                           child.err);
    }
  }
  // The child is ours and unreaped, so the pid cannot name anything else yet.
  absl::StatusOr<UniqueFd> pidfd = PidfdOpen(pid);
  if (!pidfd.ok()) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return pidfd.status();
  }
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(pid);
  auto handle =
      std::make_unique<RealChild>(pid, ticks.value_or(0), *std::move(pidfd),
                                  /*started=*/true, /*is_child=*/true, options.new_session);
  handle->SetPipes(std::move(out.parent), std::move(err.parent));
  return handle;
}

}  // namespace

bool RunResult::ok() const { return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0; }

std::string FormatMemlock(uint64_t bytes) {
  if (bytes == RLIM_INFINITY || bytes == UINT64_MAX) return "unlimited";
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return absl::StrCat(bytes >> 30, " GiB");
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return absl::StrCat(bytes >> 20, " MiB");
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " bytes");
}

absl::Status StopChild(ChildProcess& child, absl::Duration grace, bool group,
                       absl::Duration kill_wait) {
  if (child.WaitForExit(absl::ZeroDuration())) return absl::OkStatus();
  // While the process has not ended its pid (and group id) still name it.
  if (group) {
    child.SignalGroup(SIGTERM).IgnoreError();
  } else {
    child.Signal(SIGTERM).IgnoreError();
  }
  if (child.WaitForExit(grace)) return absl::OkStatus();
  if (group) {
    child.SignalGroup(SIGKILL).IgnoreError();
  } else {
    child.Signal(SIGKILL).IgnoreError();
  }
  if (child.WaitForExit(kill_wait)) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      "process ", child.pid(), " still runs ", absl::FormatDuration(kill_wait), " after SIGKILL"));
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    return absl::StrCat("killed by signal ", sig, " (", ::strsignal(sig), ")");
  }
  return absl::StrCat("wait status ", wait_status);
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ProcessRunnerImpl::Start(
    const SpawnOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<RealChild> child, StartChild(options));
  return child;
}

absl::StatusOr<RunResult> ProcessRunnerImpl::Run(const SpawnOptions& options,
                                                 absl::Duration timeout) {
  SpawnOptions captured = options;
  captured.output_path.clear();
  captured.stdout_to = OutputTo::kPipe;
  if (captured.stderr_to != OutputTo::kStdout) captured.stderr_to = OutputTo::kPipe;
  ASSIGN_OR_RETURN(std::unique_ptr<RealChild> child, StartChild(captured));
  RunResult result;
  UniqueFd out = child->TakeStdout();
  UniqueFd err = child->TakeStderr();
  struct pollfd fds[2] = {{.fd = out.get(), .events = POLLIN, .revents = 0},
                          {.fd = err.get(), .events = POLLIN, .revents = 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = err.valid() ? 2 : 1;
  absl::Time deadline = absl::Now() + timeout;
  while (open_fds > 0) {
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) {
      // The destructor kills (the group of a new_session command) and reaps.
      return absl::DeadlineExceededError(absl::StrCat(
          absl::StrJoin(options.argv, " "), " gave no answer in ", absl::FormatDuration(timeout)));
    }
    int r = ::poll(fds, 2, ms);
    if (r <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  if (!child->WaitForExit(deadline - absl::Now())) {
    return absl::DeadlineExceededError(absl::StrCat(absl::StrJoin(options.argv, " "),
                                                    " closed its output but did not exit in ",
                                                    absl::FormatDuration(timeout)));
  }
  ASSIGN_OR_RETURN(result.wait_status, child->Reap(/*kill_group=*/false));
  return result;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ProcessRunnerImpl::Attach(pid_t pid,
                                                                        uint64_t start_ticks) {
  if (pid <= 0) return absl::NotFoundError("no pid recorded");
  ASSIGN_OR_RETURN(UniqueFd pidfd, PidfdOpen(pid));
  // Checked after pidfd_open: if the pid is still the process now, the pidfd names it for good,
  // even if the number is reused later.
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  if (!stat.ok() || stat->start_ticks != start_ticks || stat->state == 'Z') {
    return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone or now names another process"));
  }
  return std::make_unique<RealChild>(pid, start_ticks, std::move(pidfd), /*started=*/false,
                                     /*is_child=*/stat->parent == ::getpid(), /*group=*/false);
}

ProcessRunner* DefaultProcessRunner() {
  static ProcessRunnerImpl* const runner = new ProcessRunnerImpl();
  return runner;
}

}  // namespace fleet
