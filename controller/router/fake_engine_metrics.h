// A stand-in for EngineMetrics: each endpoint answers what the test set (Unavailable if unset).
#pragma once

#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "controller/router/engine_metrics.h"

namespace fleet::controller {

class FakeEngineMetrics final : public EngineMetrics {
 public:
  absl::StatusOr<int> RequestsRunning(const std::string& endpoint) override {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(endpoint);
    if (it == running_.end()) return absl::UnavailableError("no metrics at " + endpoint);
    return it->second;
  }
  void Set(const std::string& endpoint, int running) {
    absl::MutexLock lock(&mu_);
    running_[endpoint] = running;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, int> running_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller
