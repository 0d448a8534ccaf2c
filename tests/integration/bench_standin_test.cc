// `fleet bench`'s sweep over real HTTP (libcurl) against a stand-in server of fixed timings on
// loopback: figures within 10% of the stand-in's, prompt token counts exact, concurrent decode
// adding up, failures reported in their own rows, Ctrl-C returning what was measured.
#include "tests/support/bench_standin/bench_standin.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/str_join.h"
#include "cli/bench/curl_transport.h"
#include "cli/bench/report.h"
#include "cli/bench/runner.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::cli::bench {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// Long enough against a loaded 2-core machine's scheduling noise (a few ms) to hold 10%.
constexpr standin::BenchStandinOptions kTimings = {
    .first_token = absl::Milliseconds(100), .prefill_tps = 2000, .decode_tps = 100};

TransportFactory Curl(const std::atomic<bool>* cancel = nullptr) {
  return [cancel]() -> absl::StatusOr<std::unique_ptr<BenchTransport>> {
    absl::StatusOr<std::unique_ptr<CurlBenchTransport>> t = CurlBenchTransport::Create(cancel);
    if (!t.ok()) return t.status();
    return std::unique_ptr<BenchTransport>(*std::move(t));
  };
}

BenchOptions Small(const standin::BenchStandin& server) {
  return {.base_url = server.url(),
          .pp = 256,
          .tg = 32,
          .depths = {0, 512},
          .concurrency = {1, 2},
          .runs = 2,
          .request_timeout = absl::Seconds(20),
          .deadline = absl::Minutes(2)};
}

void ExpectWithin10Percent(double measured, double expected, const std::string& what) {
  EXPECT_NEAR(measured, expected, 0.1 * expected) << what;
}

void ExpectFiguresOfTheStandin(const BenchReport& report) {
  ASSERT_THAT(report.rows, SizeIs(4)) << RenderTable(report);
  // Only the measured prompt is prefilled: the context is in the stand-in's cache.
  const double ttft = absl::ToDoubleSeconds(kTimings.first_token) + 256 / kTimings.prefill_tps;
  for (const Row& row : report.rows) {
    const std::string name = absl::StrCat("d", row.depth, " c", row.concurrency);
    EXPECT_THAT(row.errors, SizeIs(0)) << name << ": " << absl::StrJoin(row.errors, "; ");
    EXPECT_EQ(row.runs, 2) << name;
    EXPECT_EQ(row.pp, 256) << name;
    EXPECT_TRUE(row.depth == 0 || row.depth == 512) << name;
    ExpectWithin10Percent(row.ttft_s.mean, ttft, name + " ttft");
    ExpectWithin10Percent(row.pp_tps.mean, 256 / ttft, name + " prefill t/s");
    ExpectWithin10Percent(row.tg_tps.mean, kTimings.decode_tps, name + " decode t/s");
    ExpectWithin10Percent(row.tg_tps_total.mean, row.concurrency * kTimings.decode_tps,
                          name + " total decode t/s");
    ExpectWithin10Percent(row.e2e_s.mean, ttft + 31 / kTimings.decode_tps, name + " e2e");
  }
}

TEST(BenchStandinTest, FiguresMatchTheStandinWithItsTokenizer) {
  absl::StatusOr<std::unique_ptr<standin::BenchStandin>> server =
      standin::BenchStandin::Start(kTimings);
  ASSERT_TRUE(server.ok()) << server.status();
  BenchRunner runner(Small(**server), Curl(), *RealClock::Get(), nullptr);
  absl::StatusOr<BenchReport> report = runner.Run(nullptr);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->model, "standin-model");
  EXPECT_EQ(report->counted_by, "tokenize");
  ExpectFiguresOfTheStandin(*report);
  // Every prompt the stand-in was sent was exactly pp, depth, or depth + pp tokens.
  EXPECT_THAT((*server)->prompt_tokens(), Each(testing::AnyOf(256, 512, 768)));
}

