// The real ProcessRunner: fork + exec with everything the child needs prepared before fork
// (only async-signal-safe calls in the child), setup and exec errors reported back through a
// close-on-exec pipe, a pidfd for every child, nothing of the parent's left open in the child.
#pragma once

#include <memory>

#include "common/process/process_runner.h"

namespace fleet {

// Example:
//   ProcessRunnerImpl runner;
//   ASSIGN_OR_RETURN(RunResult r, runner.Run({.argv = {"docker", "version"}}, absl::Seconds(5)));
class ProcessRunnerImpl final : public ProcessRunner {
 public:
  absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const SpawnOptions& options) override;
  absl::StatusOr<RunResult> Run(const SpawnOptions& options, absl::Duration timeout) override;
  absl::StatusOr<std::unique_ptr<ChildProcess>> Attach(pid_t pid, uint64_t start_ticks) override;
};

// The runner of production code that is not handed one: it holds no state, so one serves all.
ProcessRunner* DefaultProcessRunner();

}  // namespace fleet
