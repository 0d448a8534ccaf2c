// RunNcclBenchGroup with a real GroupManager and NodeRegistry behind a fake agent client: the
// benchmark is applied as the fabric-nccl group on the named nodes in their order, rank 0's
// output is read once rank 0 has ended, and the group is stopped; a rank 0 that failed is an
// error with the end of its output. Label local: the runner polls the group on the real clock
// (every 200 ms), while the agents' reports are sent by the test.
#include "controller/groups/nccl_bench_group.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fake_clock.h"
#include "common/fake_executor.h"
#include "controller/groups/fake_agent_client.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;

constexpr char kTable[] =
    "# fleet-engine bench-collectives: all_reduce, 2 ranks, nccl 2.28.3\n"
    "     1048576        262144     float     sum      -1      41.20    25.45    25.45       0\n";

class NcclBenchGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 2; ++i) {
      v1::RegisterRequest r;
      r.mutable_identity()->set_node_id(absl::StrCat("id", i));
      r.mutable_identity()->set_name(absl::StrCat("spark-", i));
      r.set_advertise_address(absl::StrCat("10.0.0.", i, ":7101"));
      ASSERT_TRUE(registry_.Register(r).ok());
      registry_.SetReachability(absl::StrCat("id", i), absl::OkStatus());
      v1::NodeProbe probe;
      probe.mutable_limits()->set_memlock_soft(UINT64_MAX);
      probe.mutable_limits()->set_memlock_hard(UINT64_MAX);
      probe.mutable_limits()->set_shm_total_bytes(uint64_t{64} << 30);
      probe.mutable_gpu()->add_gpus()->set_name("NVIDIA GB10");
      agents_.SetProbe(absl::StrCat("10.0.0.", i, ":7101"), probe);
    }
  }

  // Runs the benchmark on another thread; the test plays the agents.
  void Start(std::vector<std::string> nodes) {
    runner_ = std::thread(
        [this, nodes] { result_ = RunNcclBenchGroup(groups_, nodes, absl::Seconds(20)); });
  }
  bool AwaitStarts(size_t n) {
    for (int i = 0; i < 200 && agents_.starts().size() < n; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return agents_.starts().size() >= n;
  }
  void RankEnded(const std::string& node_id, uint32_t rank, const std::string& exit) {
    google::protobuf::RepeatedPtrField<v1::ShardStatus> shards;
    v1::ShardStatus& s = *shards.Add();
    s.set_group(kNcclBenchGroup);
    s.set_generation(1);
    s.set_rank(rank);
    s.set_state(v1::SHARD_STATE_FAILED);
    s.set_exit(exit);
    groups_.ReportShards(node_id, shards);
  }

  FakeClock clock_;
  FakeStore store_;
  NodeRegistry registry_{RegistryConfig{}, &clock_, &store_};
  FakeAgentClient agents_;
  RendezvousStore rendezvous_{&clock_};
  FakeExecutor executor_;
  GroupManager groups_{GroupManagerConfig{}, &clock_,   &store_, &registry_, &agents_,
                       &rendezvous_,         &executor_};
  std::thread runner_;
  absl::StatusOr<std::string> result_ = absl::UnknownError("not run");
};

TEST_F(NcclBenchGroupTest, RunsAcrossTheNodesInOrderReadsRankZeroAndStops) {
  Start({"spark-2", "spark-1"});
  ASSERT_TRUE(AwaitStarts(2));
  const v1::StartShardRequest head = agents_.starts()[0].request;
  EXPECT_EQ(agents_.starts()[0].address, "10.0.0.2:7101");  // the first node named is rank 0
  EXPECT_EQ(head.spec().group(), kNcclBenchGroup);
  EXPECT_EQ(head.spec().rank(), 0u);
  EXPECT_THAT(absl::StrJoin(head.spec().argv(), " "),
              HasSubstr("fleet-engine bench-collectives --device cuda -b 1M -e 256M"));
  agents_.AppendLog("10.0.0.2:7101", kNcclBenchGroup, 0, kTable);
  RankEnded("id2", 0, "exited with status 0");
  runner_.join();
  ASSERT_TRUE(result_.ok()) << result_.status();
  EXPECT_THAT(*result_, HasSubstr("25.45"));
  EXPECT_FALSE(agents_.stops().empty());  // the group is stopped, its nodes free again
}

TEST_F(NcclBenchGroupTest, ARankZeroThatFailedIsAnErrorWithTheEndOfItsOutput) {
  Start({"spark-1", "spark-2"});
  ASSERT_TRUE(AwaitStarts(2));
  agents_.AppendLog("10.0.0.1:7101", kNcclBenchGroup, 0,
                    "rank 0: ncclCommInitRank: unhandled system error\n");
  RankEnded("id1", 0, "exited with status 1");
  runner_.join();
  ASSERT_FALSE(result_.ok());
  EXPECT_TRUE(absl::IsAborted(result_.status()));
  EXPECT_THAT(result_.status().message(),
              HasSubstr("rank 0 on spark-1 exited with status 1; the end of its output: rank 0: "
                        "ncclCommInitRank: unhandled system error"));
}

}  // namespace
}  // namespace fleet::controller
