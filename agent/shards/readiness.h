// Readiness of an engine's HTTP endpoint: /health, then /v1/models, then a one-token
// completion (vLLM answers /v1/models while its generation is dead). Uses libcurl.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/shards/head_watch.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

// One probe attempt, each request bounded by probe.request_timeout. OK when every enabled
// step answered as expected; otherwise Unavailable naming the step and what came back
// ("GET http://127.0.0.1:8000/v1/models: connection refused", "POST /v1/completions: HTTP 500:
// <first 200 bytes of the body>").
absl::Status ProbeReadiness(const v1::ReadinessProbe& probe);

// One look at a Ready head for its HeadWatch: GET the health path and GET the metrics path,
// each bounded by probe.request_timeout.
struct HeadLook {
  absl::Status health;
  std::optional<HeadMetrics> metrics;  // nullopt: not served, or without vLLM's series
};
HeadLook LookAtHead(const v1::ReadinessProbe& probe);

// The first model /v1/models lists asked for one token, each request bounded by `timeout`.
absl::Status OneTokenCompletion(const v1::ReadinessProbe& probe, absl::Duration timeout);

}  // namespace fleet::agent
