// The seam between the Supervisor's policy (generations, states, records) and the ways a shard
// runs: a child process (process_runtime.h) or a container (docker_runtime.h). Tests put a
// fake here (tests/unit/fake_shard_runtime.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/shards/shard_record.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

// One launched (or re-adopted) shard. Destroying it releases the agent's handles (pidfd,
// helper processes) and leaves the shard itself running, so the next agent can re-adopt it.
class RunningShard {
 public:
  virtual ~RunningShard() = default;

  // Becomes readable (POLLIN) when the shard may have ended; the Supervisor's monitor thread
  // polls it and then calls OnExitReady(). May change after OnExitReady() returns nullopt.
  virtual int exit_fd() const = 0;
  // The exit description ("exited with status 3") once the shard has ended, nullopt when it
  // still runs (a spurious wake-up, or a helper that had to be restarted).
  virtual std::optional<std::string> OnExitReady() = 0;
  // Stops the shard (SIGTERM or `docker stop`, `grace`, then SIGKILL) and returns once it is
  // gone; a shard that already ended returns OK at once. Safe to call while the monitor thread
  // polls exit_fd(). Does not reap: OnExitReady() reports the end as usual.
  virtual absl::Status Stop(absl::Duration grace) = 0;
  // What the record must hold to re-adopt this shard (pid, start ticks, container).
  virtual void FillRecord(ShardRecord& record) const = 0;

  virtual pid_t pid() const = 0;              // 0 for containers
  virtual std::string container() const = 0;  // empty for processes
  virtual std::vector<std::string> warnings() const = 0;
};

class ShardRuntime {
 public:
  virtual ~ShardRuntime() = default;

  // Quick checks that the node can run `spec` at all (program present, memlock grantable,
  // Docker engine reachable, image present), so Start() can refuse it with the fix at once.
  // FailedPrecondition names what is missing and what to do.
  virtual absl::Status Check(const v1::ShardSpec& spec) = 0;

  // Fills in what the record needs before Launch (the container name), so an agent that dies
  // during Launch still finds the shard.
  virtual void PrepareRecord(ShardRecord& record) = 0;

  // Launches the shard with stdout and stderr appended to `log_path`.
  virtual absl::StatusOr<std::unique_ptr<RunningShard>> Launch(const v1::ShardSpec& spec,
                                                               const std::string& log_path) = 0;

  // Takes over a shard a previous agent started. NotFound when it no longer runs (or the pid
  // now names another process); another error when it cannot tell.
  virtual absl::StatusOr<std::unique_ptr<RunningShard>> Adopt(const ShardRecord& record,
                                                              const std::string& log_path) = 0;
};

}  // namespace fleet::agent
