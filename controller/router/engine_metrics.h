// The controller's seam to an engine's own metrics: how many requests a replica is serving
// (`vllm:num_requests_running`, which vLLM and fleet-engine export at /metrics). An interface,
// an HTTP implementation, and FakeEngineMetrics (fake_engine_metrics.h) for tests.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet::controller {

class EngineMetrics {
 public:
  virtual ~EngineMetrics() = default;
  // The sum of every `vllm:num_requests_running` sample at ENDPOINT/metrics ("http://H:P").
  // Unavailable when it cannot be read, NotFound when the engine exports no such series.
  virtual absl::StatusOr<int> RequestsRunning(const std::string& endpoint) = 0;
};

// GET ENDPOINT/metrics, bounded by one second.
class HttpEngineMetrics final : public EngineMetrics {
 public:
  absl::StatusOr<int> RequestsRunning(const std::string& endpoint) override;
};

// The sum of the `vllm:num_requests_running` samples in Prometheus text, or NotFound.
absl::StatusOr<int> SumRequestsRunning(absl::string_view prometheus_text);

}  // namespace fleet::controller
