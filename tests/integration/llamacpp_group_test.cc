// The llamacpp engine end to end, with stand-ins for llama-server and rpc-server
// (tests/support/llamacpp_standin: they check the flags they get and behave as the real ones do
// where SparkFleet can see it). A controller and three agents, each on its own host: one node
// runs llama-server alone; a group of three runs rpc-server on ranks 1 and 2, bound to their
// own fabric addresses and started first, and llama-server on the head with --rpc naming both,
// which it connects to before serving. Driven through the real `fleet` CLI; nothing is left
// running afterwards.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

constexpr int kAgents = 3;

std::string Recipe(const std::string& name, int nodes, int port) {
  return absl::StrCat(R"(recipe_version: "2"
name: )",
                      name, R"(
engine: llamacpp
runtime: process
nodes: )",
                      nodes, R"(
defaults:
  port: )",
                      port, R"(
health:
  path: /health
  check_models: true
  check_completion: true
  start_timeout: 30s
command: llama-server -m /models/DeepSeek-V4-Flash-Q4_K_M.gguf --host 0.0.0.0 --port {port} --n-gpu-layers 999
)");
}

// Pids of stand-in processes (`comm` llama-server or rpc-server). This machine has no llama.cpp,
// and the tests of this file hold a lock, so every such process is theirs.
std::vector<pid_t> StandInPids() {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    absl::StatusOr<std::string> comm = ReadFileToString(absl::StrCat("/proc/", pid, "/comm"));
    if (comm.ok() && (*comm == "llama-server\n" || *comm == "rpc-server\n")) pids.push_back(pid);
  }
  return pids;
}

class LlamaCppGroupTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kAgents + 1), FLEET_BINARY));
    port_ = 21000 + static_cast<int>(absl::ToUnixMicros(absl::Now()) % 2000) * 2;
    ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
    ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                             absl::Seconds(15)));
  }

  void TearDown() override {
    std::vector<pid_t> left = StandInPids();
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " stand-in processes left after the test";
    ClusterFixture::TearDown();
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args) {
    return cluster_->RunCli(args, absl::Seconds(60));
  }

  std::string WriteRecipe(const std::string& name, int nodes) {
    const std::string path = absl::StrCat(cluster_->temp_dir(), "/", name, ".yaml");
    std::ofstream(path) << Recipe(name, nodes, port_);
    return path;
  }

  std::string Logs(const std::string& group, int rank) {
    absl::StatusOr<CommandResult> logs = Fleet({"logs", group, "--rank", absl::StrCat(rank)});
    return logs.ok() ? logs->stdout_text + logs->stderr_text : std::string(logs.status().message());
  }

  // A completion through the head's endpoint, from the controller's host.
  std::string Complete(const std::string& endpoint) {
    absl::StatusOr<CommandResult> completion =
        RunCommand(network_->Wrap(0, {"curl", "-sS", "--noproxy", "*", "-m", "5", "-H",
                                      "Content-Type: application/json", "-d",
                                      R"({"model": "m", "prompt": "hello", "max_tokens": 4})",
                                      absl::StrCat(endpoint, "/v1/completions")}),
                   std::chrono::seconds(10));
    return completion.ok() ? completion->stdout_text : std::string(completion.status().message());
  }

  int port_ = 0;
};

TEST_F(LlamaCppGroupTest, OneNodeRunsLlamaServerWithMetrics) {
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", WriteRecipe("gguf-solo", 1), "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  const std::string head = Logs("gguf-solo", 0);
  EXPECT_TRUE(absl::StrContains(head, "--metrics: flags checked; 0 rpc backend(s)")) << head;
  EXPECT_FALSE(absl::StrContains(head, "--rpc")) << head;
  const std::string endpoint = absl::StrCat("http://", network_->host(1).ip, ":", port_);
  EXPECT_TRUE(absl::StrContains(Complete(endpoint), R"("text":"hello")"));
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "gguf-solo"});
  ASSERT_TRUE(stopped.ok() && stopped->exit_code == 0);
  EXPECT_TRUE(StandInPids().empty());
}

TEST_F(LlamaCppGroupTest, RpcServersStartFirstOnTheFabricAndTheHeadUsesAll) {
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", WriteRecipe("gguf-rpc", 3), "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;

  // Rank k runs on host k+1 (nodes sorted by name, none busy). Each rpc-server was bound to its
  // own node's address, never a wildcard (the stand-in refuses one), on the group's master port.
  ASSERT_EQ(StandInPids().size(), 3u);
  for (int rank = 1; rank < kAgents; ++rank) {
    const std::string ip = network_->host(rank + 1).ip;
    const std::string log = Logs("gguf-rpc", rank);
    EXPECT_TRUE(absl::StrContains(log, absl::StrCat("rpc-server --host ", ip, " --port "))) << log;
    EXPECT_TRUE(absl::StrContains(log, "flags checked; listening on " + ip + ":")) << log;
  }
  const std::string head = Logs("gguf-rpc", 0);
  EXPECT_TRUE(absl::StrContains(head, absl::StrCat("--rpc ", network_->host(2).ip, ":"))) << head;
  EXPECT_TRUE(absl::StrContains(head, absl::StrCat(",", network_->host(3).ip, ":"))) << head;
  EXPECT_TRUE(absl::StrContains(head, "flags checked; 2 rpc backend(s)")) << head;
  const std::string endpoint = absl::StrCat("http://", network_->host(1).ip, ":", port_);
  EXPECT_TRUE(absl::StrContains(Complete(endpoint), R"("text":"hello")"));

  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "gguf-rpc"});
  ASSERT_TRUE(stopped.ok() && stopped->exit_code == 0);
  EXPECT_TRUE(StandInPids().empty());
}

}  // namespace
}  // namespace fleet::testing
