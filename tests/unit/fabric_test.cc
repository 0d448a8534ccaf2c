// `fleet fabric`'s policy without a network: the planner (pairs, ring, no node in two tests of a
// round), the verdict and regression rules, and the runner through a fake agent client and a
// fake store: expected figures from the link rate, "not measured" reasons, stored history.
#include <set>
#include <string>
#include <vector>

#include "cli/fabric_commands.h"
#include "common/fake_clock.h"
#include "controller/fabric/fabric_plan.h"
#include "controller/fabric/fabric_runner.h"
#include "controller/fabric/fake_fabric_agent_client.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Names(int n) {
  std::vector<std::string> names;
  for (int i = 1; i <= n; ++i) names.push_back(absl::StrCat("spark-", i));
  return names;
}

// Checks that no node is in two tests of a round, and returns every link as an unordered pair.
std::multiset<std::set<std::string>> CheckRounds(const std::vector<FabricRound>& rounds) {
  std::multiset<std::set<std::string>> pairs;
  for (const FabricRound& round : rounds) {
    std::set<std::string> busy;
    for (const FabricLink& link : round) {
      EXPECT_TRUE(busy.insert(link.from).second) << link.from << " twice in a round";
      EXPECT_TRUE(busy.insert(link.to).second) << link.to << " twice in a round";
      pairs.insert({link.from, link.to});
    }
  }
  return pairs;
}

TEST(PlanFabric, EveryPairOnceInTheFewestRounds) {
  for (int n = 2; n <= 9; ++n) {
    absl::StatusOr<std::vector<FabricRound>> rounds = PlanFabric(Names(n), FabricTopology::kPairs);
    ASSERT_TRUE(rounds.ok()) << rounds.status();
    EXPECT_EQ(rounds->size(), static_cast<size_t>(n % 2 == 0 ? n - 1 : n)) << n;
    std::multiset<std::set<std::string>> pairs = CheckRounds(*rounds);
    EXPECT_EQ(pairs.size(), static_cast<size_t>(n * (n - 1) / 2)) << n;
    EXPECT_EQ(std::set<std::set<std::string>>(pairs.begin(), pairs.end()).size(), pairs.size())
        << "a pair tested twice with " << n << " nodes";
  }
}

TEST(PlanFabric, RingLinksEachNodeToTheNext) {
  absl::StatusOr<std::vector<FabricRound>> rounds = PlanFabric(Names(4), FabricTopology::kRing);
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 2u);
  EXPECT_THAT((*rounds)[0],
              ElementsAre(FabricLink{"spark-1", "spark-2"}, FabricLink{"spark-3", "spark-4"}));
  EXPECT_THAT((*rounds)[1],
              ElementsAre(FabricLink{"spark-2", "spark-3"}, FabricLink{"spark-4", "spark-1"}));
  rounds = PlanFabric(Names(5), FabricTopology::kRing);
  ASSERT_TRUE(rounds.ok());
  EXPECT_EQ(rounds->size(), 3u);
  EXPECT_EQ(CheckRounds(*rounds).size(), 5u);
  rounds = PlanFabric(Names(2), FabricTopology::kRing);
  ASSERT_TRUE(rounds.ok());
  EXPECT_EQ(CheckRounds(*rounds).size(), 1u);  // one link, not the same pair twice
}

TEST(PlanFabric, RefusesTooFewOrRepeatedNodes) {
  EXPECT_THAT(PlanFabric({"spark-1"}, FabricTopology::kPairs).status().message(),
              HasSubstr("at least 2 nodes"));
  EXPECT_THAT(PlanFabric({"a", "b", "a"}, FabricTopology::kPairs).status().message(),
              HasSubstr("node a is named twice"));
}

TEST(FabricVerdict, PassFromNinetyPercentFailBelowHalf) {
  EXPECT_EQ(FabricVerdict(90, 100), "pass");
  EXPECT_EQ(FabricVerdict(89.9, 100), "warn");
  EXPECT_EQ(FabricVerdict(50, 100), "warn");
  EXPECT_EQ(FabricVerdict(49.9, 100), "fail");
  EXPECT_EQ(FabricVerdict(5, 0), "unknown");
}

