// The echo engine's HTTP API (see echo_api.h).
#include "tests/support/echo_engine/echo_api.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fleet::echo {
namespace {

// OpenAI's default for /v1/completions when max_tokens is absent.
constexpr int64_t kDefaultMaxTokens = 16;

http::HttpResponse Json(const nlohmann::json& body) { return {.status = 200, .body = body.dump()}; }

// The first `max_bytes` bytes of `text`, cut back to a UTF-8 character boundary so the answer
// stays valid JSON text.
std::string Truncate(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

// max_tokens (or chat's max_completion_tokens) from a request, or an error to answer.
absl::StatusOr<size_t> MaxTokens(const nlohmann::json& body, const char* field) {
  if (!body.contains(field) || body[field].is_null()) return kDefaultMaxTokens;
  // Unsigned JSON numbers above INT64_MAX are positive too; reading them as int64_t would wrap.
  const nlohmann::json& value = body[field];
  if (!value.is_number_integer() || (!value.is_number_unsigned() && value.get<int64_t>() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be a positive integer"));
  }
  return body[field].get<size_t>();
}

// The model a request names must be ours, as vLLM answers 404 for a model it does not serve.
std::optional<http::HttpResponse> CheckModel(const nlohmann::json& body) {
  if (!body.contains("model")) return std::nullopt;
  if (body["model"].is_string() && body["model"].get<std::string>() == kModelId) {
    return std::nullopt;
  }
  const nlohmann::json& model = body["model"];
  return http::JsonError(
      404, absl::StrCat("The model `", model.is_string() ? model.get<std::string>() : model.dump(),
                        "` does not exist; this engine serves `", kModelId, "`."));
}

nlohmann::json Usage(size_t prompt_tokens, size_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

nlohmann::json RanksJson(const std::vector<Hello>& hellos) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const Hello& hello : hellos) ranks.push_back(HelloToJson(hello));
  return {{"group", hellos.front().group},
          {"generation", hellos.front().generation},
          {"world_size", hellos.size()},
          {"ranks", ranks}};
}

}  // namespace

EchoApi::EchoApi(const std::vector<Hello>& hellos, EchoFaults faults)
    : ranks_(RanksJson(hellos)), faults_(std::move(faults)) {}

http::HttpResponse EchoApi::Metrics() const {
  return {
      .body = absl::StrCat(
          "# HELP vllm:num_requests_running Number of requests in model execution batches.\n",
          "# TYPE vllm:num_requests_running gauge\n", "vllm:num_requests_running{model_name=\"",
          kModelId, "\"} ", running_.load(), "\n",
          "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n",
          "# TYPE vllm:generation_tokens_total counter\n",
          "vllm:generation_tokens_total{model_name=\"", kModelId, "\"} ", generated_.load(), "\n"),
      .content_type = "text/plain; version=0.0.4"};
}

http::HttpResponse EchoApi::Handle(const http::HttpRequest& request) {
  const bool get = request.method == "GET";
  const bool post = request.method == "POST";
  if (request.path == "/health" && get) return {.status = unhealthy_ ? 503 : 200};
  if (request.path == "/metrics" && get) return Metrics();
  if (request.path == "/v1/models" && get) {
    // "fleet-echo" is SparkFleet's test engine that repeats the prompt; not a language model.
    return Json({{"object", "list"},
                 {"data",
                  {{{"id", kModelId},
                    {"object", "model"},
                    {"created", absl::ToUnixSeconds(absl::Now())},
                    {"owned_by", "sparkfleet"},
                    {"root", kModelId}}}}});
  }
  if (request.path == "/ranks" && get) return Json(ranks_);
  if (request.path == "/v1/completions" || request.path == "/v1/chat/completions") {
    if (!post) return http::JsonError(405, absl::StrCat(request.path, " takes POST"));
    nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      return http::JsonError(400, "the body must be a JSON object");
    }
    if (std::optional<http::HttpResponse> wrong_model = CheckModel(body)) return *wrong_model;
    const std::string text = body.contains("prompt") && body["prompt"].is_string()
                                 ? body["prompt"].get<std::string>()
                                 : body.dump();
    if (!faults_.unhealthy_on_prompt.empty() &&
        absl::StrContains(text, faults_.unhealthy_on_prompt)) {
      unhealthy_ = true;
    }
    ++running_;
    // A wedged vLLM head accepts requests and never answers them; bounded so that a test that
    // forgets the engine does not leave a thread for ever.
    for (int i = 0; wedged_ && i < 3600; ++i) absl::SleepFor(absl::Seconds(1));
    http::HttpResponse response = wedged_ ? http::JsonError(503, "wedged for an hour")
                                  : request.path == "/v1/completions" ? Completion(body)
                                                                      : ChatCompletion(body);
    --running_;
    // This one is answered; every later one hangs.
    if (!faults_.wedge_on_prompt.empty() && absl::StrContains(text, faults_.wedge_on_prompt)) {
      wedged_ = true;
    }
    return response;
  }
  if (request.path == "/health" || request.path == "/v1/models" || request.path == "/ranks") {
    return http::JsonError(405, absl::StrCat(request.path, " takes GET"));
  }
  return http::JsonError(404, absl::StrCat("no route ", request.path));
}

