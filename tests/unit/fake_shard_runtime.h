// A ShardRuntime whose shards are eventfds: a test ends one with Exit() and sees how the
// Supervisor reacts, without processes or Docker.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/shards/shard_runtime.h"

namespace fleet::agent {

class FakeShardRuntime final : public ShardRuntime {
 public:
  // The shared state of one fake shard, kept by the runtime after the Supervisor lets go.
  struct Shard {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    absl::Mutex mu;
    std::optional<std::string> exit ABSL_GUARDED_BY(mu);
    int stops ABSL_GUARDED_BY(mu) = 0;
    ~Shard() { ::close(fd); }
    // The shard ends on its own with this description.
    void Exit(const std::string& description) {
      absl::MutexLock lock(&mu);
      if (!exit) exit = description;
      uint64_t one = 1;
      ssize_t ignored = ::write(fd, &one, sizeof one);
      (void)ignored;
    }
    bool running() {
      absl::MutexLock lock(&mu);
      return !exit.has_value();
    }
  };

  absl::Status Check(const v1::ShardSpec&) override {
    absl::MutexLock lock(&mu_);
    return check_;
  }
  void PrepareRecord(ShardRecord& record) override { record.container = "fake"; }

  absl::StatusOr<std::unique_ptr<RunningShard>> Launch(const v1::ShardSpec& spec,
                                                       const std::string&) override {
    absl::MutexLock lock(&mu_);
    ++launches_;
    if (!launch_.ok()) return launch_;
    auto shard = std::make_shared<Shard>();
    shards_[Key(spec)] = shard;
    return std::make_unique<Handle>(shard, next_pid_++);
  }

  absl::StatusOr<std::unique_ptr<RunningShard>> Adopt(const ShardRecord& record,
                                                      const std::string&) override {
    absl::MutexLock lock(&mu_);
    auto it = shards_.find(Key(record.spec));
    if (it == shards_.end() || !it->second->running()) return absl::NotFoundError("gone");
    return std::make_unique<Handle>(it->second, record.pid);
  }

  void set_check(absl::Status st) {
    absl::MutexLock lock(&mu_);
    check_ = std::move(st);
  }
  int launches() {
    absl::MutexLock lock(&mu_);
    return launches_;
  }
  // The shard of (group, generation, rank), null when never launched.
  std::shared_ptr<Shard> shard(const std::string& group, uint64_t generation, uint32_t rank) {
    absl::MutexLock lock(&mu_);
    auto it = shards_.find(std::make_tuple(group, generation, rank));
    return it == shards_.end() ? nullptr : it->second;
  }

 private:
  using ShardKey = std::tuple<std::string, uint64_t, uint32_t>;
  static ShardKey Key(const v1::ShardSpec& spec) {
    return {spec.group(), spec.generation(), spec.rank()};
  }

  class Handle final : public RunningShard {
   public:
    Handle(std::shared_ptr<Shard> shard, pid_t pid) : shard_(std::move(shard)), pid_(pid) {}
    int exit_fd() const override { return shard_->fd; }
    std::optional<std::string> OnExitReady() override {
      absl::MutexLock lock(&shard_->mu);
      return shard_->exit;
    }
    absl::Status Stop(absl::Duration) override {
      {
        absl::MutexLock lock(&shard_->mu);
        ++shard_->stops;
      }
      shard_->Exit("killed by signal 15 (Terminated)");
      return absl::OkStatus();
    }
    void FillRecord(ShardRecord& record) const override { record.pid = pid_; }
    pid_t pid() const override { return pid_; }
    std::string container() const override { return ""; }
    std::vector<std::string> warnings() const override { return {}; }

   private:
    std::shared_ptr<Shard> shard_;
    pid_t pid_;
  };

  absl::Mutex mu_;
  absl::Status check_ ABSL_GUARDED_BY(mu_);
  absl::Status launch_ ABSL_GUARDED_BY(mu_);
  int launches_ ABSL_GUARDED_BY(mu_) = 0;
  pid_t next_pid_ ABSL_GUARDED_BY(mu_) = 1000;
  std::map<ShardKey, std::shared_ptr<Shard>> shards_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
