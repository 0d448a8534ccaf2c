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
//   GET  /metrics              vLLM's vllm:num_requests_running and vllm:generation_tokens_total
//
// Faults of a wedged vLLM head, for the head watch's tests (EchoFaults): a prompt after which
// every completion hangs (requests running, no token, /health still 200), and one that turns
// /health to 503.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "common/http/server.h"
#include "nlohmann/json.hpp"
#include "tests/support/echo_engine/rendezvous.h"

namespace fleet::echo {

inline constexpr char kModelId[] = "fleet-echo";

struct EchoFaults {
  std::string wedge_on_prompt;      // answered; every completion after it hangs
  std::string unhealthy_on_prompt;  // a completion whose prompt contains it fails /health
};

class EchoApi {
 public:
  // `hellos`: every rank's hello, rank 0 first (from Head::AwaitWorkers).
  explicit EchoApi(const std::vector<Hello>& hellos, EchoFaults faults = {});

  // Thread-safe.
  http::HttpResponse Handle(const http::HttpRequest& request);

 private:
  http::HttpResponse Completion(const nlohmann::json& body);
  http::HttpResponse ChatCompletion(const nlohmann::json& body);

  http::HttpResponse Metrics() const;

  const nlohmann::json ranks_;
  const EchoFaults faults_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int64_t> running_{0};
  std::atomic<uint64_t> generated_{0};  // one token per byte of text answered
  std::atomic<bool> wedged_{false};
  std::atomic<bool> unhealthy_{false};
};

}  // namespace fleet::echo
