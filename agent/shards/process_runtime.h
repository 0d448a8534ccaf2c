// Shards as child processes started through the process runner: in their own session (so their
// own process group), RLIMIT_MEMLOCK set, stdout and stderr appended to the shard's log file,
// exit seen at once through a pidfd, stop as SIGTERM to the group, a grace period, then SIGKILL.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/shards/shard_runtime.h"
#include "common/process/process_runner.h"

namespace fleet::agent {

class ProcessRuntime final : public ShardRuntime {
 public:
  // `node_name` appears in messages ("... on spark-1"). `runner` starts and attaches to the
  // shards' processes (DefaultProcessRunner() when null); it must outlive the runtime.
  explicit ProcessRuntime(std::string node_name, ProcessRunner* runner = nullptr);

  absl::Status Check(const v1::ShardSpec& spec) override;
  void PrepareRecord(ShardRecord&) override {}
  absl::StatusOr<std::unique_ptr<RunningShard>> Launch(const v1::ShardSpec& spec,
                                                       const std::string& log_path) override;
  absl::StatusOr<std::unique_ptr<RunningShard>> Adopt(const ShardRecord& record,
                                                      const std::string& log_path) override;

 private:
  const std::string node_name_;
  ProcessRunner* const runner_;
};

// The program a shard's argv[0] names: as is when it holds a '/', else the first match in
// `path_env` (a PATH value), else the directory of the agent's own executable, so engines
// shipped beside `fleet` are found. FailedPrecondition naming the program and where it looked.
absl::StatusOr<std::string> ResolveProgram(const std::string& program, const std::string& path_env);

}  // namespace fleet::agent
