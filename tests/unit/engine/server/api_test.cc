// The OpenAI-compatible API over a real scheduler and a one-rank CPU group: answers with and
// without streaming, errors, health, and metrics that move under load.
#include "engine/server/api.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/eventually.h"
#include "tests/unit/engine/server/test_group.h"

namespace fleet::native {
namespace {

using ::testing::HasSubstr;
using testing::MakeGroup;
using testing::SmallShape;

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    group_ = MakeGroup(1, shape_);
    scheduler_ =
        std::make_unique<Scheduler>(group_[0].model.get(), group_[0].collectives.get(), &metrics_,
                                    SchedulerOptions{.max_num_seqs = shape_.max_num_seqs,
                                                     .max_seq_len = shape_.max_seq_len,
                                                     .vocab_size = shape_.vocab_size,
                                                     .idle_beat = absl::Milliseconds(50)});
    api_ = std::make_unique<EngineApi>(
        scheduler_.get(), &metrics_,
        ApiOptions{
            .model_name = "m", .max_seq_len = shape_.max_seq_len, .vocab_size = shape_.vocab_size},
        nlohmann::json{{"world_size", 1}});
    loop_ = std::thread([this] { loop_result_ = scheduler_->RunLeader(); });
  }

  void TearDown() override {
    scheduler_->Stop();
    loop_.join();
    EXPECT_TRUE(loop_result_.ok()) << loop_result_;
  }

  http::HttpResponse Post(const std::string& path, const nlohmann::json& body) {
    return api_->Handle({.method = "POST", .path = path, .body = body.dump()});
  }

  http::HttpResponse Get(const std::string& path) {
    return api_->Handle({.method = "GET", .path = path});
  }

  // The data lines of a streamed answer.
  static std::vector<std::string> Events(const http::HttpResponse& response) {
    std::string text;
    EXPECT_TRUE(response.stream);
    if (!response.stream) return {};
    response.stream([&text](absl::string_view piece) {
      text.append(piece.data(), piece.size());
      return true;
    });
    std::vector<std::string> events;
    for (absl::string_view block : absl::StrSplit(text, "\n\n", absl::SkipEmpty())) {
      EXPECT_TRUE(absl::StartsWith(block, "data: ")) << block;
      events.emplace_back(block.substr(6));
    }
    return events;
  }

  // A counter's or gauge's value in /metrics.
  double Metric(const std::string& name) {
    std::string text = Get("/metrics").body;
    std::string key = name + "{model_name=\"m\"} ";
    size_t at = text.find(key);
    EXPECT_NE(at, std::string::npos) << name;
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + key.size()));
  }

  ModelShape shape_ = SmallShape();
  Metrics metrics_{"m"};
  std::vector<testing::TestRank> group_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<EngineApi> api_;
  std::thread loop_;
  absl::Status loop_result_;
};

TEST_F(ApiTest, HealthAndModels) {
  // The loop may not have started yet; health turns 200 once it runs.
  EXPECT_TRUE(
      fleet::testing::Eventually(absl::Seconds(5), [&] { return Get("/health").status == 200; }));
  nlohmann::json models = nlohmann::json::parse(Get("/v1/models").body);
  EXPECT_EQ(models["data"][0]["id"], "m");
  EXPECT_EQ(models["data"][0]["max_model_len"], 64);
  EXPECT_EQ(nlohmann::json::parse(Get("/engine").body)["world_size"], 1);
}

TEST_F(ApiTest, CompletionIsDeterministicAndCountsTokens) {
  nlohmann::json request = {{"model", "m"}, {"prompt", "hello fleet"}, {"max_tokens", 7}};
  http::HttpResponse first = Post("/v1/completions", request);
  ASSERT_EQ(first.status, 200) << first.body;
  nlohmann::json answer = nlohmann::json::parse(first.body);
  EXPECT_EQ(answer["object"], "text_completion");
  const std::string text = answer["choices"][0]["text"];
  EXPECT_EQ(text.size(), 7u);
  for (char c : text) EXPECT_NE(kVocabulary.find(c), absl::string_view::npos);
  EXPECT_EQ(answer["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(answer["usage"]["prompt_tokens"], 11);
  EXPECT_EQ(answer["usage"]["completion_tokens"], 7);
  EXPECT_EQ(answer["usage"]["total_tokens"], 18);
  nlohmann::json again = nlohmann::json::parse(Post("/v1/completions", request).body);
  EXPECT_EQ(again["choices"][0]["text"], text);
}

TEST_F(ApiTest, StreamedCompletionEqualsTheWholeAnswer) {
  nlohmann::json request = {{"prompt", "stream me"}, {"max_tokens", 5}};
  const std::string whole =
      nlohmann::json::parse(Post("/v1/completions", request).body)["choices"][0]["text"];
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  http::HttpResponse streamed = Post("/v1/completions", request);
  EXPECT_EQ(streamed.content_type, "text/event-stream");
  std::vector<std::string> events = Events(streamed);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    nlohmann::json chunk = nlohmann::json::parse(events[i]);
    if (chunk["choices"].empty()) {
      EXPECT_EQ(chunk["usage"]["completion_tokens"], 5);
      continue;
    }
    text += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null())
      finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, whole);
  EXPECT_EQ(finish, "length");
}

