// Whether a Ready head still works: the agent looks at it every HeadWatch.period (readiness.h
// does the HTTP; this decides), and stops it with the reason when it does not. What counts:
//   - GET /health failing `failure_threshold` times in a row;
//   - requests running while vllm:generation_tokens_total stands still for `stall_timeout`
//     (a wedged vLLM keeps /health at 200 while its requests hang);
//   - no token generated for `idle_probe_after` (or, without the engine's metrics, that long
//     since the last check) and then a one-token completion that does not answer.
//
// Example:
//   HeadWatchJudge judge(spec.readiness().watch(), clock.Now());
//   if (std::optional<std::string> why = judge.Observe(now, health, metrics)) stop(*why);
//   if (judge.WantsCompletion(now)) { ... judge.ObserveCompletion(now, result) ... }
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

// The series of an engine's /metrics the watch reads, summed over their labels; the last two
// are shown by `fleet health` only.
struct HeadMetrics {
  double running = 0;    // vllm:num_requests_running (llama-server: llamacpp:requests_processing)
  double generated = 0;  // vllm:generation_tokens_total (llamacpp:tokens_predicted_total)
  std::optional<double> waiting;  // vllm:num_requests_waiting (llamacpp:requests_deferred)
  // vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before vLLM 0.10,
  // llamacpp:kv_cache_usage_ratio), 0..1: the fullest engine's where there are several
  std::optional<double> kv_cache_usage;
};

// Reads the series from Prometheus text; nullopt when running or generated is absent (the
// watch then sees no stall and probes an idle head by time alone).
std::optional<HeadMetrics> ParseHeadMetrics(absl::string_view text);

// What `fleet health` shows of a head: these figures read at `now`, with the token rate since
// `previous` (read at `previous_at`) when there is one and the counter did not go down (a
// restarted engine).
v1::EngineFigures EngineFiguresOf(const HeadMetrics& now_metrics, absl::Time now,
                                  const std::optional<HeadMetrics>& previous,
                                  absl::Time previous_at);

class HeadWatchJudge {
 public:
  HeadWatchJudge(const v1::HeadWatch& watch, absl::Time ready_at);

  // One look: the /health answer and the metrics (nullopt: not served or not vLLM's). A reason
  // to stop the head, or nullopt.
  std::optional<std::string> Observe(absl::Time now, const absl::Status& health,
                                     const std::optional<HeadMetrics>& metrics);
  // True when a one-token completion is due: nothing generated (or checked) for
  // idle_probe_after, and no request running (those fall under the stall rule).
  bool WantsCompletion(absl::Time now) const;
  // The completion's outcome; a reason to stop the head when it failed.
  std::optional<std::string> ObserveCompletion(absl::Time now, const absl::Status& result);

  absl::Duration idle_probe_timeout() const { return idle_probe_timeout_; }

 private:
  const absl::Duration period_;
  const int failure_threshold_;
  const absl::Duration stall_timeout_;
  const absl::Duration idle_probe_after_;
  const absl::Duration idle_probe_timeout_;

  int health_failures_ = 0;  // in a row
  std::optional<HeadMetrics> last_;
  absl::Time progress_at_;  // last token generated, or requests began running after none
  absl::Time active_at_;    // last token generated or completion answered
};

}  // namespace fleet::agent
