// `fleet bench history`'s table and JSON, and a sweep's round trip through its stored form.
#include "cli/bench/history.h"
#include "cli/bench/report.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::cli {
namespace {

using ::testing::HasSubstr;

bench::BenchReport Report() {
  bench::BenchReport report{.model = "ds4", .counted_by = "tokenize"};
  report.rows.push_back(bench::Row{.pp = 2048,
                                   .tg = 128,
                                   .depth = 4096,
                                   .concurrency = 4,
                                   .runs = 3,
                                   .ttft_s = {0.5, 0.01},
                                   .pp_tps = {4096, 80},
                                   .tg_tps = {12.5, 0.5},
                                   .tg_tps_total = {48, 1},
                                   .e2e_s = {10.7, 0.2}});
  report.rows.push_back(bench::Row{.pp = 2048,
                                   .tg = 128,
                                   .depth = 8192,
                                   .concurrency = 4,
                                   .runs = 0,
                                   .errors = {"run 1: HTTP 429"}});
  return report;
}

TEST(BenchHistoryTest, ASweepSurvivesItsStoredForm) {
  const bench::BenchReport report = Report();
  v1::BenchRun run = ToBenchRun(report, "http://10.0.0.2:8000");
  EXPECT_EQ(run.endpoint(), "http://10.0.0.2:8000");
  // What `fleet bench -o json` printed is what the history prints for the same run.
  EXPECT_EQ(bench::ReportJson(FromBenchRun(run)).dump(), bench::ReportJson(report).dump());
}

TEST(BenchHistoryTest, TableAndJsonCarryRevisionRowsErrorsAndDrops) {
  v1::BenchRun run = ToBenchRun(Report(), "http://10.0.0.2:8000");
  run.set_id(7);
  run.set_group("ds4");
  run.set_application("ds4");
  run.set_revision("0123456789abcdef0123");
  run.set_generation(2);
  run.mutable_at()->set_seconds(1'800'000'000);
  run.add_drops("d4096 c4: tg_tps_total 60.00 -> 48.00 (-20.0%) against run 6 (revision aa)");
  const std::string table = RenderBenchHistory({run});
  EXPECT_THAT(table, HasSubstr("0123456789ab "));
  EXPECT_THAT(table, HasSubstr("48.00"));
  EXPECT_THAT(table, HasSubstr("run 7 d8192 c4: run 1: HTTP 429"));
  EXPECT_THAT(table, HasSubstr("DROP run 7 d4096 c4: tg_tps_total 60.00 -> 48.00"));
  nlohmann::ordered_json doc = BenchHistoryJson({run});
  EXPECT_EQ(doc["kind"], "BenchHistory");
  const nlohmann::ordered_json& r = doc["runs"][0];
  EXPECT_EQ(r["id"], 7);
  EXPECT_EQ(r["revision"], "0123456789abcdef0123");
  EXPECT_EQ(r["at"], "2027-01-15T08:00:00Z");
  EXPECT_EQ(r["rows"][0]["tg_tps_total"], 48);
  EXPECT_TRUE(r["rows"][1]["tg_tps_total"].is_null());
  EXPECT_EQ(r["drops"].size(), 1u);
}

}  // namespace
}  // namespace fleet::cli
