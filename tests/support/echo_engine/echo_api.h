// The echo engine's HTTP API: the OpenAI-compatible routes a vLLM head serves (enough for
// SparkFleet's readiness probe and `curl` demos), answered by echoing the prompt, plus
// GET /ranks with every rank's hello. It is not a language model and never claims to be.
//
//   GET  /health               200, empty body
//   GET  /v1/models            {"object":"list","data":[{"id":"fleet-echo",...}]}
//   POST /v1/completions       {"model","prompt","max_tokens"} -> text = the prompt's first
//                              max_tokens bytes (one "token" is one byte here)
//   POST /v1/chat/completions  {"messages":[...]} -> the last user message, same truncation;
//                              "stream": true is refused (400)
//   GET  /ranks                {"group","generation","world_size","ranks":[hello of rank 0, ...]}
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "common/http/server.h"
#include "nlohmann/json.hpp"
#include "tests/support/echo_engine/rendezvous.h"

namespace fleet::echo {

inline constexpr char kModelId[] = "fleet-echo";

class EchoApi {
 public:
  // `hellos`: every rank's hello, rank 0 first (from Head::AwaitWorkers).
  explicit EchoApi(const std::vector<Hello>& hellos);

  // Thread-safe.
  http::HttpResponse Handle(const http::HttpRequest& request);

 private:
  http::HttpResponse Completion(const nlohmann::json& body);
  http::HttpResponse ChatCompletion(const nlohmann::json& body);

  const nlohmann::json ranks_;
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace fleet::echo