http::HttpResponse EchoApi::Completion(const nlohmann::json& body) {
  if (!body.contains("prompt") || !body["prompt"].is_string()) {
    return http::JsonError(400, "prompt must be a string");
  }
  absl::StatusOr<size_t> max_tokens = MaxTokens(body, "max_tokens");
  if (!max_tokens.ok()) return http::JsonError(400, max_tokens.status().message());
  const std::string prompt = body["prompt"].get<std::string>();
  const std::string text = Truncate(prompt, *max_tokens);
  generated_ += text.size();
  return Json({{"id", absl::StrCat("cmpl-echo-", next_id_++)},
               {"object", "text_completion"},
               {"created", absl::ToUnixSeconds(absl::Now())},
               {"model", kModelId},
               {"choices",
                {{{"index", 0},
                  {"text", text},
                  {"logprobs", nullptr},
                  {"finish_reason", text.size() < prompt.size() ? "length" : "stop"}}}},
               {"usage", Usage(prompt.size(), text.size())}});
}

http::HttpResponse EchoApi::ChatCompletion(const nlohmann::json& body) {
  if (body.contains("stream") && body["stream"] == true) {
    return http::JsonError(400, "the echo engine does not stream; send \"stream\": false");
  }
  if (!body.contains("messages") || !body["messages"].is_array()) {
    return http::JsonError(400, "messages must be an array");
  }
  const nlohmann::json* last_user = nullptr;
  size_t prompt_bytes = 0;
  for (const nlohmann::json& message : body["messages"]) {
    if (!message.is_object() || !message.contains("content") || !message["content"].is_string()) {
      return http::JsonError(400, "every message needs a string content");
    }
    prompt_bytes += message["content"].get_ref<const std::string&>().size();
    if (message.contains("role") && message["role"] == "user") last_user = &message;
  }
  if (last_user == nullptr) return http::JsonError(400, "no message with role \"user\"");
  absl::StatusOr<size_t> max_tokens = MaxTokens(
      body, body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens");
  if (!max_tokens.ok()) return http::JsonError(400, max_tokens.status().message());
  const std::string& content = (*last_user)["content"].get_ref<const std::string&>();
  const std::string text = Truncate(content, *max_tokens);
  generated_ += text.size();
  return Json({{"id", absl::StrCat("chatcmpl-echo-", next_id_++)},
               {"object", "chat.completion"},
               {"created", absl::ToUnixSeconds(absl::Now())},
               {"model", kModelId},
               {"choices",
                {{{"index", 0},
                  {"message", {{"role", "assistant"}, {"content", text}}},
                  {"finish_reason", text.size() < content.size() ? "length" : "stop"}}}},
               {"usage", Usage(prompt_bytes, text.size())}});
}

}  // namespace fleet::echo
