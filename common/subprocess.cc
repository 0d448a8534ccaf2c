// Child processes as RAII handles.
#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/status_macros.h"

extern char** environ;

namespace fleet {
namespace {

// Everything the child needs is prepared before fork(), so the child only makes
// async-signal-safe calls.
struct ExecPlan {
  std::vector<std::string> env_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
};

ExecPlan MakePlan(const ProcessOptions& options) {
  ExecPlan plan;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    absl::string_view key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& extra : options.env) {
      if (absl::string_view(extra).substr(0, extra.find('=')) == key) replaced = true;
    }
    if (!replaced) plan.env_storage.emplace_back(entry);
  }
  for (const std::string& extra : options.env) plan.env_storage.push_back(extra);
  for (const std::string& a : options.argv) plan.argv.push_back(const_cast<char*>(a.c_str()));
  plan.argv.push_back(nullptr);
  for (std::string& e : plan.env_storage) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);
  return plan;
}

[[noreturn]] void ChildFail(int report_fd) {
  int err = errno;
  ssize_t ignored = ::write(report_fd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

}  // namespace

absl::StatusOr<Process> Process::Start(const ProcessOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("empty argv");
  ExecPlan plan = MakePlan(options);
  int out_fd = -1;
  if (!options.output_path.empty()) {
    out_fd = ::open(options.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) return ErrnoStatus(absl::StrCat("open ", options.output_path));
  }
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    if (out_fd >= 0) ::close(out_fd);
    return ErrnoStatus("pipe2");
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    absl::Status st = ErrnoStatus("fork");
    ::close(report[0]);
    ::close(report[1]);
    if (out_fd >= 0) ::close(out_fd);
    return st;
  }
  if (pid == 0) {
    ::close(report[0]);
    if (options.new_session && ::setsid() < 0) ChildFail(report[1]);
    if (options.die_with_parent) {
      if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) ChildFail(report[1]);
      if (::getppid() != parent) ::_exit(0);  // parent already gone
    }
    if (out_fd >= 0) {
      if (::dup2(out_fd, STDOUT_FILENO) < 0 || ::dup2(out_fd, STDERR_FILENO) < 0) {
        ChildFail(report[1]);
      }
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    // Undo signal dispositions a parent may have set (fleet up ignores SIGINT while stopping).
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) ::sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(plan.argv[0], plan.argv.data(), plan.envp.data());
    ChildFail(report[1]);
  }
  ::close(report[1]);
  if (out_fd >= 0) ::close(out_fd);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  Process process(pid);
  if (n == sizeof child_errno) {
    process.Reap(/*block=*/true);
    return ErrnoStatus(absl::StrCat("start ", options.argv[0]), child_errno);
  }
  return process;
}

Process::Process(Process&& other) noexcept : pid_(other.pid_), wait_status_(other.wait_status_) {
  other.pid_ = -1;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !wait_status_) {
      ::kill(pid_, SIGKILL);
      Reap(true);
    }
    pid_ = other.pid_;
    wait_status_ = other.wait_status_;
    other.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0 && !wait_status_) {
    ::kill(pid_, SIGKILL);
    Reap(true);
  }
}

bool Process::Reap(bool block) {
  if (wait_status_) return true;
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    wait_status_ = status;
    return true;
  }
  return false;
}

bool Process::Running() { return pid_ > 0 && !Reap(false); }

absl::Status Process::Signal(int signo) {
  if (pid_ <= 0 || wait_status_) return absl::FailedPreconditionError("process already exited");
  if (::kill(pid_, signo) != 0) return ErrnoStatus(absl::StrCat("kill ", pid_));
  return absl::OkStatus();
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  if (pid_ <= 0 && !wait_status_) return absl::FailedPreconditionError("no process");
  absl::Time deadline = absl::Now() + timeout;
  while (!Reap(false)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return *wait_status_;
}

absl::StatusOr<int> Process::Stop(absl::Duration grace) {
  if (wait_status_) return *wait_status_;
  if (!Signal(SIGTERM).ok() && Reap(false)) return *wait_status_;
  absl::StatusOr<int> status = Wait(grace);
  if (status.ok()) return status;
  ::kill(pid_, SIGKILL);
  return Wait(absl::Seconds(5));
}

absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid) {
  ASSIGN_OR_RETURN(std::string stat, ReadFileToString(absl::StrCat("/proc/", pid, "/stat")));
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return absl::InternalError("malformed /proc stat");
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(close + 2), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); start time is field 22.
  uint64_t ticks = 0;
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &ticks)) {
    return absl::InternalError(absl::StrCat("malformed /proc/", pid, "/stat"));
  }
  return ticks;
}

absl::Status StopProcess(pid_t pid, uint64_t start_ticks, absl::Duration grace) {
  auto same = [&] {
    absl::StatusOr<uint64_t> now = ProcessStartTicks(pid);
    if (!now.ok() || *now != start_ticks) return false;
    // A zombie has exited; only its parent's wait() is missing.
    absl::StatusOr<std::string> stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
    return !(stat.ok() && stat->find(") Z ") != std::string::npos);
  };
  if (!same()) return absl::OkStatus();
  ::kill(pid, SIGTERM);
  for (absl::Time deadline = absl::Now() + grace; absl::Now() < deadline;) {
    if (!same()) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  for (absl::Time deadline = absl::Now() + absl::Seconds(1); absl::Now() < deadline;) {
    if (!same()) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("process ", pid, " survived SIGKILL"));
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    return absl::StrCat("killed by signal ", sig, " (", ::strsignal(sig), ")");
  }
  return absl::StrCat("wait status ", wait_status);
}

}  // namespace fleet
