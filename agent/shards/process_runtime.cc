// Shards as child processes (process_runtime.h).
#include "agent/shards/process_runtime.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/subprocess.h"

extern char** environ;

namespace fleet::agent {
namespace {

constexpr absl::string_view kMemlockFix =
    "run the agent with LimitMEMLOCK=infinity (systemd) or raise the hard memlock limit in "
    "/etc/security/limits.conf";

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// True once `fd` (a pidfd) is readable, i.e. its process has ended, within `timeout`.
bool WaitReadable(int fd, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    int ms = static_cast<int>(
        absl::ToInt64Milliseconds(std::max(absl::ZeroDuration(), deadline - absl::Now())));
    int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Fields of /proc/PID/stat after the command name: [0] is the state, [1] the parent pid.
std::optional<std::vector<std::string>> StatFields(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return std::nullopt;
  size_t close = stat->rfind(')');
  if (close == std::string::npos || close + 2 > stat->size()) return std::nullopt;
  return absl::StrSplit(absl::string_view(*stat).substr(close + 2), ' ', absl::SkipEmpty());
}

bool HasCapability(int cap) {
  absl::StatusOr<std::string> status = ReadFileToString("/proc/self/status");
  if (!status.ok()) return false;
  for (absl::string_view line : absl::StrSplit(*status, '\n')) {
    if (!absl::ConsumePrefix(&line, "CapEff:")) continue;
    uint64_t caps = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line), &caps)) return false;
    return (caps >> cap) & 1;
  }
  return false;
}

// The environment of a shard: the agent's own, then spec.env in order (a later entry of the
// same name wins), as "NAME=VALUE" strings.
std::vector<std::string> ShardEnvironment(const v1::ShardSpec& spec) {
  std::vector<std::string> env;
  absl::flat_hash_map<std::string, size_t> index;
  auto set = [&](absl::string_view name, absl::string_view entry) {
    auto [it, inserted] = index.try_emplace(std::string(name), env.size());
    if (inserted) {
      env.emplace_back(entry);
    } else {
      env[it->second] = std::string(entry);
    }
  };
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    set(entry.substr(0, entry.find('=')), entry);
  }
  for (const v1::EnvVar& var : spec.env())
    set(var.name(), absl::StrCat(var.name(), "=", var.value()));
  return env;
}

std::string PathOf(const std::vector<std::string>& env) {
  for (const std::string& entry : env) {
    if (absl::StartsWith(entry, "PATH=")) return entry.substr(5);
  }
  return "";
}

// What the child must set, decided before fork() so the child makes only async-signal-safe
// calls.
struct MemlockPlan {
  struct rlimit limit = {};
  std::vector<std::string> warnings;
};

std::string MemlockDenied(const std::string& node, rlim_t wanted, rlim_t hard) {
  return absl::StrCat("memlock ", FormatMemlock(wanted), " cannot be granted on ", node,
                      ": the agent's hard RLIMIT_MEMLOCK is ", FormatMemlock(hard),
                      " and it may not raise it; ", kMemlockFix);
}

