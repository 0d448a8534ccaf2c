// The Supervisor (supervisor.h) over injected runtimes, clock, TCP dialer and readiness
// probe, so its policy is tested with fakes. Supervisor::Create (supervisor.cc) wires the real
// ones.
//
// Threads: one monitor thread polls every running shard's exit fd (a pidfd, or the pidfd of
// `docker wait`) together with a wake-up eventfd, reports ends at once, and every 100 ms
// reads new log output into the in-memory tails and rotates full log files. Each shard has a
// lifecycle thread that stops the older generations it replaces, waits for `wait_for_tcp`,
// launches it and probes its readiness; it ends once the shard is ready, ended or stopped.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/shards/log_files.h"
#include "agent/shards/readiness.h"
#include "agent/shards/shard_runtime.h"
#include "agent/shards/supervisor.h"
#include "common/clock.h"

namespace fleet::agent {

struct SupervisorDeps {
  Clock* clock = nullptr;  // status times and the wait_for_tcp deadline
  std::unique_ptr<ShardRuntime> process_runtime;
  std::unique_ptr<ShardRuntime> docker_runtime;
  // One readiness attempt (ProbeReadiness in production).
  std::function<absl::Status(const v1::ReadinessProbe&)> probe;
  // After Ready, one look at the head for its HeadWatch, and a one-token completion bounded by
  // the duration (LookAtHead and OneTokenCompletion in production); unset: heads are not
  // watched.
  std::function<HeadLook(const v1::ReadinessProbe&)> look_at_head;
  std::function<absl::Status(const v1::ReadinessProbe&, absl::Duration)> one_token;
  // One TCP connect to "HOST:PORT" bounded by the timeout (DialTcp in production).
  std::function<absl::Status(const std::string& host_port, absl::Duration timeout)> dial;
};

// A TCP connect that gives up after `timeout`. Unavailable naming the address and the error.
absl::Status DialTcp(const std::string& host_port, absl::Duration timeout);

class SupervisorImpl final : public Supervisor {
 public:
  static absl::StatusOr<std::unique_ptr<SupervisorImpl>> Create(SupervisorOptions options,
                                                                SupervisorDeps deps);
  // Joins every thread within a bounded time and leaves the shards running.
  ~SupervisorImpl() override;

  absl::StatusOr<v1::ShardStatus> Start(const v1::ShardSpec& spec) override;
  absl::StatusOr<std::vector<v1::ShardStatus>> Stop(absl::string_view group,
                                                    uint64_t up_to_generation) override;
  std::vector<v1::ShardStatus> List() override;
  absl::StatusOr<LogChunk> ReadLog(absl::string_view group, uint32_t rank,
                                   std::optional<uint64_t> offset, int tail_lines,
                                   size_t max_bytes) override;
  void SetOnChange(absl::AnyInvocable<void()> on_change) override;

 private:
  struct Entry;

  SupervisorImpl(SupervisorOptions options, SupervisorDeps deps, int wake_fd);
  absl::Status Adopt();
  ShardRuntime* RuntimeFor(const v1::ShardSpec& spec);
  std::string LogPath(const v1::ShardSpec& spec) const;
  // spec.files written into spec.working_dir (process shards that carry files).
  absl::Status WriteShardFiles(const v1::ShardSpec& spec) const;
  ShardLogOptions LogOptions(const v1::ShardSpec& spec) const;
  void WriteRecord(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void Lifecycle(std::shared_ptr<Entry> entry, std::vector<std::shared_ptr<Entry>> older,
                 bool launch);
  bool WaitForTcp(Entry& entry, const std::string& address);
  // True once the shard is Ready; false when it ended or is being stopped first.
  bool ProbeUntilReady(Entry& entry);
  // After Ready, until the shard ends or is stopped: the head's HeadWatch; stops the shard,
  // with the reason as its message, when the head stopped working.
  void WatchHead(Entry& entry);
  // Stops one shard and waits until it is gone; concurrent callers wait for the first.
  void StopEntry(const std::shared_ptr<Entry>& entry);
  void Forget(const std::shared_ptr<Entry>& entry);
  // Waits up to `timeout` unless the entry is being stopped. True when it is.
  bool SleepUnlessStopped(Entry& entry, absl::Duration timeout);

  void SetState(Entry& entry, v1::ShardState state, absl::string_view message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify();
  void Wake();
  void Monitor();

  const SupervisorOptions options_;
  SupervisorDeps deps_;
  const int wake_fd_;  // eventfd: new shard to watch, or shutdown

  absl::Mutex notify_mu_;
  absl::AnyInvocable<void()> on_change_ ABSL_GUARDED_BY(notify_mu_);

  absl::Mutex mu_;
  std::vector<std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;          // lifecycle threads: return
  bool monitor_shutdown_ ABSL_GUARDED_BY(mu_) = false;  // set once they all have

  std::thread monitor_;
};

}  // namespace fleet::agent