TEST(FabricRegression, FlagsADropOfMoreThanTenPercent) {
  EXPECT_EQ(FabricRegression(80, std::nullopt), std::nullopt);
  EXPECT_EQ(FabricRegression(90, 100.0), std::nullopt);
  EXPECT_THAT(FabricRegression(89, 100.0).value_or(""),
              HasSubstr("11% below the last passing run (100.0 Gb/s)"));
}

v1::Node MakeNode(int i, double fabric_gbps, bool rdma = false) {
  v1::Node node;
  node.mutable_identity()->set_name(absl::StrCat("spark-", i));
  node.mutable_identity()->set_node_id(absl::StrCat("id", i));
  node.set_address(absl::StrCat("10.0.0.", i, ":7101"));
  node.set_state(v1::NODE_STATE_READY);
  v1::ProbedInterface* itf = node.mutable_probe()->add_interfaces();
  itf->set_name("enp1s0f1np1");
  itf->add_addresses(absl::StrCat("192.168.100.", i, "/24"));
  itf->set_speed_mbps(static_cast<uint32_t>(fabric_gbps * 1000));
  itf->set_fabric(true);
  if (rdma) node.mutable_probe()->add_rdma()->set_name("rocep1s0f1");
  return node;
}

class FabricRunnerTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  FakeStore store_;
  FakeFabricAgentClient agents_;
  std::vector<v1::FabricResult> seen_;
  FabricRunner runner_{&clock_, &store_, &agents_,
                       [this](const v1::FabricResult& r) { seen_.push_back(r); }};
};