absl::StatusOr<MemlockPlan> PlanMemlock(const v1::ShardSpec& spec, const std::string& node) {
  struct rlimit current = {};
  RETURN_IF_ERRNO(::getrlimit(RLIMIT_MEMLOCK, &current), "getrlimit RLIMIT_MEMLOCK");
  MemlockPlan plan;
  if (spec.has_memlock_bytes()) {
    rlim_t wanted = spec.memlock_bytes() == UINT64_MAX ? RLIM_INFINITY : spec.memlock_bytes();
    if (wanted > current.rlim_max && !HasCapability(CAP_SYS_RESOURCE)) {
      return absl::FailedPreconditionError(MemlockDenied(node, wanted, current.rlim_max));
    }
    plan.limit = {wanted, wanted};
    return plan;
  }
  plan.limit = {current.rlim_max, current.rlim_max};
  if (current.rlim_max != RLIM_INFINITY) {
    plan.warnings.push_back(absl::StrCat("memlock kept at ", FormatMemlock(current.rlim_max),
                                         ": the agent's hard limit on ", node, "; ", kMemlockFix));
  }
  return plan;
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

// Stages of the child between fork and exec, reported through a pipe when one fails.
enum ChildStage : int { kSetsid = 1, kMemlock = 2, kOutput = 3, kExec = 4 };
struct ChildReport {
  int stage;
  int err;
};

[[noreturn]] void ChildFail(int fd, ChildStage stage) {
  ChildReport report = {stage, errno};
  ssize_t ignored = ::write(fd, &report, sizeof report);
  (void)ignored;
  ::_exit(127);
}

class ProcessShard final : public RunningShard {
 public:
  // `child`: the agent's own child, so it can be reaped for its exit status.
  ProcessShard(pid_t pid, uint64_t start_ticks, int pidfd, bool child,
               std::vector<std::string> warnings)
      : pid_(pid),
        start_ticks_(start_ticks),
        pidfd_(pidfd),
        child_(child),
        warnings_(std::move(warnings)) {}
  ~ProcessShard() override { ::close(pidfd_); }

  int exit_fd() const override { return pidfd_; }

  std::optional<std::string> OnExitReady() override {
    absl::MutexLock lock(&mu_);
    if (exit_) return exit_;
    if (!WaitReadable(pidfd_, absl::ZeroDuration())) return std::nullopt;
    if (child_) {
      // Look first (WNOWAIT) so the pid, and with it the group id, stays ours while the rest of
      // the group is killed: engines' worker processes must not outlive their leader.
      siginfo_t info = {};
      if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) {
        exit_ = "exited (status lost: reaped elsewhere)";
        return exit_;
      }
      ::kill(-pid_, SIGKILL);
      ::waitid(P_PID, pid_, &info, WEXITED);
      exit_ = DescribeWaitStatus(WaitStatusOf(info));
    } else {
      // The group may still hold the leader's workers; its id cannot be reused while it does.
      ::kill(-pid_, SIGKILL);
      exit_ = "exited (status unknown: started by a previous agent)";
    }
    return exit_;
  }

  absl::Status Stop(absl::Duration grace) override {
    {
      absl::MutexLock lock(&mu_);
      // While the pidfd is not readable the process lives, so pid_ (and the group id) still
      // name it and not a process that reused the number.
      if (exit_ || WaitReadable(pidfd_, absl::ZeroDuration())) return absl::OkStatus();
      ::kill(-pid_, SIGTERM);
    }
    if (WaitReadable(pidfd_, grace)) return absl::OkStatus();
    {
      absl::MutexLock lock(&mu_);
      if (!exit_) ::kill(-pid_, SIGKILL);
    }
    if (WaitReadable(pidfd_, absl::Seconds(5))) return absl::OkStatus();
    return absl::DeadlineExceededError(
        absl::StrCat("shard pid ", pid_, " still runs 5 s after SIGKILL"));
  }

  void FillRecord(ShardRecord& record) const override {
    record.pid = pid_;
    record.start_ticks = start_ticks_;
  }
  pid_t pid() const override { return pid_; }
  std::string container() const override { return ""; }
  std::vector<std::string> warnings() const override { return warnings_; }

 private:
  const pid_t pid_;
  const uint64_t start_ticks_;
  const int pidfd_;
  const bool child_;
  const std::vector<std::string> warnings_;
  absl::Mutex mu_;
  std::optional<std::string> exit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string FormatMemlock(uint64_t bytes) {
  if (bytes == RLIM_INFINITY || bytes == UINT64_MAX) return "unlimited";
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return absl::StrCat(bytes >> 30, " GiB");
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return absl::StrCat(bytes >> 20, " MiB");
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " bytes");
}

