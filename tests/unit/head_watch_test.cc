// HeadWatchJudge: when the agent stops a Ready head (failed /health in a row, requests running
// without tokens, an idle head that does not answer one token), on made-up times.
#include "agent/shards/head_watch.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;

const absl::Time kReady = absl::FromUnixSeconds(1'800'000'000);

absl::Time At(int seconds) { return kReady + absl::Seconds(seconds); }

v1::HeadWatch Watch() {
  v1::HeadWatch w;
  w.mutable_period()->set_seconds(5);
  w.set_failure_threshold(3);
  w.set_metrics_path("/metrics");
  w.mutable_stall_timeout()->set_seconds(120);
  w.mutable_idle_probe_after()->set_seconds(30);
  w.mutable_idle_probe_timeout()->set_seconds(30);
  return w;
}

TEST(ParseHeadMetricsTest, ReadsTheQueueAndTheKvCacheWhereServed) {
  std::optional<HeadMetrics> m = ParseHeadMetrics(
      "vllm:num_requests_running{engine=\"0\"} 2\n"
      "vllm:generation_tokens_total{engine=\"0\"} 10\n"
      "vllm:num_requests_waiting{engine=\"0\"} 4\n"
      "vllm:num_requests_waiting{engine=\"1\"} 1\n"
      "vllm:kv_cache_usage_perc{engine=\"0\"} 0.25\n"
      "vllm:kv_cache_usage_perc{engine=\"1\"} 0.75\n");
  ASSERT_TRUE(m.has_value());
  EXPECT_THAT(m->waiting, Optional(5.0));
  EXPECT_THAT(m->kv_cache_usage, Optional(0.75));  // the fullest engine's
  std::optional<HeadMetrics> old = ParseHeadMetrics(
      "vllm:num_requests_running 0\nvllm:generation_tokens_total 1\n"
      "vllm:gpu_cache_usage_perc 0.5\n");
  ASSERT_TRUE(old.has_value());
  EXPECT_THAT(old->kv_cache_usage, Optional(0.5));
  EXPECT_FALSE(old->waiting.has_value());
}

TEST(EngineFiguresTest, TheTokenRateNeedsTwoReadsAndACounterThatDidNotGoDown) {
  HeadMetrics first{.running = 2, .generated = 1000, .waiting = 1, .kv_cache_usage = 0.4};
  v1::EngineFigures f = EngineFiguresOf(first, At(0), std::nullopt, absl::InfinitePast());
  EXPECT_FALSE(f.has_tokens_per_second());
  EXPECT_EQ(f.requests_running(), 2);
  EXPECT_EQ(f.requests_waiting(), 1);
  EXPECT_EQ(f.kv_cache_usage(), 0.4);

  HeadMetrics second{.running = 2, .generated = 1500};
  f = EngineFiguresOf(second, At(5), first, At(0));
  EXPECT_DOUBLE_EQ(f.tokens_per_second(), 100);
  EXPECT_FALSE(f.has_requests_waiting());  // not served: unknown, not 0

  HeadMetrics restarted{.running = 0, .generated = 20};
  EXPECT_FALSE(EngineFiguresOf(restarted, At(10), second, At(5)).has_tokens_per_second());
}

TEST(ParseHeadMetricsTest, SumsVllmSeriesOverLabelsAndNeedsBoth) {
  std::optional<HeadMetrics> m = ParseHeadMetrics(
      "# HELP vllm:num_requests_running Number of requests.\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{model_name=\"ds4\",engine=\"0\"} 2.0\n"
      "vllm:num_requests_running{model_name=\"ds4\",engine=\"1\"} 1.0\n"
      "vllm:generation_tokens_total{model_name=\"ds4\"} 12345.0\n"
      "vllm:generation_tokens_total_created{model_name=\"ds4\"} 1.7e9\n"
      "vllm:num_requests_waiting{model_name=\"ds4\"} 7.0\n");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->running, 3);
  EXPECT_EQ(m->generated, 12345);
  EXPECT_FALSE(ParseHeadMetrics("vllm:num_requests_running 1\n").has_value());
  EXPECT_FALSE(ParseHeadMetrics("llamacpp:requests_processing 1\n").has_value());
  std::optional<HeadMetrics> llama =
      ParseHeadMetrics("llamacpp:requests_processing 1\nllamacpp:tokens_predicted_total 77\n");
  ASSERT_TRUE(llama.has_value());
  EXPECT_EQ(llama->running, 1);
  EXPECT_EQ(llama->generated, 77);
  EXPECT_FALSE(ParseHeadMetrics("<html>not metrics</html>").has_value());
}

TEST(HeadWatchJudgeTest, HealthMustFailThresholdTimesInARow) {
  HeadWatchJudge judge(Watch(), kReady);
  const absl::Status down = absl::UnavailableError("GET http://10.0.0.2:8000/health: HTTP 503");
  EXPECT_EQ(judge.Observe(At(5), down, std::nullopt), std::nullopt);
  EXPECT_EQ(judge.Observe(At(10), down, std::nullopt), std::nullopt);
  EXPECT_EQ(judge.Observe(At(15), absl::OkStatus(), std::nullopt), std::nullopt);  // resets
  EXPECT_EQ(judge.Observe(At(20), down, std::nullopt), std::nullopt);
  EXPECT_EQ(judge.Observe(At(25), down, std::nullopt), std::nullopt);
  EXPECT_THAT(judge.Observe(At(30), down, std::nullopt),
              Optional(AllOf(HasSubstr("failed its health check 3 times in a row (every 5s"),
                             HasSubstr("HTTP 503"))));
}

