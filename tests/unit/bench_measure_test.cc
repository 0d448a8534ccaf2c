// fleet bench's measuring core: events timed on a fake clock through a fake transport give
// exact figures; failures stay in their rows; prompts meet their token count exactly.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/bench/fake_transport.h"
#include "cli/bench/measure.h"
#include "cli/bench/prompt.h"
#include "cli/bench/report.h"
#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::cli::bench {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Token(const std::string& text) {
  return absl::StrCat("data: {\"choices\":[{\"index\":0,\"text\":\"", text, "\"}]}\n\n");
}
std::string Usage(int prompt, int completion) {
  return absl::StrCat("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":", prompt,
                      ",\"completion_tokens\":", completion, "}}\n\ndata: [DONE]\n\n");
}

TEST(SseParserTest, PayloadsSurviveAnyCutOfTheBytes) {
  const std::string stream = Token("a") + "event: x\n" + Token("b") + Usage(3, 2);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseParser parser;
    std::vector<std::string> out;
    parser.Feed(stream.substr(0, cut), out);
    parser.Feed(stream.substr(cut), out);
    ASSERT_EQ(out.size(), 4u) << "cut at " << cut;
    EXPECT_EQ(out[3], "[DONE]");
    EXPECT_THAT(out[0], HasSubstr("\"a\""));
  }
}

// A stream whose first token comes `ttft` after the request and then one token each `gap`.
std::vector<FakeBenchTransport::Step> Stream(absl::Duration ttft, absl::Duration gap, int tokens,
                                             int prompt_tokens) {
  std::vector<FakeBenchTransport::Step> steps = {{absl::ZeroDuration(),
                                                  "data: {\"choices\":[{"
                                                  "\"text\":\"\"}]}\n\n"}};
  for (int i = 0; i < tokens; ++i) steps.push_back({i == 0 ? ttft : gap, Token("x")});
  steps.push_back({absl::Milliseconds(5), Usage(prompt_tokens, tokens)});
  return steps;
}

TEST(RunStreamedTest, TimesTheFirstAndLastContentEvent) {
  FakeClock clock;
  FakeBenchTransport http(clock);
  http.SetStream(Stream(absl::Milliseconds(500), absl::Milliseconds(100), 5, 2048));
  const absl::Time start = clock.Now();
  RequestResult r = RunStreamed(http, clock, {.url = "u", .body = "{}", .max_tokens = 5});
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.start, start);
  EXPECT_EQ(*r.first_token, start + absl::Milliseconds(500));
  EXPECT_EQ(*r.last_token, start + absl::Milliseconds(900));
  EXPECT_EQ(r.end, start + absl::Milliseconds(905));
  EXPECT_EQ(r.completion_tokens, 5);
  EXPECT_EQ(r.prompt_tokens, 2048);
}

TEST(RunStreamedTest, FewerTokensThanAskedIsAnError) {
  FakeClock clock;
  FakeBenchTransport http(clock);
  http.SetStream(Stream(absl::Milliseconds(10), absl::Milliseconds(10), 3, 100));
  RequestResult r = RunStreamed(http, clock, {.url = "u", .body = "{}", .max_tokens = 8});
  EXPECT_THAT(r.error, HasSubstr("asked for 8 tokens, got 3"));
}

TEST(RunStreamedTest, AnErrorEventStopsTheStreamAndIsKept) {
  FakeClock clock;
  FakeBenchTransport http(clock);
  http.SetStream({{absl::Milliseconds(10), Token("x")},
                  {absl::Milliseconds(10), "data: {\"error\":{\"message\":\"out of memory\"}}\n\n"},
                  {absl::Milliseconds(10), Token("never read")}});
  RequestResult r = RunStreamed(http, clock, {.url = "u", .body = "{}", .max_tokens = 8});
  EXPECT_THAT(r.error, HasSubstr("out of memory"));
}

