// fleet-engine's serving metrics, exported at /metrics in Prometheus' text format under vLLM's
// names, so SparkFleet's health, wedge and drain logic reads fleet-engine and vLLM the same way.
//
//   vllm:num_requests_running / vllm:num_requests_waiting     gauges
//   vllm:kv_cache_usage_perc                                   gauge, 0..1
//   vllm:prompt_tokens_total / vllm:generation_tokens_total    counters
//   vllm:request_success_total{finished_reason=...}            counter
//   vllm:time_to_first_token_seconds                           histogram (vLLM's buckets)
//   vllm:inter_token_latency_seconds                           histogram (vLLM's buckets)
//   fleet_engine:step_seconds                                  histogram of whole decode steps
//
// Example: metrics.ObserveTimeToFirstToken(0.012); std::string text = metrics.Render();
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fleet::native {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Prometheus lines for `name` with `labels` ("model_name=\"x\"").
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Thread-safe.
class Metrics {
 public:
  explicit Metrics(std::string model_name);

  void SetQueue(int running, int waiting, double kv_cache_usage);
  void AddPromptTokens(uint64_t n);
  void AddGenerationTokens(uint64_t n);
  void RequestFinished(const std::string& finished_reason);
  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  void ObserveStep(double seconds);

  std::string Render() const;

 private:
  const std::string labels_;
  mutable absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  double kv_cache_usage_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> finished_ ABSL_GUARDED_BY(mu_);
  Histogram ttft_ ABSL_GUARDED_BY(mu_);
  Histogram itl_ ABSL_GUARDED_BY(mu_);
  Histogram step_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::native