TEST_F(ApiTest, ChatCompletionWithAndWithoutStreaming) {
  nlohmann::json request = {{"messages", {{{"role", "user"}, {"content", "Say something"}}}},
                            {"max_completion_tokens", 4}};
  http::HttpResponse whole = Post("/v1/chat/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.body;
  nlohmann::json answer = nlohmann::json::parse(whole.body);
  EXPECT_EQ(answer["object"], "chat.completion");
  EXPECT_EQ(answer["choices"][0]["message"]["role"], "assistant");
  const std::string content = answer["choices"][0]["message"]["content"];
  EXPECT_EQ(content.size(), 4u);

  request["stream"] = true;
  std::vector<std::string> events = Events(Post("/v1/chat/completions", request));
  ASSERT_GE(events.size(), 3u);
  nlohmann::json first = nlohmann::json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string streamed;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    nlohmann::json delta = nlohmann::json::parse(events[i])["choices"][0]["delta"];
    if (delta.contains("content")) streamed += delta["content"].get<std::string>();
  }
  EXPECT_EQ(streamed, content);
}

TEST_F(ApiTest, BadRequestsNameTheProblem) {
  EXPECT_EQ(api_->Handle({.method = "POST", .path = "/v1/completions", .body = "{not json"}).status,
            400);
  http::HttpResponse long_prompt =
      Post("/v1/completions", {{"prompt", std::string(60, 'a')}, {"max_tokens", 10}});
  EXPECT_EQ(long_prompt.status, 400);
  EXPECT_THAT(long_prompt.body, HasSubstr("context of 64 tokens"));
  EXPECT_EQ(Post("/v1/completions", {{"model", "gpt-4"}, {"prompt", "x"}}).status, 404);
  EXPECT_EQ(Post("/v1/completions", {{"prompt", "x"}, {"n", 2}}).status, 400);
  EXPECT_EQ(Post("/v1/completions", {{"prompt", {"a", "b"}}}).status, 400);
  EXPECT_EQ(Post("/v1/chat/completions", {{"messages", nlohmann::json::array()}}).status, 400);
  EXPECT_EQ(Get("/v1/completions").status, 405);
  EXPECT_EQ(Get("/nowhere").status, 404);
}

TEST_F(ApiTest, MaxTokensIsRangeCheckedBeforeNarrowing) {
  // 1000000000000 wraps to -727379968 as an int; the error must name the number sent.
  for (const nlohmann::json& value :
       {nlohmann::json(1000000000000), nlohmann::json(0), nlohmann::json(-1),
        nlohmann::json(UINT64_MAX), nlohmann::json(65), nlohmann::json(2.5)}) {
    http::HttpResponse response = Post("/v1/completions", {{"prompt", "x"}, {"max_tokens", value}});
    EXPECT_EQ(response.status, 400) << value;
    EXPECT_THAT(response.body, HasSubstr("must be an integer from 1 to 64"));
    EXPECT_THAT(response.body, HasSubstr("not " + value.dump()));
  }
  EXPECT_EQ(Post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "x"}}}},
                                          {"max_completion_tokens", 1000000000000}})
                .status,
            400);
}

// The scheduler's full queue reaches the client as 429 with Retry-After. No leader runs, so the
// first request stays queued.
TEST(ApiQueueTest, FullQueueIs429WithRetryAfter) {
  const ModelShape shape = SmallShape();
  std::vector<testing::TestRank> group = MakeGroup(1, shape);
  Metrics metrics("m");
  Scheduler scheduler(group[0].model.get(), group[0].collectives.get(), &metrics,
                      {.max_num_seqs = shape.max_num_seqs,
                       .max_seq_len = shape.max_seq_len,
                       .vocab_size = shape.vocab_size,
                       .max_waiting = 1});
  EngineApi api(&scheduler, &metrics, {.model_name = "m", .max_seq_len = shape.max_seq_len},
                nlohmann::json::object());
  const std::string body = R"({"prompt":"x","max_tokens":2,"stream":true})";
  http::HttpResponse queued =
      api.Handle({.method = "POST", .path = "/v1/completions", .body = body});
  EXPECT_EQ(queued.status, 200);
  http::HttpResponse refused =
      api.Handle({.method = "POST", .path = "/v1/completions", .body = body});
  EXPECT_EQ(refused.status, 429);
  EXPECT_THAT(refused.headers,
              ::testing::Contains(std::pair<std::string, std::string>("Retry-After", "1")));
  EXPECT_THAT(refused.body, HasSubstr("already waiting"));
}

TEST_F(ApiTest, MetricsMoveUnderLoad) {
  EXPECT_EQ(Metric("vllm:generation_tokens_total"), 0);
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([this, i] {
      EXPECT_EQ(
          Post("/v1/completions", {{"prompt", std::string(3 + i, 'q')}, {"max_tokens", 5}}).status,
          200);
    });
  }
  for (auto& client : clients) client.join();
  EXPECT_EQ(Metric("vllm:generation_tokens_total"), 30);
  EXPECT_EQ(Metric("vllm:prompt_tokens_total"), 3 + 4 + 5 + 6 + 7 + 8);
  EXPECT_EQ(Metric("vllm:time_to_first_token_seconds_count"), 6);
  EXPECT_EQ(Metric("vllm:inter_token_latency_seconds_count"), 6 * 4);
  EXPECT_EQ(Metric("vllm:num_requests_running"), 0);
  EXPECT_EQ(Metric("vllm:num_requests_waiting"), 0);
  const std::string text = Get("/metrics").body;
  EXPECT_THAT(
      text, HasSubstr("vllm:request_success_total{model_name=\"m\",finished_reason=\"length\"} 6"));
  EXPECT_THAT(text, HasSubstr("# TYPE vllm:kv_cache_usage_perc gauge"));
}

TEST_F(ApiTest, HealthFailsOnceStopped) {
  scheduler_->Stop();
  loop_.join();
  loop_ = std::thread([] {});
  EXPECT_EQ(Get("/health").status, 503);
  EXPECT_EQ(Post("/v1/completions", {{"prompt", "x"}}).status, 503);
}

}  // namespace
}  // namespace fleet::native