TEST(RunStreamedTest, TransportFailuresAndMissingUsageAreErrors) {
  FakeClock clock;
  FakeBenchTransport http(clock);
  http.SetStream({}, absl::UnavailableError("POST u: HTTP 429: busy"));
  EXPECT_THAT(RunStreamed(http, clock, {.url = "u", .body = "{}", .max_tokens = 2}).error,
              HasSubstr("HTTP 429"));
  http.SetStream({{absl::Milliseconds(1), Token("a")}, {absl::Milliseconds(1), Token("b")}});
  EXPECT_THAT(RunStreamed(http, clock, {.url = "u", .body = "{}", .max_tokens = 2}).error,
              HasSubstr("no usage"));
}

RequestResult Timed(absl::Time t0, double ttft_s, double decode_s, int tokens, int prompt) {
  RequestResult r;
  r.start = t0;
  r.first_token = t0 + absl::Seconds(ttft_s);
  r.last_token = *r.first_token + absl::Seconds(decode_s);
  r.end = *r.last_token;
  r.completion_tokens = tokens;
  r.prompt_tokens = prompt;
  return r;
}

TEST(SummarizeTest, FiguresOfOneRequestPerRun) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  // pp 2048 beyond a depth of 4096 in 0.5 s and 1.5 s; 128 tokens, 127 of them in 1.27 s.
  std::vector<RunResult> runs = {
      {.requests = {Timed(t0, 0.5, 1.27, 128, 4096 + 2048)}, .confirmed_depth = 4096},
      {.requests = {Timed(t0, 1.5, 2.54, 128, 4096 + 2048)}, .confirmed_depth = 4096}};
  Row row = Summarize(2048, 128, 4096, 1, runs);
  EXPECT_EQ(row.runs, 2);
  EXPECT_EQ(row.pp, 2048);
  EXPECT_EQ(row.depth, 4096);
  EXPECT_DOUBLE_EQ(row.ttft_s.mean, 1.0);
  EXPECT_DOUBLE_EQ(row.ttft_s.sd, 0.5);
  EXPECT_DOUBLE_EQ(row.pp_tps.mean, (4096.0 + 2048.0 / 1.5) / 2);
  EXPECT_NEAR(row.tg_tps.mean, 75.0, 1e-9);  // 100 and 50
  EXPECT_NEAR(row.tg_tps.sd, 25.0, 1e-9);
  EXPECT_NEAR(row.e2e_s.mean, (1.77 + 4.04) / 2, 1e-9);
  EXPECT_TRUE(row.errors.empty());
}

TEST(SummarizeTest, TotalDecodeAddsConcurrentRequests) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  // Two requests decode 100 t/s each over the same second: 200 t/s in total.
  RequestResult a = Timed(t0, 0.2, 1.0, 101, 512);
  RequestResult b = Timed(t0, 0.2, 1.0, 101, 512);
  Row row = Summarize(512, 101, 0, 2, {{.requests = {a, b}}});
  EXPECT_NEAR(row.tg_tps.mean, 100.0, 1e-9);
  EXPECT_NEAR(row.tg_tps_total.mean, 200.0, 1e-9);
  // Staggered by half a second, their 200 tokens span 1.5 s.
  b = Timed(t0 + absl::Milliseconds(500), 0.2, 1.0, 101, 512);
  row = Summarize(512, 101, 0, 2, {{.requests = {a, b}}});
  EXPECT_NEAR(row.tg_tps_total.mean, 200.0 / 1.5, 1e-9);
}

TEST(SummarizeTest, AFailedRunIsListedAndLeftOutOfEveryFigure) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  RequestResult bad = Timed(t0, 9, 9, 3, 512);
  bad.error = "asked for 128 tokens, got 3";
  std::vector<RunResult> runs = {{.requests = {Timed(t0, 0.5, 1.27, 128, 512)}},
                                 {.requests = {bad}},
                                 {.error = "context load: HTTP 500"}};
  Row row = Summarize(512, 128, 0, 1, runs);
  EXPECT_EQ(row.runs, 1);
  EXPECT_DOUBLE_EQ(row.ttft_s.mean, 0.5);
  EXPECT_DOUBLE_EQ(row.ttft_s.sd, 0);
  EXPECT_THAT(row.errors,
              ElementsAre("run 2: asked for 128 tokens, got 3", "run 3: context load: HTTP 500"));
  Row none = Summarize(512, 128, 0, 1, {runs[1]});
  EXPECT_EQ(none.runs, 0);
  nlohmann::ordered_json doc = ReportJson({.rows = {none}});
  EXPECT_TRUE(doc["rows"][0]["tg_tps"].is_null());
}

