// fleet-engine's metrics (see metrics.h).
#include "engine/server/metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace fleet::native {
namespace {

// vLLM's bucket boundaries (vllm/v1/metrics/loggers.py).
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                         0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kStepBuckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                          0.1,    0.2,   0.5,   1.0,   2.0,  5.0};

std::string Number(double value) { return absl::StrCat(value); }

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  absl::StrAppend(out, "# TYPE ", name, " histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(out, name, "_bucket{", labels, ",le=\"", Number(bounds_[i]), "\"} ", cumulative,
                    "\n");
  }
  absl::StrAppend(out, name, "_bucket{", labels, ",le=\"+Inf\"} ", count_, "\n");
  absl::StrAppend(out, name, "_sum{", labels, "} ", Number(sum_), "\n");
  absl::StrAppend(out, name, "_count{", labels, "} ", count_, "\n");
}

Metrics::Metrics(std::string model_name)
    : labels_(absl::StrCat("model_name=\"", model_name, "\"")),
      ttft_(kTtftBuckets),
      itl_(kItlBuckets),
      step_(kStepBuckets) {}

void Metrics::SetQueue(int running, int waiting, double kv_cache_usage) {
  absl::MutexLock lock(&mu_);
  running_ = running;
  waiting_ = waiting;
  kv_cache_usage_ = kv_cache_usage;
}

void Metrics::AddPromptTokens(uint64_t n) {
  absl::MutexLock lock(&mu_);
  prompt_tokens_ += n;
}

void Metrics::AddGenerationTokens(uint64_t n) {
  absl::MutexLock lock(&mu_);
  generation_tokens_ += n;
}

void Metrics::RequestFinished(const std::string& finished_reason) {
  absl::MutexLock lock(&mu_);
  ++finished_[finished_reason];
}

void Metrics::ObserveTimeToFirstToken(double seconds) {
  absl::MutexLock lock(&mu_);
  ttft_.Observe(seconds);
}

void Metrics::ObserveInterTokenLatency(double seconds) {
  absl::MutexLock lock(&mu_);
  itl_.Observe(seconds);
}

void Metrics::ObserveStep(double seconds) {
  absl::MutexLock lock(&mu_);
  step_.Observe(seconds);
}

std::string Metrics::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  auto gauge = [&](const char* name, double value) {
    absl::StrAppend(&out, "# TYPE ", name, " gauge\n", name, "{", labels_, "} ", Number(value),
                    "\n");
  };
  auto counter = [&](const char* name, uint64_t value) {
    absl::StrAppend(&out, "# TYPE ", name, " counter\n", name, "{", labels_, "} ", value, "\n");
  };
  gauge("vllm:num_requests_running", running_);
  gauge("vllm:num_requests_waiting", waiting_);
  gauge("vllm:kv_cache_usage_perc", kv_cache_usage_);
  counter("vllm:prompt_tokens_total", prompt_tokens_);
  counter("vllm:generation_tokens_total", generation_tokens_);
  absl::StrAppend(&out, "# TYPE vllm:request_success_total counter\n");
  for (const auto& [reason, count] : finished_) {
    absl::StrAppend(&out, "vllm:request_success_total{", labels_, ",finished_reason=\"", reason,
                    "\"} ", count, "\n");
  }
  ttft_.Render("vllm:time_to_first_token_seconds", labels_, &out);
  itl_.Render("vllm:inter_token_latency_seconds", labels_, &out);
  step_.Render("fleet_engine:step_seconds", labels_, &out);
  return out;
}

}  // namespace fleet::native
