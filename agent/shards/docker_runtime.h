// Shards as containers of the node's Docker engine, driven through the docker CLI (started by
// the process runner, so tests may put a fake there):
// `docker image inspect` before a start, `docker run --detach` (launch/docker_run.h renders
// it), `docker wait NAME` as a child process whose pidfd tells the Supervisor's monitor the
// container ended (event driven, one process per shard, instead of an inspect every 200 ms),
// `docker logs --follow NAME` appending to the shard's log file, and `docker stop -t GRACE`
// then `docker rm -f` to stop. Re-adoption finds the container by its fleet.* labels.
// The shard's environment goes to `docker run` as a 0600 --env-file (engine::EnvFilePath),
// never as `-e NAME=VALUE` on a command line any user can read in `ps`; docker reads the file
// only while `docker run` creates the container, so it is deleted as soon as that returns.
#pragma once

#include <memory>
#include <string>

#include "agent/shards/shard_runtime.h"
#include "common/process/process_runner.h"
#include "launch/docker_run.h"

namespace fleet::agent {

struct DockerRuntimeOptions {
  std::string docker = "docker";  // the CLI, looked up in PATH
  std::string node_name;          // for messages
  std::string state_dir;          // env files go to STATE_DIR/shards, beside the records
  std::string cache_root;         // STATE_DIR/cache; a group's caches live in cache_root/GROUP
  std::string home;               // the agent's $HOME: a mount source "~/x" is HOME/x
  // Runs the docker CLI; DefaultProcessRunner() when null. Must outlive the runtime.
  ProcessRunner* runner = nullptr;
};

class DockerRuntime final : public ShardRuntime {
 public:
  explicit DockerRuntime(DockerRuntimeOptions options);

  // Also InvalidArgument when the environment cannot go through an env file (RenderEnvFile),
  // or a mount source under "~" when the agent has no home to put it in.
  absl::Status Check(const v1::ShardSpec& spec) override;
  void PrepareRecord(ShardRecord& record) override;
  absl::StatusOr<std::unique_ptr<RunningShard>> Launch(const v1::ShardSpec& spec,
                                                       const std::string& log_path) override;
  absl::StatusOr<std::unique_ptr<RunningShard>> Adopt(const ShardRecord& record,
                                                      const std::string& log_path) override;

  // `docker image inspect`: FailedPrecondition "no Docker engine on NODE: ..." when the daemon
  // cannot be reached, "image X not present on NODE: docker pull X ..." when it lacks the image.
  absl::StatusOr<engine::ImageInfo> InspectImage(const std::string& image);

 private:
  const DockerRuntimeOptions options_;
  ProcessRunner* const runner_;
};

}  // namespace fleet::agent
