// fleet-engine's HTTP API at rank 0: OpenAI-compatible completions over the Scheduler, and the
// vLLM-compatible health and metrics routes. The model is synthetic (not a language model):
// a token is one byte of a fixed 64-character vocabulary, prompts are encoded byte by byte, and
// decoding is greedy (sampling parameters such as temperature are accepted and have no effect;
// every answer says so in "system_fingerprint").
//
//   GET  /health                  200 while the group serves, 503 once it broke or is stopping
//   GET  /v1/models               the served model, with max_model_len
//   POST /v1/completions          {"prompt","max_tokens","stream","stream_options"}
//   POST /v1/chat/completions     {"messages","max_tokens"|"max_completion_tokens","stream"}
//   GET  /metrics                 Prometheus text (metrics.h)
//   GET  /engine                  the group: world size, collectives, shape, reference check
//
// /health, /metrics, /engine and /v1/models never block (kInlinePaths); completions wait on the
// scheduler. A full scheduler queue is 429 with Retry-After.
//
// Example: EngineApi api(&scheduler, &metrics, options, engine_info);
//          http::HttpServer::Start({.inline_paths = EngineApi::InlinePaths(), ...},
//                                  [&](const auto& r) { return api.Handle(r); });
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/http/server.h"
#include "engine/server/metrics.h"
#include "engine/server/scheduler.h"
#include "nlohmann/json.hpp"

namespace fleet::native {

// The 64 characters tokens render as: token t is kVocabulary[t % 64].
inline constexpr absl::string_view kVocabulary =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";

// Prompt bytes to token ids (byte % vocab_size), and token ids to text.
std::vector<int> Encode(absl::string_view text, int vocab_size);
std::string Decode(const std::vector<int>& tokens);

struct ApiOptions {
  std::string model_name = "fleet-engine-synthetic";
  int max_seq_len = 512;
  int vocab_size = 256;
  int default_max_tokens = 16;
  absl::Duration request_timeout = absl::Minutes(10);
};

class EngineApi {
 public:
  // `engine_info` is served as is at GET /engine.
  EngineApi(Scheduler* scheduler, Metrics* metrics, ApiOptions options, nlohmann::json engine_info);

  // Thread-safe; called from the server's I/O threads (inline paths) and workers (the rest).
  http::HttpResponse Handle(const http::HttpRequest& request);

  // The routes whose answer never waits on the scheduler.
  static std::vector<std::string> InlinePaths();

 private:
  struct Parsed {
    std::vector<int> prompt;
    int max_tokens = 0;
    bool stream = false;
    bool include_usage = false;
  };

  absl::StatusOr<Parsed> ParseCommon(const nlohmann::json& body, std::vector<int> prompt,
                                     const char* max_tokens_key);
  http::HttpResponse Generate(const Parsed& parsed, bool chat);

  Scheduler* const scheduler_;
  Metrics* const metrics_;
  const ApiOptions options_;
  const nlohmann::json engine_info_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace fleet::native
