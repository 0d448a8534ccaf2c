// Serving groups end to end: a controller and four agents, each on its own host of a
// TestNetwork, and an `exec` recipe of fleet-echo-engine whose four ranks rendezvous through
// the head's master address and serve HTTP on the head. Driven through the real `fleet` CLI:
// apply reaches Ready, every rank saw its own environment, logs come back per rank, stop
// leaves no engine process on any node, re-apply is a no-op, and restarting the controller or
// an agent leaves the ranks running (the agent re-adopts its rank instead of starting another).

#include <signal.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/engine_pids.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

constexpr int kHosts = 5;  // the controller's host and four agents
constexpr int kAgents = kHosts - 1;
constexpr absl::Duration kReadyTimeout = absl::Seconds(20);

// Four ranks of the echo engine, started as plain processes. The port is chosen per test so
// that fallback mode (every host on the machine's loopback) never collides with anything.
std::string EchoRecipe(int port) {
  return absl::StrCat(R"(recipe_version: "2"
name: echo-group
engine: exec
runtime: process
nodes: 4
defaults:
  port: )",
                      port, R"(
health:
  start_timeout: 30s
command: fleet-echo-engine --port {port} --rendezvous-timeout 20
)");
}

class GroupTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kHosts), FLEET_BINARY));
    // Distinct ports per test run, for fallback mode's shared loopback.
    port_ = 18000 + static_cast<int>(absl::ToUnixMicros(absl::Now()) % 2000) * 2;
    recipe_path_ = absl::StrCat(cluster_->temp_dir(), "/echo-group.yaml");
    std::ofstream(recipe_path_) << EchoRecipe(port_);
    ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
    ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                             absl::Seconds(15)));
  }

  void TearDown() override {
    // Shards outlive their agents by design: whatever a failed test left is killed here, and
    // counted as a failure.
    std::vector<pid_t> left = EnginePids("fleet-echo-engi", "echo-group");
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " engine processes left after the test";
    ClusterFixture::TearDown();
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args,
                                      absl::Duration timeout = absl::Seconds(60)) {
    return cluster_->RunCli(args, timeout);
  }

  // `fleet describe group echo-group -o json`.
  Json Describe() {
    absl::StatusOr<CommandResult> r = Fleet({"describe", "group", "echo-group", "-o", "json"});
    if (!r.ok() || r->exit_code != 0) return Json();
    return Json::parse(r->stdout_text, nullptr, false);
  }

  // Pid of every rank, by rank, as the controller reports them.
  std::map<int, int> RankPids() {
    std::map<int, int> pids;
    Json doc = Describe();
    if (!doc.contains("group")) return pids;
    for (const Json& rank : doc["group"]["ranks"]) {
      pids[rank.value("rank", 0)] = rank["status"].value("pid", 0);
    }
    return pids;
  }

  bool GroupState(const std::string& want, absl::Duration timeout) {
    return TestCluster::WaitFor(
        [&] {
          Json doc = Describe();
          return doc.contains("group") && doc["group"].value("state", "") == want;
        },
        timeout);
  }

  int port_ = 0;
  std::string recipe_path_;
};

