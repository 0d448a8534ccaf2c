// HeadWatchJudge (see head_watch.h).
#include "agent/shards/head_watch.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/proto_time.h"

namespace fleet::agent {
namespace {

absl::Duration Of(const google::protobuf::Duration& d, absl::Duration fallback) {
  absl::Duration out = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  return out > absl::ZeroDuration() ? out : fallback;
}

// The sample value of a Prometheus text line whose metric is `name` (with or without labels).
std::optional<double> Sample(absl::string_view line, absl::string_view name) {
  if (!absl::ConsumePrefix(&line, name)) return std::nullopt;
  if (absl::ConsumePrefix(&line, "{")) {
    size_t close = line.find('}');
    if (close == absl::string_view::npos) return std::nullopt;
    line.remove_prefix(close + 1);
  } else if (line.empty() || line[0] != ' ') {
    return std::nullopt;  // a longer name, e.g. name_created
  }
  line = absl::StripLeadingAsciiWhitespace(line);
  absl::string_view value = line.substr(0, line.find(' '));
  double v = 0;
  if (!absl::SimpleAtod(value, &v)) return std::nullopt;
  return v;
}

// "3s", "2m", "300ms": whole seconds from a second up, else milliseconds.
std::string Seconds(absl::Duration d) {
  return absl::FormatDuration(
      absl::Trunc(d, d >= absl::Seconds(1) ? absl::Seconds(1) : absl::Milliseconds(1)));
}

}  // namespace

std::optional<HeadMetrics> ParseHeadMetrics(absl::string_view text) {
  HeadMetrics m;
  bool running = false, generated = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    // vLLM's names (fleet-engine serves them too), and llama-server's.
    std::optional<double> v = Sample(line, "vllm:num_requests_running");
    if (!v) v = Sample(line, "llamacpp:requests_processing");
    if (v) {
      m.running += *v;
      running = true;
    } else if ((v = Sample(line, "vllm:generation_tokens_total")) ||
               (v = Sample(line, "llamacpp:tokens_predicted_total"))) {
      m.generated += *v;
      generated = true;
    } else if ((v = Sample(line, "vllm:num_requests_waiting")) ||
               (v = Sample(line, "llamacpp:requests_deferred"))) {
      m.waiting = m.waiting.value_or(0) + *v;
    } else if ((v = Sample(line, "vllm:kv_cache_usage_perc")) ||
               (v = Sample(line, "vllm:gpu_cache_usage_perc")) ||
               (v = Sample(line, "llamacpp:kv_cache_usage_ratio"))) {
      m.kv_cache_usage = std::max(m.kv_cache_usage.value_or(0), *v);
    }
  }
  if (!running || !generated) return std::nullopt;
  return m;
}

v1::EngineFigures EngineFiguresOf(const HeadMetrics& now_metrics, absl::Time now,
                                  const std::optional<HeadMetrics>& previous,
                                  absl::Time previous_at) {
  v1::EngineFigures f;
  f.set_requests_running(now_metrics.running);
  if (now_metrics.waiting) f.set_requests_waiting(*now_metrics.waiting);
  if (now_metrics.kv_cache_usage) f.set_kv_cache_usage(*now_metrics.kv_cache_usage);
  *f.mutable_read_at() = ToProtoTime(now);
  if (previous.has_value() && now > previous_at && now_metrics.generated >= previous->generated) {
    f.set_tokens_per_second((now_metrics.generated - previous->generated) /
                            absl::ToDoubleSeconds(now - previous_at));
  }
  return f;
}

HeadWatchJudge::HeadWatchJudge(const v1::HeadWatch& watch, absl::Time ready_at)
    : period_(Of(watch.period(), absl::Seconds(5))),
      failure_threshold_(std::max<int>(1, static_cast<int>(watch.failure_threshold()))),
      stall_timeout_(Of(watch.stall_timeout(), absl::Seconds(120))),
      idle_probe_after_(Of(watch.idle_probe_after(), absl::Seconds(30))),
      idle_probe_timeout_(Of(watch.idle_probe_timeout(), absl::Seconds(30))),
      progress_at_(ready_at),
      active_at_(ready_at) {}

std::optional<std::string> HeadWatchJudge::Observe(absl::Time now, const absl::Status& health,
                                                   const std::optional<HeadMetrics>& metrics) {
  if (health.ok()) {
    health_failures_ = 0;
  } else if (++health_failures_ >= failure_threshold_) {
    return absl::StrCat("the head failed its health check ", health_failures_,
                        " times in a row (every ", Seconds(period_),
                        ", health.failure_threshold): ", health.message());
  }
  if (!metrics.has_value()) return std::nullopt;
  // A counter that went down belongs to a restarted engine: a fresh start, not a stall.
  const bool grew = last_.has_value() && metrics->generated != last_->generated;
  const bool began = !last_.has_value() || (last_->running == 0 && metrics->running > 0);
  if (grew) active_at_ = now;
  if (grew || (began && metrics->running > 0)) progress_at_ = now;
  last_ = metrics;
  if (metrics->running > 0 && now - progress_at_ >= stall_timeout_) {
    return absl::StrCat(metrics->running, " request(s) running but no token generated for ",
                        Seconds(now - progress_at_), " (vllm:generation_tokens_total stayed at ",
                        metrics->generated, "; health.stall_timeout ", Seconds(stall_timeout_),
                        "): the engine is wedged");
  }
  return std::nullopt;
}

bool HeadWatchJudge::WantsCompletion(absl::Time now) const {
  if (last_.has_value() && last_->running > 0) return false;
  return now - active_at_ >= idle_probe_after_;
}

std::optional<std::string> HeadWatchJudge::ObserveCompletion(absl::Time now,
                                                             const absl::Status& result) {
  if (result.ok()) {
    active_at_ = now;
    return std::nullopt;
  }
  return absl::StrCat("no token generated for ", Seconds(idle_probe_after_),
                      " (health.idle_probe_after) and a one-token completion failed within ",
                      Seconds(idle_probe_timeout_),
                      " (health.idle_probe_timeout): ", result.message());
}

}  // namespace fleet::agent