TEST(HeadWatchJudgeTest, RequestsRunningWithoutTokensForTheStallTimeoutIsAWedge) {
  HeadWatchJudge judge(Watch(), kReady);
  // Idle for ten minutes: no request, no token; not a stall.
  EXPECT_EQ(judge.Observe(At(600), absl::OkStatus(), HeadMetrics{0, 500}), std::nullopt);
  // A request arrives: the stall clock starts now, not at the last token ten minutes ago.
  EXPECT_EQ(judge.Observe(At(605), absl::OkStatus(), HeadMetrics{1, 500}), std::nullopt);
  EXPECT_EQ(judge.Observe(At(700), absl::OkStatus(), HeadMetrics{1, 640}), std::nullopt);
  EXPECT_EQ(judge.Observe(At(815), absl::OkStatus(), HeadMetrics{2, 640}), std::nullopt);
  EXPECT_THAT(judge.Observe(At(820), absl::OkStatus(), HeadMetrics{2, 640}),
              Optional(AllOf(HasSubstr("2 request(s) running but no token generated for 2m"),
                             HasSubstr("stayed at 640"), HasSubstr("health.stall_timeout 2m"))));
}

TEST(HeadWatchJudgeTest, ACounterThatWentDownIsAFreshStartNotAStall) {
  HeadWatchJudge judge(Watch(), kReady);
  EXPECT_EQ(judge.Observe(At(5), absl::OkStatus(), HeadMetrics{1, 900}), std::nullopt);
  EXPECT_EQ(judge.Observe(At(100), absl::OkStatus(), HeadMetrics{1, 3}), std::nullopt);
  EXPECT_EQ(judge.Observe(At(200), absl::OkStatus(), HeadMetrics{1, 3}), std::nullopt);
  EXPECT_NE(judge.Observe(At(220), absl::OkStatus(), HeadMetrics{1, 3}), std::nullopt);
}

TEST(HeadWatchJudgeTest, AnIdleHeadIsAskedForOneTokenAndFailsWhenItDoesNotAnswer) {
  HeadWatchJudge judge(Watch(), kReady);
  EXPECT_EQ(judge.Observe(At(25), absl::OkStatus(), HeadMetrics{0, 10}), std::nullopt);
  EXPECT_FALSE(judge.WantsCompletion(At(25)));
  EXPECT_EQ(judge.Observe(At(30), absl::OkStatus(), HeadMetrics{0, 10}), std::nullopt);
  EXPECT_TRUE(judge.WantsCompletion(At(30)));
  EXPECT_EQ(judge.ObserveCompletion(At(31), absl::OkStatus()), std::nullopt);
  EXPECT_FALSE(judge.WantsCompletion(At(35)));
  // Tokens keep coming: no probe needed.
  EXPECT_EQ(judge.Observe(At(60), absl::OkStatus(), HeadMetrics{0, 11}), std::nullopt);
  EXPECT_FALSE(judge.WantsCompletion(At(65)));
  EXPECT_TRUE(judge.WantsCompletion(At(90)));
  EXPECT_THAT(judge.ObserveCompletion(
                  At(120), absl::UnavailableError("POST http://10.0.0.2:8000/v1/completions: "
                                                  "Timeout was reached")),
              Optional(AllOf(HasSubstr("no token generated for 30s"),
                             HasSubstr("failed within 30s (health.idle_probe_timeout)"),
                             HasSubstr("Timeout was reached"))));
}

TEST(HeadWatchJudgeTest, SubSecondPeriodsAreShownInMilliseconds) {
  v1::HeadWatch w = Watch();
  w.mutable_period()->set_seconds(0);
  w.mutable_period()->set_nanos(300'000'000);
  w.set_failure_threshold(1);
  HeadWatchJudge judge(w, kReady);
  EXPECT_THAT(judge.Observe(At(1), absl::UnavailableError("HTTP 503"), std::nullopt),
              Optional(HasSubstr("1 times in a row (every 300ms")));
}

TEST(HeadWatchJudgeTest, RunningRequestsFallUnderTheStallRuleNotTheIdleProbe) {
  HeadWatchJudge judge(Watch(), kReady);
  EXPECT_EQ(judge.Observe(At(40), absl::OkStatus(), HeadMetrics{1, 10}), std::nullopt);
  EXPECT_FALSE(judge.WantsCompletion(At(40)));
}

TEST(HeadWatchJudgeTest, WithoutMetricsTheIdleProbeRunsEveryIdlePeriod) {
  HeadWatchJudge judge(Watch(), kReady);
  EXPECT_EQ(judge.Observe(At(30), absl::OkStatus(), std::nullopt), std::nullopt);
  EXPECT_TRUE(judge.WantsCompletion(At(30)));
  EXPECT_EQ(judge.ObserveCompletion(At(30), absl::OkStatus()), std::nullopt);
  EXPECT_FALSE(judge.WantsCompletion(At(55)));
  EXPECT_TRUE(judge.WantsCompletion(At(60)));
}

}  // namespace
}  // namespace fleet::agent