TEST_F(GroupTest, ApplyReachesReadyEveryRankSeesItsOwnEnvAndStopLeavesNothing) {
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> applied = Fleet({"apply", recipe_path_, "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  std::printf("[ TIMING   ] apply of 4 ranks Ready %s after the command started\n",
              absl::FormatDuration(absl::Now() - start).c_str());
  const std::string head_ip = network_->host(1).ip;
  const std::string endpoint = absl::StrCat("http://", head_ip, ":", port_);
  EXPECT_TRUE(absl::StrContains(applied->stdout_text, absl::StrCat("Ready in")))
      << applied->stdout_text;
  EXPECT_TRUE(absl::StrContains(applied->stdout_text, endpoint)) << applied->stdout_text;

  // The head answers a completion on its endpoint, from another host.
  absl::StatusOr<CommandResult> completion = RunCommand(
      network_->Wrap(
          0, {"curl", "-sS", "--noproxy", "*", "-m", "5", "-H", "Content-Type: application/json",
              "-d", R"({"model": "fleet-echo", "prompt": "hello", "max_tokens": 8})",
              absl::StrCat(endpoint, "/v1/completions")}),
      std::chrono::seconds(10));
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_TRUE(absl::StrContains(completion->stdout_text, R"("text":"hello")"))
      << completion->stdout_text << completion->stderr_text;

  // Each rank saw its own rank, the head's master address, and its own node's interface.
  absl::StatusOr<Json> nodes = cluster_->Nodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  for (int rank = 0; rank < kAgents; ++rank) {
    absl::StatusOr<CommandResult> logs =
        Fleet({"logs", "echo-group", "--rank", absl::StrCat(rank)});
    ASSERT_TRUE(logs.ok()) << logs.status();
    ASSERT_EQ(logs->exit_code, 0) << logs->stderr_text;
    const std::string& out = logs->stdout_text;
    EXPECT_TRUE(absl::StrContains(out, absl::StrCat("rank ", rank, " env ")))
        << "rank " << rank << ": " << out;
    EXPECT_TRUE(absl::StrContains(out, absl::StrCat("FLEET_RANK=", rank, " "))) << out;
    EXPECT_TRUE(absl::StrContains(out, "FLEET_WORLD_SIZE=4")) << out;
    EXPECT_TRUE(absl::StrContains(out, absl::StrCat("MASTER_ADDR=", head_ip))) << out;
    // Rank k runs on node-(k+1) (nodes sorted by name, none busy): its interface is the one
    // holding that host's address.
    const Json* node = FindNode(*nodes, TestCluster::AgentName(rank + 1));
    ASSERT_NE(node, nullptr);
    std::string iface;
    for (const Json& itf : (*node)["facts"]["interfaces"]) {
      for (const Json& addr : itf["addresses"]) {
        if (absl::StartsWith(addr.get<std::string>(), network_->host(rank + 1).ip + "/")) {
          iface = itf.value("name", "");
        }
      }
    }
    if (!iface.empty()) {
      EXPECT_TRUE(absl::StrContains(out, absl::StrCat("NCCL_SOCKET_IFNAME=", iface))) << out;
    }
  }
  absl::StatusOr<CommandResult> tail = Fleet({"logs", "echo-group", "--tail", "1"});
  ASSERT_TRUE(tail.ok());
  EXPECT_TRUE(absl::StrContains(tail->stdout_text, "rendezvous complete")) << tail->stdout_text;
  EXPECT_EQ(std::count(tail->stdout_text.begin(), tail->stdout_text.end(), '\n'), 1)
      << tail->stdout_text;

  ASSERT_EQ(EnginePids("fleet-echo-engi", "echo-group").size(), 4u);
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "echo-group"});
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  ASSERT_EQ(stopped->exit_code, 0) << stopped->stderr_text;
  // Confirmed before success: nothing is left the moment the command returns.
  EXPECT_TRUE(EnginePids("fleet-echo-engi", "echo-group").empty());
  absl::StatusOr<CommandResult> listed = Fleet({"get", "groups"});
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(absl::StrContains(listed->stdout_text, "Stopped")) << listed->stdout_text;
}

TEST_F(GroupTest, ReapplyIsANoOpAndRestartsOfControllerAndAgentKeepTheRanks) {
  absl::StatusOr<CommandResult> applied = Fleet({"apply", recipe_path_, "--timeout", "30s"});
  ASSERT_TRUE(applied.ok() && applied->exit_code == 0)
      << (applied.ok() ? applied->stderr_text : applied.status().ToString());
  std::map<int, int> pids = RankPids();
  ASSERT_EQ(pids.size(), 4u);

  absl::StatusOr<CommandResult> again = Fleet({"apply", recipe_path_});
  ASSERT_TRUE(again.ok() && again->exit_code == 0);
  EXPECT_TRUE(absl::StrContains(again->stdout_text, "unchanged")) << again->stdout_text;
  EXPECT_EQ(RankPids(), pids);

  // Controller killed and restarted: the group is still Ready, on the same processes.
  ASSERT_TRUE(cluster_->RestartController().ok());
  ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           absl::Seconds(15)));
  EXPECT_TRUE(GroupState("Ready", kReadyTimeout));
  EXPECT_EQ(RankPids(), pids);

  // Agent of rank 1 killed -9 and restarted: it re-adopts its rank, never starts a second.
  ASSERT_TRUE(cluster_->KillAgent(2, SIGKILL).ok());
  ASSERT_TRUE(cluster_->StartAgent(2).ok());
  ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           absl::Seconds(15)));
  EXPECT_TRUE(GroupState("Ready", kReadyTimeout));
  EXPECT_EQ(RankPids(), pids);
  EXPECT_EQ(EnginePids("fleet-echo-engi", "echo-group").size(), 4u);
  // Its logs are still served by the new agent.
  absl::StatusOr<CommandResult> logs = Fleet({"logs", "echo-group", "--rank", "1"});
  ASSERT_TRUE(logs.ok());
  EXPECT_TRUE(absl::StrContains(logs->stdout_text, "rank 1 env")) << logs->stdout_text;

  // A changed recipe over the Ready group rolls it behind its router: drained, then a new
  // generation on new processes.
  absl::StatusOr<CommandResult> changed =
      Fleet({"apply", recipe_path_, "-o", absl::StrCat("port=", port_ + 1), "--timeout", "30s"});
  ASSERT_TRUE(changed.ok() && changed->exit_code == 0)
      << (changed.ok() ? changed->stderr_text : changed.status().ToString());
  EXPECT_TRUE(absl::StrContains(changed->stdout_text, "roll: echo-group drained"))
      << changed->stdout_text;
  EXPECT_TRUE(absl::StrContains(changed->stdout_text, "group echo-group rolled: generation 2"))
      << changed->stdout_text;
  EXPECT_EQ(Describe()["group"].value("generation", ""), "2");
  std::map<int, int> new_pids = RankPids();
  for (const auto& [rank, pid] : new_pids) EXPECT_NE(pid, pids[rank]) << "rank " << rank;
  EXPECT_EQ(EnginePids("fleet-echo-engi", "echo-group").size(), 4u);

  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "echo-group"});
  ASSERT_TRUE(stopped.ok() && stopped->exit_code == 0);
  EXPECT_TRUE(EnginePids("fleet-echo-engi", "echo-group").empty());
}

