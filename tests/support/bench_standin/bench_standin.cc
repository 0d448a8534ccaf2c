// A stand-in OpenAI-compatible server with fixed timings (see bench_standin.h).
#include "tests/support/bench_standin/bench_standin.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace fleet::standin {
namespace {

std::vector<std::string> Words(const std::string& text) {
  return absl::StrSplit(text, ' ', absl::SkipEmpty());
}

std::string PromptOf(const nlohmann::json& body) {
  if (body.contains("prompt") && body["prompt"].is_string()) return body["prompt"];
  if (body.contains("messages") && body["messages"].is_array() && !body["messages"].empty()) {
    return body["messages"].back().value("content", "");
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<BenchStandin>> BenchStandin::Start(BenchStandinOptions options) {
  std::unique_ptr<BenchStandin> s(new BenchStandin(options));
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server = http::HttpServer::Start(
      {.host = options.host, .port = options.port, .max_handlers = 256},
      [raw = s.get()](const http::HttpRequest& r) { return raw->Handle(r); });
  if (!server.ok()) return server.status();
  s->server_ = *std::move(server);
  return s;
}

std::string BenchStandin::url() const { return absl::StrCat("http://127.0.0.1:", port()); }

std::vector<int> BenchStandin::prompt_tokens() const {
  absl::MutexLock lock(&mu_);
  return prompt_tokens_;
}

int BenchStandin::Uncached(const std::vector<std::string>& words) {
  absl::MutexLock lock(&mu_);
  size_t cached = 0;
  for (const auto& earlier : seen_) {
    size_t n = 0;
    while (n < earlier.size() && n < words.size() && earlier[n] == words[n]) ++n;
    cached = std::max(cached, n);
  }
  seen_.push_back(words);
  return static_cast<int>(words.size() - cached) + (cached == 0 ? 1 : 0);
}

http::HttpResponse BenchStandin::Handle(const http::HttpRequest& request) {
  if (request.path == "/health") return {.body = "{}"};
  if (request.path == "/v1/models") {
    return {.body = R"({"object":"list","data":[{"id":"standin-model","object":"model"}]})"};
  }
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded()) return http::JsonError(400, "the body is not JSON");
  const std::string prompt = PromptOf(body);
  const std::vector<std::string> words = Words(prompt);
  const int tokens = static_cast<int>(words.size()) + 1;
  if (request.path == "/tokenize") {
    if (!options_.tokenize) return http::JsonError(404, "no /tokenize here");
    return {.body = nlohmann::json{{"count", tokens}}.dump()};
  }
  if (request.path != "/v1/completions" && request.path != "/v1/chat/completions") {
    return http::JsonError(404, "unknown path");
  }
  {
    absl::MutexLock lock(&mu_);
    if (running_ >= options_.max_concurrent) return http::TooManyRequests("busy", 1);
    ++running_;
    prompt_tokens_.push_back(tokens);
  }
  const absl::Time start = absl::Now();
  const int max_tokens = std::min(body.value("max_tokens", 16), options_.max_completion);
  const absl::Time first_at =
      start + options_.first_token + absl::Seconds(Uncached(words) / options_.prefill_tps);
  const absl::Duration gap = absl::Seconds(1 / options_.decode_tps);
  auto done = [this] {
    absl::MutexLock lock(&mu_);
    --running_;
  };
  nlohmann::json usage = {{"prompt_tokens", tokens}, {"completion_tokens", max_tokens}};
  if (!body.value("stream", false)) {
    absl::SleepFor(first_at + gap * (max_tokens - 1) - absl::Now());
    done();
    return {
        .body =
            nlohmann::json{{"choices", {{{"index", 0}, {"text", "x"}}}}, {"usage", usage}}.dump()};
  }
  http::HttpResponse response{.content_type = "text/event-stream"};
  response.stream = [=](const http::StreamWriter& write) {
    for (int i = 0; i < max_tokens; ++i) {
      // On a fixed schedule from the first token, so a late wake-up does not push the rest.
      absl::SleepFor(first_at + gap * i - absl::Now());
      nlohmann::json chunk = {{"choices", {{{"index", 0}, {"text", " tok"}}}}};
      if (!write(absl::StrCat("data: ", chunk.dump(), "\n\n"))) break;
    }
    nlohmann::json last = {{"choices", nlohmann::json::array()}, {"usage", usage}};
    write(absl::StrCat("data: ", last.dump(), "\n\ndata: [DONE]\n\n"));
    done();
  };
  return response;
}

}  // namespace fleet::standin