absl::StatusOr<std::string> ResolveProgram(const std::string& program,
                                           const std::string& path_env) {
  if (program.empty()) return absl::InvalidArgumentError("the shard's argv is empty");
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) == 0) return program;
    return absl::FailedPreconditionError(
        absl::StrCat("program ", program, " is missing or not executable"));
  }
  for (absl::string_view dir : absl::StrSplit(path_env, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string agent_dir;
  if (n > 0) {
    agent_dir = std::string(self, static_cast<size_t>(n));
    agent_dir.resize(agent_dir.rfind('/'));
    std::string candidate = absl::StrCat(agent_dir, "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "program ", program, " not found in PATH (", path_env, ") nor beside the agent (", agent_dir,
      "): install it or give its full path in the recipe's command"));
}

absl::Status ProcessRuntime::Check(const v1::ShardSpec& spec) {
  if (spec.argv().empty()) return absl::InvalidArgumentError("the shard's argv is empty");
  RETURN_IF_ERROR(ResolveProgram(spec.argv(0), PathOf(ShardEnvironment(spec))).status());
  return PlanMemlock(spec, node_name_).status();
}

absl::StatusOr<std::unique_ptr<RunningShard>> ProcessRuntime::Launch(const v1::ShardSpec& spec,
                                                                     const std::string& log_path) {
  std::vector<std::string> env = ShardEnvironment(spec);
  if (spec.argv().empty()) return absl::InvalidArgumentError("the shard's argv is empty");
  ASSIGN_OR_RETURN(std::string program, ResolveProgram(spec.argv(0), PathOf(env)));
  ASSIGN_OR_RETURN(MemlockPlan memlock, PlanMemlock(spec, node_name_));
  std::vector<std::string> argv_storage(spec.argv().begin(), spec.argv().end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return ErrnoStatus(absl::StrCat("open ", log_path));
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return ErrnoStatus("pipe2");
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    absl::Status st = ErrnoStatus("fork");
    ::close(report[0]);
    ::close(report[1]);
    ::close(log_fd);
    return st;
  }
  if (pid == 0) {
    // Nothing of the agent's (its listening sockets above all) may stay open in the shard, or
    // a shard would hold the agent's port after the agent is gone.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (::setsid() < 0) ChildFail(report[1], kSetsid);
    if (::setrlimit(RLIMIT_MEMLOCK, &memlock.limit) != 0) ChildFail(report[1], kMemlock);
    if (::dup2(log_fd, STDOUT_FILENO) < 0 || ::dup2(log_fd, STDERR_FILENO) < 0) {
      ChildFail(report[1], kOutput);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(program.c_str(), argv.data(), envp.data());
    ChildFail(report[1], kExec);
  }
  ::close(report[1]);
  ::close(log_fd);
  ChildReport child = {};
  ssize_t n;
  do {
    n = ::read(report[0], &child, sizeof child);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == sizeof child) {
    ::waitpid(pid, nullptr, 0);
    switch (child.stage) {
      case kMemlock:
        return absl::FailedPreconditionError(MemlockDenied(node_name_, memlock.limit.rlim_max, [] {
          struct rlimit r = {};
          ::getrlimit(RLIMIT_MEMLOCK, &r);
          return r.rlim_max;
        }()));
      case kExec:
        return ErrnoStatus(absl::StrCat("exec ", program), child.err);
      default:
        return ErrnoStatus(absl::StrCat("start ", program, " (stage ", child.stage, ")"),
                           child.err);
    }
  }
  int pidfd = PidfdOpen(pid);
  if (pidfd < 0) {
    absl::Status st = ErrnoStatus("pidfd_open (needs Linux 5.3 or later)");
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return st;
  }
  // The start time does not change across exec, and the child cannot be reaped before we do.
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(pid);
  return std::make_unique<ProcessShard>(pid, ticks.value_or(0), pidfd, /*child=*/true,
                                        std::move(memlock.warnings));
}

absl::StatusOr<std::unique_ptr<RunningShard>> ProcessRuntime::Adopt(const ShardRecord& record,
                                                                    const std::string&) {
  if (record.pid <= 0) return absl::NotFoundError("no pid recorded");
  int pidfd = PidfdOpen(record.pid);
  if (pidfd < 0) return absl::NotFoundError(absl::StrCat("pid ", record.pid, " is gone"));
  // Checked after pidfd_open: if the pid is still the shard now, the pidfd names the shard for
  // good, even if the number is reused later.
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(record.pid);
  std::optional<std::vector<std::string>> fields = StatFields(record.pid);
  if (!ticks.ok() || *ticks != record.start_ticks || !fields || fields->size() < 2 ||
      (*fields)[0] == "Z") {
    ::close(pidfd);
    return absl::NotFoundError(
        absl::StrCat("pid ", record.pid, " is gone or now names another process"));
  }
  pid_t parent = 0;
  bool child = absl::SimpleAtoi((*fields)[1], &parent) && parent == ::getpid();
  return std::make_unique<ProcessShard>(record.pid, record.start_ticks, pidfd, child,
                                        std::vector<std::string>{});
}

}  // namespace fleet::agent