TEST_F(GroupTest, BadRecipesAreRefusedWithTheirLineAndStartNothing) {
  std::string typo = absl::StrCat(cluster_->temp_dir(), "/typo.yaml");
  std::ofstream(typo) << absl::StrCat(EchoRecipe(port_), "replicaz: 2\n");
  absl::StatusOr<CommandResult> r = Fleet({"apply", typo});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r->stderr_text, "typo.yaml:11:1")) << r->stderr_text;
  EXPECT_TRUE(absl::StrContains(r->stderr_text, "did you mean \"replicas\"")) << r->stderr_text;

  r = Fleet({"apply", recipe_path_, "-o", "replicas=2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);

  std::string big = absl::StrCat(cluster_->temp_dir(), "/big.yaml");
  std::string text = EchoRecipe(port_);
  text.replace(text.find("nodes: 4"), 8, "nodes: 5");
  std::ofstream(big) << text;
  r = Fleet({"apply", big});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r->stderr_text, "needs 5 nodes; 4 Ready and free"))
      << r->stderr_text;
  EXPECT_TRUE(EnginePids("fleet-echo-engi", "echo-group").empty());
  EXPECT_TRUE(EnginePids("fleet-echo-engi", "big").empty());

  // A requirement no node meets: preflight lists it per node with the fix, apply refuses.
  std::string shm = absl::StrCat(cluster_->temp_dir(), "/shm.yaml");
  std::ofstream(shm) << absl::StrCat(EchoRecipe(port_), "requires:\n  shm: 100t\n");
  r = Fleet({"preflight", shm});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1) << r->stdout_text;
  for (const std::string& node : AgentNames(kAgents)) {
    EXPECT_TRUE(absl::StrContains(r->stdout_text, node)) << r->stdout_text;
  }
  EXPECT_TRUE(absl::StrContains(r->stdout_text, "fail")) << r->stdout_text;
  EXPECT_TRUE(absl::StrContains(r->stdout_text, "/dev/shm")) << r->stdout_text;
  r = Fleet({"apply", shm});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r->stderr_text, "preflight failed, nothing was started"))
      << r->stderr_text;
  EXPECT_TRUE(EnginePids("fleet-echo-engi", "shm").empty());
}

TEST_F(GroupTest, NodesAreProbedThroughTheirAgents) {
  absl::StatusOr<CommandResult> r = Fleet({"describe", "node", "node-2"});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->stderr_text;
  EXPECT_TRUE(absl::StrContains(r->stdout_text, "Node: node-2")) << r->stdout_text;
  // The node's own address, seen by its own agent in its namespace.
  EXPECT_TRUE(absl::StrContains(r->stdout_text, network_->host(2).ip)) << r->stdout_text;
  r = Fleet({"describe", "node", "node-9"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r->stderr_text, "no node named node-9")) << r->stderr_text;
  // No RDMA device on these hosts: an empty table, not an error.
  r = Fleet({"get", "links"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0) << r->stderr_text;
  EXPECT_TRUE(absl::StartsWith(r->stdout_text, "NODE")) << r->stdout_text;
}

}  // namespace
}  // namespace fleet::testing