TEST_F(FabricRunnerTest, TcpBetweenFabricAddressesJudgedAgainstTheLinkRate) {
  agents_.bandwidth[{"192.168.100.1", "192.168.100.2"}] = 95;
  v1::RunFabricRequest request;
  request.set_duration_ms(2000);
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run(request, {MakeNode(1, 100), MakeNode(2, 100)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  const v1::FabricResult& result = r->results(0);
  EXPECT_EQ(result.from(), "spark-1");
  EXPECT_EQ(result.to(), "spark-2");
  EXPECT_EQ(result.device(), "enp1s0f1np1");
  EXPECT_EQ(result.bandwidth_gbps(), 95);
  EXPECT_EQ(result.expected_gbps(), 100);
  EXPECT_EQ(result.verdict(), "pass");
  // The receiver listens on its fabric address for the sender's address only; the sender gets
  // the same one-time token, 32 random bytes.
  ASSERT_EQ(agents_.listens.size(), 1u);
  EXPECT_EQ(agents_.listens[0].first, "10.0.0.2:7101");
  EXPECT_EQ(agents_.listens[0].second.bind_ip(), "192.168.100.2");
  EXPECT_EQ(agents_.listens[0].second.peer_ip(), "192.168.100.1");
  ASSERT_EQ(agents_.sends.size(), 1u);
  EXPECT_EQ(agents_.sends[0].second.target(), "192.168.100.2:40001");
  EXPECT_EQ(agents_.sends[0].second.spec().token().size(), 32u);
  EXPECT_EQ(agents_.sends[0].second.spec().token(), agents_.listens[0].second.spec().token());
  EXPECT_EQ(agents_.sends[0].second.spec().duration_ms(), 2000u);
  EXPECT_EQ(seen_.size(), 1u);
}

TEST_F(FabricRunnerTest, WarnFailAndUnreachableEachWithAReason) {
  agents_.bandwidth[{"192.168.100.1", "192.168.100.2"}] = 60;
  agents_.bandwidth[{"192.168.100.1", "192.168.100.3"}] = 10;
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run({}, {MakeNode(1, 100), MakeNode(2, 100), MakeNode(3, 100)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 3);
  std::map<std::string, v1::FabricResult> by_link;
  for (const v1::FabricResult& x : r->results()) by_link[x.from() + ">" + x.to()] = x;
  EXPECT_EQ(by_link["spark-1>spark-2"].verdict(), "warn");
  EXPECT_THAT(by_link["spark-1>spark-2"].reason(), HasSubstr("60.0 Gb/s is 60% of the link's"));
  EXPECT_EQ(by_link["spark-1>spark-3"].verdict(), "fail");
  EXPECT_EQ(by_link["spark-2>spark-3"].verdict(), "fail");
  EXPECT_FALSE(by_link["spark-2>spark-3"].measured());
  EXPECT_THAT(by_link["spark-2>spark-3"].reason(), HasSubstr("not measured: connect to"));
}

TEST_F(FabricRunnerTest, RdmaAndNcclWithoutTheHardwareAreNotMeasuredNeverANumber) {
  v1::RunFabricRequest request;
  request.add_tests("rdma");
  request.add_tests("nccl");
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run(request, {MakeNode(1, 100, /*rdma=*/true), MakeNode(2, 100)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 2);
  EXPECT_EQ(r->results(0).test(), "rdma");
  EXPECT_EQ(r->results(0).reason(), "not measured: no RDMA device on spark-2");
  EXPECT_EQ(r->results(1).reason(), "not measured: no GPU on spark-1");
  for (const v1::FabricResult& x : r->results()) {
    EXPECT_EQ(x.verdict(), "not-measured");
    EXPECT_FALSE(x.measured());
    EXPECT_EQ(x.bandwidth_gbps(), 0);
    EXPECT_THAT(cli::FabricResultJson(x).dump(), HasSubstr("\"bandwidth_gbps\":null"));
  }
  EXPECT_TRUE(agents_.sends.empty());
}

TEST_F(FabricRunnerTest, HistoryKeepsEveryRunAndFlagsADropAgainstTheLastPass) {
  std::vector<v1::Node> nodes = {MakeNode(1, 100), MakeNode(2, 100)};
  for (double gbps : {96.0, 93.0, 80.0}) {
    agents_.bandwidth[{"192.168.100.1", "192.168.100.2"}] = gbps;
    ASSERT_TRUE(runner_.Run({}, nodes).ok());
    clock_.Advance(absl::Minutes(1));
  }
  absl::StatusOr<v1::FabricHistoryResponse> history = runner_.History({});
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->results_size(), 3);
  EXPECT_EQ(history->results(0).bandwidth_gbps(), 96);
  EXPECT_EQ(history->results(1).regression(), "");  // 3% below the last pass
  EXPECT_THAT(history->results(2).regression(),
              HasSubstr("80.0 Gb/s is 14% below the last passing run (93.0 Gb/s)"));
  std::string table = cli::RenderFabricResults(
      {history->results().begin(), history->results().end()}, /*history=*/true);
  EXPECT_THAT(table, HasSubstr("REGRESSION: bandwidth 80.0 Gb/s"));
}

TEST_F(FabricRunnerTest, BadRequestsAreRefusedWithTheFix) {
  std::vector<v1::Node> nodes = {MakeNode(1, 100), MakeNode(2, 100)};
  v1::RunFabricRequest unknown;
  unknown.add_tests("udp");
  EXPECT_THAT(runner_.Run(unknown, nodes).status().message(),
              HasSubstr("the tests are tcp, rdma and nccl"));
  v1::RunFabricRequest missing;
  missing.add_nodes("spark-1");
  missing.add_nodes("spark-9");
  EXPECT_THAT(runner_.Run(missing, nodes).status().message(),
              HasSubstr("node spark-9 is not Ready (or not known); the Ready nodes are: "
                        "spark-1, spark-2"));
  v1::RunFabricRequest streams;
  streams.set_streams(65);
  EXPECT_TRUE(absl::IsInvalidArgument(runner_.Run(streams, nodes).status()));
}

}  // namespace
}  // namespace fleet::controller
