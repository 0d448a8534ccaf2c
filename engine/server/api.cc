// fleet-engine's HTTP API (see api.h).
#include "engine/server/api.h"

#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fleet::native {
namespace {

constexpr char kFingerprint[] = "fleet-engine-greedy";

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

// A client told to come back after this many seconds when the queue is full: a few decode steps
// of the CPU demo free slots, and vLLM's clients retry on the order of a second.
constexpr int kRetryAfterSeconds = 1;

http::HttpResponse ErrorResponse(const absl::Status& status) {
  if (absl::IsResourceExhausted(status)) {
    return http::TooManyRequests(status.message(), kRetryAfterSeconds);
  }
  return http::JsonError(HttpStatusOf(status), status.message());
}

// The prompt of a chat request: "role: content" lines, then "assistant: ".
absl::StatusOr<std::string> RenderChat(const nlohmann::json& messages) {
  if (!messages.is_array() || messages.empty()) {
    return absl::InvalidArgumentError("\"messages\" must be a non-empty array");
  }
  std::string text;
  for (const nlohmann::json& message : messages) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string()) {
      return absl::InvalidArgumentError("every message needs a string \"role\"");
    }
    const nlohmann::json content = message.value("content", nlohmann::json(""));
    std::string content_text;
    if (content.is_string()) {
      content_text = content.get<std::string>();
    } else if (content.is_array()) {
      for (const nlohmann::json& part : content) {
        if (part.is_object() && part.value("type", "") == "text" && part.contains("text") &&
            part["text"].is_string()) {
          content_text += part["text"].get<std::string>();
        } else {
          return absl::InvalidArgumentError(
              "message content parts must be {\"type\":\"text\",\"text\":...}: this engine "
              "takes text only");
        }
      }
    } else if (!content.is_null()) {
      return absl::InvalidArgumentError("message \"content\" must be a string or text parts");
    }
    absl::StrAppend(&text, message["role"].get<std::string>(), ": ", content_text, "\n");
  }
  absl::StrAppend(&text, "assistant: ");
  return text;
}

std::string SseEvent(const nlohmann::json& chunk) {
  return absl::StrCat("data: ", chunk.dump(), "\n\n");
}

}  // namespace

std::vector<int> Encode(absl::string_view text, int vocab_size) {
  std::vector<int> tokens;
  tokens.reserve(text.size());
  for (unsigned char byte : text) tokens.push_back(byte % vocab_size);
  return tokens;
}

std::string Decode(const std::vector<int>& tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (int token : tokens)
    text.push_back(kVocabulary[static_cast<size_t>(token) % kVocabulary.size()]);
  return text;
}

EngineApi::EngineApi(Scheduler* scheduler, Metrics* metrics, ApiOptions options,
                     nlohmann::json engine_info)
    : scheduler_(scheduler),
      metrics_(metrics),
      options_(std::move(options)),
      engine_info_(std::move(engine_info)) {}

absl::StatusOr<EngineApi::Parsed> EngineApi::ParseCommon(const nlohmann::json& body,
                                                         std::vector<int> prompt,
                                                         const char* max_tokens_key) {
  Parsed parsed{.prompt = std::move(prompt), .max_tokens = options_.default_max_tokens};
  for (const char* key : {"max_tokens", max_tokens_key}) {
    if (!body.contains(key) || body[key].is_null()) continue;
    const nlohmann::json& value = body[key];
    // Range-checked in the JSON's own width before narrowing to int: 1000000000000 must be
    // refused as itself, not as its low 32 bits.
    bool in_range = false;
    if (value.is_number_unsigned()) {
      in_range = value.get<uint64_t>() >= 1 &&
                 value.get<uint64_t>() <= static_cast<uint64_t>(options_.max_seq_len);
    } else if (value.is_number_integer()) {
      in_range = value.get<int64_t>() >= 1 && value.get<int64_t>() <= options_.max_seq_len;
    }
    if (!in_range) {
      return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be an integer from 1 to ",
                                                     options_.max_seq_len,
                                                     " (the model's context), not ", value.dump()));
    }
    parsed.max_tokens = static_cast<int>(value.get<int64_t>());
  }
  if (body.contains("n") && body["n"] != 1) {
    return absl::InvalidArgumentError("\"n\" must be 1: this engine returns one choice");
  }
  for (const char* unsupported : {"logprobs", "best_of", "echo", "suffix"}) {
    if (body.contains(unsupported) && !body[unsupported].is_null() && body[unsupported] != false) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", unsupported, "\" is not supported by fleet-engine"));
    }
  }
  if (body.contains("stream")) {
    if (!body["stream"].is_boolean()) {
      return absl::InvalidArgumentError("\"stream\" must be true or false");
    }
    parsed.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && body["stream_options"].is_object()) {
    parsed.include_usage = body["stream_options"].value("include_usage", false);
  }
  return parsed;
}

