// A ProcessRunner for unit tests: no process is started. Children are FakeChild objects whose
// end the test decides (FakeProcessState::Exit); Run answers from a handler; every start, run
// and signal is recorded.
#pragma once

#include <signal.h>
#include <sys/eventfd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/process/process_runner.h"

namespace fleet {

// What a test sees of one fake child; shared with the handle the code under test holds.
class FakeProcessState {
 public:
  FakeProcessState(pid_t pid, SpawnOptions options)
      : pid_(pid), options_(std::move(options)), exit_fd_(::eventfd(0, EFD_CLOEXEC)) {}

  pid_t pid() const { return pid_; }
  const SpawnOptions& options() const { return options_; }
  int exit_fd() const { return exit_fd_.get(); }

  // Ends the process with `wait_status` (0: exited with status 0; 9: killed by SIGKILL).
  void Exit(int wait_status) {
    absl::MutexLock lock(&mu_);
    if (status_) return;
    status_ = wait_status;
    uint64_t one = 1;
    ssize_t ignored = ::write(exit_fd_.get(), &one, sizeof one);
    (void)ignored;
  }
  std::optional<int> status() const {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  // Signals sent to the process; a group signal is recorded as its negative.
  std::vector<int> signals() const {
    absl::MutexLock lock(&mu_);
    return signals_;
  }
  bool reaped() const {
    absl::MutexLock lock(&mu_);
    return reaped_;
  }
  bool released() const {
    absl::MutexLock lock(&mu_);
    return released_;
  }
  // Whether SIGTERM ends the process (SIGKILL always does).
  void set_ignores_sigterm(bool ignores) {
    absl::MutexLock lock(&mu_);
    ignores_sigterm_ = ignores;
  }

  absl::Status Deliver(int recorded, int signo) {
    bool ends;
    {
      absl::MutexLock lock(&mu_);
      // A group outlives its leader's exit (until the leader is reaped); the process does not.
      if (status_ && recorded > 0) return absl::FailedPreconditionError("the fake process ended");
      signals_.push_back(recorded);
      if (status_) return absl::OkStatus();
      ends = signo == SIGKILL || (signo == SIGTERM && !ignores_sigterm_);
    }
    if (ends) Exit(signo);
    return absl::OkStatus();
  }
  void MarkReaped() {
    absl::MutexLock lock(&mu_);
    reaped_ = true;
  }
  void MarkReleased() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }

 private:
  const pid_t pid_;
  const SpawnOptions options_;
  const UniqueFd exit_fd_;
  mutable absl::Mutex mu_;
  std::optional<int> status_ ABSL_GUARDED_BY(mu_);
  std::vector<int> signals_ ABSL_GUARDED_BY(mu_);
  bool reaped_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  bool ignores_sigterm_ ABSL_GUARDED_BY(mu_) = false;
};

class FakeChild final : public ChildProcess {
 public:
  FakeChild(std::shared_ptr<FakeProcessState> state, uint64_t start_ticks, bool is_child)
      : state_(std::move(state)), start_ticks_(start_ticks), is_child_(is_child) {}

  pid_t pid() const override { return state_->pid(); }
  uint64_t start_ticks() const override { return start_ticks_; }
  bool is_child() const override { return is_child_; }
  int exit_fd() const override { return state_->exit_fd(); }
  // Fake time: the fake process ends only when the test (or a signal) ends it, so waiting
  // returns at once with whether it has.
  bool WaitForExit(absl::Duration) override { return state_->status().has_value(); }
  absl::Status Signal(int signo) override { return state_->Deliver(signo, signo); }
  absl::Status SignalGroup(int signo) override { return state_->Deliver(-signo, signo); }
  absl::StatusOr<int> Reap(bool kill_group) override {
    std::optional<int> status = state_->status();
    if (!is_child_) return absl::NotFoundError("not a child");
    if (!status) return absl::FailedPreconditionError("the fake process still runs");
    if (kill_group) state_->Deliver(-SIGKILL, SIGKILL).IgnoreError();
    state_->MarkReaped();
    return *status;
  }
  UniqueFd TakeStdout() override { return UniqueFd(); }
  UniqueFd TakeStderr() override { return UniqueFd(); }
  void Release() override { state_->MarkReleased(); }

 private:
  const std::shared_ptr<FakeProcessState> state_;
  const uint64_t start_ticks_;
  const bool is_child_;
};

class FakeProcessRunner final : public ProcessRunner {
 public:
  // The answer of Run() for a command; exit status 0 with no output when unset.
  using RunHandler = std::function<absl::StatusOr<RunResult>(const SpawnOptions&)>;

  void set_run_handler(RunHandler handler) {
    absl::MutexLock lock(&mu_);
    run_handler_ = std::move(handler);
  }
  // The next Start() fails with `status` instead.
  void FailNextStart(absl::Status status) {
    absl::MutexLock lock(&mu_);
    start_error_ = std::move(status);
  }

  absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const SpawnOptions& options) override {
    absl::MutexLock lock(&mu_);
    if (!start_error_.ok()) return std::exchange(start_error_, absl::OkStatus());
    auto state = std::make_shared<FakeProcessState>(next_pid_++, options);
    started_.push_back(state);
    return std::make_unique<FakeChild>(state, kStartTicks + state->pid(), /*is_child=*/true);
  }

  absl::StatusOr<RunResult> Run(const SpawnOptions& options, absl::Duration) override {
    RunHandler handler;
    {
      absl::MutexLock lock(&mu_);
      runs_.push_back(options);
      handler = run_handler_;
    }
    if (handler) return handler(options);
    return RunResult{};
  }

  // Attaches to a process this runner started (by pid and start ticks) that still runs, as an
  // agent that restarted would find it.
  absl::StatusOr<std::unique_ptr<ChildProcess>> Attach(pid_t pid, uint64_t start_ticks) override {
    absl::MutexLock lock(&mu_);
    for (const auto& state : started_) {
      if (state->pid() == pid && kStartTicks + pid == start_ticks && !state->status()) {
        return std::make_unique<FakeChild>(state, start_ticks, /*is_child=*/false);
      }
    }
    return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone or now names another process"));
  }

  std::vector<std::shared_ptr<FakeProcessState>> started() const {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  std::vector<SpawnOptions> runs() const {
    absl::MutexLock lock(&mu_);
    return runs_;
  }

 private:
  static constexpr uint64_t kStartTicks = 1000;

  mutable absl::Mutex mu_;
  pid_t next_pid_ ABSL_GUARDED_BY(mu_) = 4000;
  RunHandler run_handler_ ABSL_GUARDED_BY(mu_);
  absl::Status start_error_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<FakeProcessState>> started_ ABSL_GUARDED_BY(mu_);
  std::vector<SpawnOptions> runs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet
