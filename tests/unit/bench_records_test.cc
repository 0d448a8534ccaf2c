// BenchRecords and the drop rule of `fleet bench history`, on FakeStore and a fake clock.
#include "controller/bench/bench_records.h"

#include "common/fake_clock.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::Group MakeGroup(const std::string& name, const std::string& fingerprint, uint64_t gen) {
  v1::Group g;
  g.set_name(name);
  g.set_application(name);
  g.set_recipe_name("ds4-flash");
  g.set_fingerprint(fingerprint);
  g.set_generation(gen);
  return g;
}

// One row (pp 2048, tg 128, depth, concurrency) with these means.
v1::BenchRun Measured(uint32_t depth, uint32_t concurrency, double pp_tps, double tg_tps,
                      double tg_total) {
  v1::BenchRun run;
  run.set_model("ds4");
  v1::BenchRow& row = *run.add_rows();
  row.set_pp(2048);
  row.set_tg(128);
  row.set_depth(depth);
  row.set_concurrency(concurrency);
  row.set_runs(3);
  row.mutable_pp_tps()->set_mean(pp_tps);
  row.mutable_tg_tps()->set_mean(tg_tps);
  row.mutable_tg_tps_total()->set_mean(tg_total);
  return run;
}

class BenchRecordsTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  FakeStore store_;
  BenchRecords records_{&clock_, &store_};
};

TEST_F(BenchRecordsTest, TheGroupsRevisionIsRecordedNotTheCallers) {
  v1::BenchRun measured = Measured(0, 1, 2000, 50, 50);
  measured.set_revision("forged");
  measured.set_group("someone-else");
  absl::StatusOr<v1::BenchRun> stored =
      records_.Record(MakeGroup("ds4", "aaaabbbbccccdddd", 3), measured);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->group(), "ds4");
  EXPECT_EQ(stored->application(), "ds4");
  EXPECT_EQ(stored->recipe_name(), "ds4-flash");
  EXPECT_EQ(stored->revision(), "aaaabbbbccccdddd");
  EXPECT_EQ(stored->generation(), 3u);
  EXPECT_EQ(stored->at().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_GT(stored->id(), 0);
  EXPECT_THAT(stored->drops(), IsEmpty());  // nothing to compare with yet
}

TEST_F(BenchRecordsTest, AFigureMoreThanTenPercentBelowThePreviousRunIsADrop) {
  ASSERT_TRUE(
      records_.Record(MakeGroup("ds4", "aaaabbbbccccdddd", 1), Measured(4096, 4, 2000, 12, 48))
          .ok());
  clock_.Advance(absl::Minutes(5));
  // Decode per request 12 -> 11 (-8.3%): kept; total 48 -> 40 (-16.7%): a drop.
  absl::StatusOr<v1::BenchRun> stored =
      records_.Record(MakeGroup("ds4", "eeeeffff00001111", 1), Measured(4096, 4, 1900, 11, 40));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_THAT(stored->drops(),
              ElementsAre("d4096 c4: tg_tps_total 48.00 -> 40.00 (-16.7%) against run 1 "
                          "(revision aaaabbbbcccc)"));
  // A faster run afterwards is compared with the slow one, not the best one.
  stored =
      records_.Record(MakeGroup("ds4", "eeeeffff00001111", 2), Measured(4096, 4, 1900, 11, 41));
  ASSERT_TRUE(stored.ok());
  EXPECT_THAT(stored->drops(), IsEmpty());
}

TEST_F(BenchRecordsTest, OnlyTheSameRowOfTheSameGroupIsCompared) {
  ASSERT_TRUE(records_.Record(MakeGroup("ds4-0", "aaaa", 1), Measured(0, 1, 2000, 50, 50)).ok());
  // Another replica's slower run, and a row at another concurrency: no drop.
  absl::StatusOr<v1::BenchRun> other =
      records_.Record(MakeGroup("ds4-1", "aaaa", 1), Measured(0, 1, 1000, 20, 20));
  ASSERT_TRUE(other.ok());
  EXPECT_THAT(other->drops(), IsEmpty());
  absl::StatusOr<v1::BenchRun> conc =
      records_.Record(MakeGroup("ds4-0", "aaaa", 1), Measured(0, 2, 1000, 20, 20));
  ASSERT_TRUE(conc.ok());
  EXPECT_THAT(conc->drops(), IsEmpty());
  // A row with no successful run has no figure to compare.
  v1::BenchRun failed = Measured(0, 2, 0, 0, 0);
  failed.mutable_rows(0)->set_runs(0);
  absl::StatusOr<v1::BenchRun> none = records_.Record(MakeGroup("ds4-0", "aaaa", 1), failed);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(none->drops(), IsEmpty());
}

TEST_F(BenchRecordsTest, HistoryShowsTheDropsOfTheOldestRunShownToo) {
  for (double total : {50.0, 30.0, 29.0}) {
    ASSERT_TRUE(
        records_.Record(MakeGroup("ds4", "aaaa", 1), Measured(0, 1, 2000, total, total)).ok());
  }
  absl::StatusOr<std::vector<v1::BenchRun>> last_two = records_.History("ds4", 2);
  ASSERT_TRUE(last_two.ok()) << last_two.status();
  ASSERT_EQ(last_two->size(), 2u);
  EXPECT_EQ((*last_two)[0].id(), 2);
  // Run 2 fell against run 1, which is not shown; run 3 against run 2 by less than 10%.
  EXPECT_THAT((*last_two)[0].drops(),
              ElementsAre(HasSubstr("tg_tps 50.00 -> 30.00 (-40.0%) against run 1"),
                          HasSubstr("tg_tps_total 50.00 -> 30.00 (-40.0%) against run 1")));
  EXPECT_THAT((*last_two)[1].drops(), IsEmpty());
}

TEST_F(BenchRecordsTest, NoResultsIsNotFoundWithTheCommandToRun) {
  absl::StatusOr<std::vector<v1::BenchRun>> none = records_.History("ds4", 20);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("run `fleet bench ds4`"));
}

TEST_F(BenchRecordsTest, AStoreThatFailsIsAnError) {
  store_.FailWrites(absl::UnavailableError("disk full"));
  absl::StatusOr<v1::BenchRun> stored =
      records_.Record(MakeGroup("ds4", "aaaa", 1), Measured(0, 1, 2000, 50, 50));
  EXPECT_EQ(stored.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fleet::controller