http::HttpResponse EngineApi::Generate(const Parsed& parsed, bool chat) {
  absl::StatusOr<std::shared_ptr<Sequence>> submitted =
      scheduler_->Submit(parsed.prompt, parsed.max_tokens);
  if (!submitted.ok()) return ErrorResponse(submitted.status());
  std::shared_ptr<Sequence> sequence = *std::move(submitted);

  const std::string id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", next_id_.fetch_add(1));
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  const char* object = chat ? "chat.completion" : "text_completion";
  const int prompt_tokens = static_cast<int>(parsed.prompt.size());
  auto usage = [prompt_tokens](int completion_tokens) {
    return nlohmann::json{{"prompt_tokens", prompt_tokens},
                          {"completion_tokens", completion_tokens},
                          {"total_tokens", prompt_tokens + completion_tokens}};
  };
  const absl::Time deadline = absl::Now() + options_.request_timeout;
  const std::string model = options_.model_name;

  if (!parsed.stream) {
    std::vector<int> tokens;
    Sequence::Update update;
    while (!update.done && absl::Now() < deadline) {
      update = sequence->Next(deadline);
      tokens.insert(tokens.end(), update.tokens.begin(), update.tokens.end());
    }
    if (!update.done) {
      sequence->Cancel();
      return http::JsonError(504, "the request did not finish within the request timeout");
    }
    if (!update.status.ok()) return ErrorResponse(update.status);
    nlohmann::json choice = {
        {"index", 0}, {"finish_reason", update.finish_reason}, {"logprobs", nullptr}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", Decode(tokens)}};
    } else {
      choice["text"] = Decode(tokens);
    }
    nlohmann::json answer = {{"id", id},
                             {"object", object},
                             {"created", created},
                             {"model", model},
                             {"system_fingerprint", kFingerprint},
                             {"choices", nlohmann::json::array({choice})},
                             {"usage", usage(static_cast<int>(tokens.size()))}};
    return {.status = 200, .body = answer.dump()};
  }

  http::HttpResponse response{.status = 200, .content_type = "text/event-stream"};
  const bool include_usage = parsed.include_usage;
  response.stream = [sequence, id, created, chat, model, deadline, include_usage,
                     usage](const http::StreamWriter& write) {
    const char* chunk_object = chat ? "chat.completion.chunk" : "text_completion";
    auto chunk = [&](nlohmann::json choice) {
      return nlohmann::json{{"id", id},
                            {"object", chunk_object},
                            {"created", created},
                            {"model", model},
                            {"system_fingerprint", kFingerprint},
                            {"choices", nlohmann::json::array({std::move(choice)})}};
    };
    if (chat && !write(SseEvent(chunk({{"index", 0},
                                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"finish_reason", nullptr}})))) {
      sequence->Cancel();
      return;
    }
    int completion_tokens = 0;
    Sequence::Update update;
    while (!update.done) {
      if (absl::Now() >= deadline) {
        sequence->Cancel();
        write(SseEvent({{"error", {{"message", "the request timed out"}, {"code", 504}}}}));
        return;
      }
      update = sequence->Next(deadline);
      if (!update.status.ok()) {
        write(SseEvent({{"error",
                         {{"message", std::string(update.status.message())},
                          {"code", HttpStatusOf(update.status)}}}}));
        return;
      }
      for (int token : update.tokens) {
        ++completion_tokens;
        const std::string text = Decode({token});
        nlohmann::json choice = {{"index", 0}, {"finish_reason", nullptr}};
        if (chat) {
          choice["delta"] = {{"content", text}};
        } else {
          choice["text"] = text;
          choice["logprobs"] = nullptr;
        }
        if (!write(SseEvent(chunk(std::move(choice))))) {
          sequence->Cancel();
          return;
        }
      }
    }
    nlohmann::json last = {{"index", 0}, {"finish_reason", update.finish_reason}};
    if (chat) {
      last["delta"] = nlohmann::json::object();
    } else {
      last["text"] = "";
    }
    write(SseEvent(chunk(std::move(last))));
    if (include_usage) {
      nlohmann::json usage_chunk = chunk(nullptr);
      usage_chunk["choices"] = nlohmann::json::array();
      usage_chunk["usage"] = usage(completion_tokens);
      write(SseEvent(usage_chunk));
    }
    write("data: [DONE]\n\n");
  };
  return response;
}

