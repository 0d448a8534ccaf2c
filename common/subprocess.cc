// Child processes as RAII values (subprocess.h).
#include "common/subprocess.h"

#include <signal.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/process/process_runner_impl.h"
#include "common/status_macros.h"

namespace fleet {

absl::StatusOr<Process> Process::Start(const ProcessOptions& options, ProcessRunner* runner) {
  if (runner == nullptr) runner = DefaultProcessRunner();
  ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child, runner->Start(options));
  return Process(std::move(child));
}

bool Process::Running() { return child_ != nullptr && !child_->WaitForExit(absl::ZeroDuration()); }

absl::Status Process::Signal(int signo) {
  if (child_ == nullptr) return absl::FailedPreconditionError("no process");
  return child_->Signal(signo);
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  if (child_ == nullptr) return absl::FailedPreconditionError("no process");
  if (!child_->WaitForExit(timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "process ", child_->pid(), " still running after ", absl::FormatDuration(timeout)));
  }
  return child_->Reap(/*kill_group=*/false);
}

absl::StatusOr<int> Process::Stop(absl::Duration grace) {
  if (child_ == nullptr) return absl::FailedPreconditionError("no process");
  RETURN_IF_ERROR(StopChild(*child_, grace, /*group=*/false));
  return child_->Reap(/*kill_group=*/false);
}

void Process::Release() {
  if (child_ != nullptr) child_->Release();
  child_.reset();
}

absl::Status StopProcess(pid_t pid, uint64_t start_ticks, absl::Duration grace,
                         ProcessRunner* runner) {
  if (runner == nullptr) runner = DefaultProcessRunner();
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = runner->Attach(pid, start_ticks);
  if (absl::IsNotFound(process.status())) return absl::OkStatus();
  RETURN_IF_ERROR(process.status());
  return StopChild(**process, grace, /*group=*/false, /*kill_wait=*/absl::Seconds(1));
}

}  // namespace fleet
