// The key-value store a fleet-engine rank uses to find the rest of its group: rank 0 publishes
// what the others need (an ncclUniqueId, Gloo's addresses) and they wait for it. The real one
// talks to the controller's rendezvous service (rendezvous_client.h), scoped to one group and
// generation; tests use InMemoryKvStore.
//
// Example:
//   if (rank == 0) RETURN_IF_ERROR(store.Set("nccl-id", id_bytes));
//   ASSIGN_OR_RETURN(std::string id, store.Get("nccl-id", absl::Now() + absl::Seconds(60)));
#pragma once

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fleet::native {

class KvStore {
 public:
  virtual ~KvStore() = default;

  // Stores `value` (any bytes) under `key`, replacing what was there.
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;

  // The value of `key`, waiting for it to be set until `deadline`. DeadlineExceeded naming the
  // key when it never came; Aborted when the group's generation ended meanwhile.
  virtual absl::StatusOr<std::string> Get(const std::string& key, absl::Time deadline) = 0;
};

// A thread-safe store in memory, shared by ranks that run as threads of one test or benchmark.
class InMemoryKvStore final : public KvStore {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override {
    absl::MutexLock lock(&mu_);
    values_[key] = value;
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const std::string& key, absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    auto present = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return values_.contains(key); };
    if (!mu_.AwaitWithDeadline(absl::Condition(&present), deadline)) {
      return absl::DeadlineExceededError("rendezvous key '" + key + "' was never set");
    }
    return values_.at(key);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::native