TEST(BenchStandinTest, WithoutTokenizeUsageCalibrationStillGivesExactCounts) {
  standin::BenchStandinOptions timings = kTimings;
  timings.tokenize = false;
  absl::StatusOr<std::unique_ptr<standin::BenchStandin>> server =
      standin::BenchStandin::Start(timings);
  ASSERT_TRUE(server.ok()) << server.status();
  BenchRunner runner(Small(**server), Curl(), *RealClock::Get(), nullptr);
  absl::StatusOr<BenchReport> report = runner.Run(nullptr);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->counted_by, "usage");
  ExpectFiguresOfTheStandin(*report);
  // Calibration sent prompts of other sizes; the 2 runs x (1 + 2) requests of each depth were
  // exact.
  std::vector<int> seen = (*server)->prompt_tokens();
  EXPECT_GE(std::count(seen.begin(), seen.end(), 256), 6);
  EXPECT_GE(std::count(seen.begin(), seen.end(), 768), 6);
}

TEST(BenchStandinTest, FailuresAreReportedInTheirOwnRows) {
  standin::BenchStandinOptions timings = kTimings;
  timings.max_concurrent = 1;  // the second of two requests at once gets 429
  absl::StatusOr<std::unique_ptr<standin::BenchStandin>> server =
      standin::BenchStandin::Start(timings);
  ASSERT_TRUE(server.ok()) << server.status();
  BenchOptions options = Small(**server);
  options.depths = {0};
  BenchRunner runner(options, Curl(), *RealClock::Get(), nullptr);
  absl::StatusOr<BenchReport> report = runner.Run(nullptr);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_THAT(report->rows, SizeIs(2));
  EXPECT_EQ(report->rows[0].runs, 2);
  EXPECT_THAT(report->rows[0].errors, SizeIs(0));
  EXPECT_EQ(report->rows[1].runs, 0);
  EXPECT_THAT(report->rows[1].errors, AllOf(SizeIs(2), Each(HasSubstr("HTTP 429"))));
  EXPECT_THAT(RenderTable(*report), HasSubstr("error: pp256 tg32 d0 c2 run 1: "));

  timings = kTimings;
  timings.max_completion = 10;  // an EOS after 10 tokens of the 32 asked
  server = standin::BenchStandin::Start(timings);
  ASSERT_TRUE(server.ok()) << server.status();
  options = Small(**server);
  options.depths = {0};
  options.concurrency = {1};
  BenchRunner short_runner(options, Curl(), *RealClock::Get(), nullptr);
  report = short_runner.Run(nullptr);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_THAT(report->rows, SizeIs(1));
  EXPECT_EQ(report->rows[0].runs, 0);
  EXPECT_THAT(report->rows[0].errors, Each(HasSubstr("asked for 32 tokens, got 10")));
}

TEST(BenchStandinTest, CancelReturnsTheRowsMeasuredSoFar) {
  absl::StatusOr<std::unique_ptr<standin::BenchStandin>> server =
      standin::BenchStandin::Start(kTimings);
  ASSERT_TRUE(server.ok()) << server.status();
  std::atomic<bool> stop{false};
  BenchRunner runner(Small(**server), Curl(&stop), *RealClock::Get(), &stop);
  // Ctrl-C once the first row's runs are done (as the signal handler would set it).
  absl::StatusOr<BenchReport> report = runner.Run([&](const BenchProgress& p) {
    if (p.done == 2) stop = true;
  });
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->stopped, "interrupted (Ctrl-C)");
  ASSERT_THAT(report->rows, SizeIs(1));
  EXPECT_EQ(report->rows[0].runs, 2);
  EXPECT_THAT(RenderTable(*report), HasSubstr("stopped early: interrupted (Ctrl-C)"));
}

}  // namespace
}  // namespace fleet::cli::bench
