// `fleet fabric` for real: a controller and three agents, each in its own network namespace on
// a bridge (127.0.0.x without namespaces), TCP bandwidth measured between every pair through the
// agents' one-time data ports, stored, and shown by `fleet fabric history`.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"

namespace fleet::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kAgents = 3;

class FabricTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kAgents + 1), FLEET_BINARY));
    ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
    ASSERT_EQ(WaitAllReady(kAgents, absl::Seconds(20)).size(), static_cast<size_t>(kAgents));
  }
};

TEST_F(FabricTest, TcpBetweenEveryPairIsMeasuredStoredAndShownInHistory) {
  absl::StatusOr<CommandResult> run = cluster_->RunCli(
      {"fabric", "--duration", "1s", "--streams", "2", "-o", "json"}, absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  // The verdict depends on this machine's speed against the link's stated rate (veth states
  // 10 Gb/s; loopback none): exit 0 (all passed or unknown) or 1 (one warned or failed).
  EXPECT_TRUE(run->exit_code == 0 || run->exit_code == 1) << run->stdout_text << run->stderr_text;
  nlohmann::json doc = nlohmann::json::parse(run->stdout_text, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << run->stdout_text;
  ASSERT_EQ(doc["items"].size(), 3u) << run->stdout_text;  // 3 nodes: 3 pairs
  std::set<std::string> links;
  for (const nlohmann::json& r : doc["items"]) {
    EXPECT_EQ(r["test"], "tcp");
    ASSERT_TRUE(r["bandwidth_gbps"].is_number()) << r.dump();
    EXPECT_GT(r["bandwidth_gbps"].get<double>(), 0.05) << r.dump();
    for (const char* key : {"from", "to", "device", "expected_gbps", "verdict", "reason"}) {
      EXPECT_TRUE(r.contains(key)) << key << " missing in " << r.dump();
    }
    EXPECT_NE(r["verdict"], "not-measured") << r.dump();
    links.insert(absl::StrCat(r["from"].get<std::string>(), ">", r["to"].get<std::string>()));
  }
  EXPECT_EQ(links.size(), 3u);

  // A second, shorter run: history keeps both, per link.
  run = cluster_->RunCli({"fabric", "--nodes", "node-1,node-2", "--duration", "500ms"},
                         absl::Seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_THAT(run->stdout_text, HasSubstr("node-1"));
  absl::StatusOr<CommandResult> history =
      cluster_->RunCli({"fabric", "history", "-o", "json"}, absl::Seconds(15));
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->exit_code, 0) << history->stderr_text;
  nlohmann::json stored = nlohmann::json::parse(history->stdout_text, nullptr, false);
  ASSERT_FALSE(stored.is_discarded()) << history->stdout_text;
  EXPECT_EQ(stored["items"].size(), 4u) << history->stdout_text;
  history = cluster_->RunCli({"fabric", "history"}, absl::Seconds(15));
  ASSERT_TRUE(history.ok());
  EXPECT_THAT(history->stdout_text, HasSubstr("BANDWIDTH"));

  // Tests the nodes have no hardware for say so instead of giving a number.
  run =
      cluster_->RunCli({"fabric", "--tests", "rdma,nccl", "--nodes", "node-1,node-2", "-o", "json"},
                       absl::Seconds(30));
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 1);
  EXPECT_THAT(run->stdout_text, HasSubstr("not measured: no RDMA device on node-1"));
  EXPECT_THAT(run->stdout_text, HasSubstr("not measured: no GPU on node-1"));
  EXPECT_THAT(run->stdout_text, HasSubstr("\"bandwidth_gbps\": null"));
}

TEST_F(FabricTest, BadRequestsFailWithTheFix) {
  absl::StatusOr<CommandResult> run =
      cluster_->RunCli({"fabric", "--nodes", "node-1,node-9"}, absl::Seconds(15));
  ASSERT_TRUE(run.ok());
  EXPECT_NE(run->exit_code, 0);
  EXPECT_THAT(run->stderr_text, HasSubstr("node node-9 is not Ready"));
  run = cluster_->RunCli({"fabric", "--tests", "udp"}, absl::Seconds(15));
  ASSERT_TRUE(run.ok());
  EXPECT_THAT(run->stderr_text, HasSubstr("the tests are tcp, rdma and nccl"));
}

}  // namespace
}  // namespace fleet::testing