std::vector<std::string> EngineApi::InlinePaths() {
  return {"/health", "/metrics", "/engine", "/v1/models"};
}

http::HttpResponse EngineApi::Handle(const http::HttpRequest& request) {
  if (request.path == "/health") {
    if (request.method != "GET") return http::JsonError(405, "use GET");
    if (!scheduler_->healthy()) return http::JsonError(503, "the engine group is not serving");
    return {.status = 200, .body = ""};
  }
  if (request.path == "/metrics") {
    if (request.method != "GET") return http::JsonError(405, "use GET");
    return {.status = 200,
            .body = metrics_->Render(),
            .content_type = "text/plain; version=0.0.4; charset=utf-8"};
  }
  if (request.path == "/engine") {
    if (request.method != "GET") return http::JsonError(405, "use GET");
    return {.status = 200, .body = engine_info_.dump()};
  }
  if (request.path == "/v1/models") {
    if (request.method != "GET") return http::JsonError(405, "use GET");
    nlohmann::json models = {{"object", "list"},
                             {"data",
                              {{{"id", options_.model_name},
                                {"object", "model"},
                                {"created", 0},
                                {"owned_by", "sparkfleet"},
                                {"root", options_.model_name},
                                {"max_model_len", options_.max_seq_len}}}}};
    return {.status = 200, .body = models.dump()};
  }
  const bool chat = request.path == "/v1/chat/completions";
  if (!chat && request.path != "/v1/completions") {
    return http::JsonError(404, absl::StrCat("no route ", request.path));
  }
  if (request.method != "POST") return http::JsonError(405, "use POST");
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) return http::JsonError(400, "the body must be a JSON object");
  if (body.contains("model") && body["model"] != options_.model_name) {
    return http::JsonError(
        404, absl::StrCat("model ", body["model"].dump(),
                          " is not served here; this engine serves \"", options_.model_name, "\""));
  }
  std::string prompt;
  if (chat) {
    absl::StatusOr<std::string> rendered = RenderChat(body.value("messages", nlohmann::json()));
    if (!rendered.ok()) return ErrorResponse(rendered.status());
    prompt = *std::move(rendered);
  } else {
    const nlohmann::json& value = body.value("prompt", nlohmann::json());
    if (value.is_string()) {
      prompt = value.get<std::string>();
    } else if (value.is_array() && value.size() == 1 && value[0].is_string()) {
      prompt = value[0].get<std::string>();
    } else {
      return http::JsonError(400, "\"prompt\" must be one string");
    }
  }
  absl::StatusOr<Parsed> parsed = ParseCommon(body, Encode(prompt, options_.vocab_size),
                                              chat ? "max_completion_tokens" : "max_tokens");
  if (!parsed.ok()) return ErrorResponse(parsed.status());
  return Generate(*parsed, chat);
}

}  // namespace fleet::native
