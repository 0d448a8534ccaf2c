// Readiness of an engine's HTTP endpoint: /health, then /v1/models, then a one-token
// completion (vLLM answers /v1/models while its generation is dead). Uses libcurl.
#pragma once

#include "absl/status/status.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

// One probe attempt, each request bounded by probe.request_timeout. OK when every enabled
// step answered as expected; otherwise Unavailable naming the step and what came back
// ("GET http://127.0.0.1:8000/v1/models: connection refused", "POST /v1/completions: HTTP 500:
// <first 200 bytes of the body>").
absl::Status ProbeReadiness(const v1::ReadinessProbe& probe);

}  // namespace fleet::agent