TEST(ReportTest, JsonRowsHaveExactlyTheDocumentedFields) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  Row row = Summarize(2048, 128, 0, 1, {{.requests = {Timed(t0, 0.5, 1.27, 128, 2048)}}});
  nlohmann::ordered_json doc = ReportJson({.model = "m", .counted_by = "tokenize", .rows = {row}});
  std::vector<std::string> keys;
  for (const auto& [k, v] : doc["rows"][0].items()) keys.push_back(k);
  EXPECT_THAT(keys, ElementsAre("pp", "tg", "depth", "concurrency", "ttft_s", "pp_tps", "tg_tps",
                                "tg_tps_total", "e2e_s", "runs", "ttft_s_sd", "pp_tps_sd",
                                "tg_tps_sd", "tg_tps_total_sd", "e2e_s_sd", "errors"));
  EXPECT_DOUBLE_EQ(doc["rows"][0]["pp_tps"].get<double>(), 4096.0);
  const std::string table = RenderTable({.model = "m", .counted_by = "tokenize", .rows = {row}});
  EXPECT_THAT(table, HasSubstr("| m     | pp2048 | 1 | 4096.00 ± 0.00 |"));
  EXPECT_THAT(RenderSvg({.model = "m", .rows = {row}}), HasSubstr("depth 0"));
}

// A tokenizer where every word is one token, words of four or more letters two, plus a BOS.
absl::StatusOr<int> CountWords(const std::string& text, int* calls) {
  ++*calls;
  int tokens = 1;
  for (absl::string_view w : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    tokens += w.size() >= 4 ? 2 : 1;
  }
  return tokens;
}

TEST(BuildPromptTest, MeetsTheTargetExactlyWithAndWithoutAPrefix) {
  int calls = 0;
  TokenCounter count = [&](const std::string& t) { return CountWords(t, &calls); };
  for (int target : {2, 17, 2048, 4096}) {
    absl::StatusOr<BuiltPrompt> p = BuildPrompt(count, "", target, /*seed=*/target);
    ASSERT_TRUE(p.ok()) << target << ": " << p.status();
    EXPECT_EQ(*CountWords(p->text, &calls), target);
    absl::StatusOr<BuiltPrompt> q = BuildPrompt(count, p->text, target + 512, target + 1);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ(*CountWords(q->text, &calls), target + 512);
    EXPECT_TRUE(absl::StartsWith(q->text, p->text));
  }
  EXPECT_NE(FillerWords(1, 50), FillerWords(2, 50));
}

TEST(BuildPromptTest, MeetsTheTargetWithAByteLevelTokenizer) {
  // fleet-engine's demo: a token is a byte of text.
  TokenCounter bytes = [](const std::string& t) -> absl::StatusOr<int> {
    return static_cast<int>(t.size());
  };
  for (int target : {5, 128, 383}) {
    absl::StatusOr<BuiltPrompt> p = BuildPrompt(bytes, "", target, target);
    ASSERT_TRUE(p.ok()) << target << ": " << p.status();
    EXPECT_EQ(p->text.size(), static_cast<size_t>(target));
    // Reshuffled, the words keep their count and change their text.
    const std::string shuffled = ShuffleWords(p->filler, 99) + p->tail;
    EXPECT_EQ(shuffled.size(), static_cast<size_t>(target));
    if (p->words > 3) {
      EXPECT_NE(shuffled, p->text);
    }
  }
}

TEST(BuildPromptTest, ATargetBelowThePrefixIsRefused) {
  int calls = 0;
  TokenCounter count = [&](const std::string& t) { return CountWords(t, &calls); };
  EXPECT_EQ(BuildPrompt(count, FillerWords(1, 100), 10, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fleet::cli::bench
