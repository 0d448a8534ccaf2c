// The controller never makes one user wait for another: the real ControllerServer on
// 127.0.0.1 (port 0), driven through the CLI's AdminClient, with a FakeAgentClient injected
// whose probes hang as an agent hashing a 150 GB model does. While one apply is stuck in
// preflight, a stop of another group, its logs, the node list and a describe each answer at
// once: proof that neither a reactor nor a lock is held by the apply.
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/config.h"
#include "cli/controller_api.h"
#include "common/files.h"
#include "common/proto_time.h"
#include "controller/controller_server.h"
#include "controller/groups/fake_agent_client.h"
#include "controller/store/sqlite_store.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

// The issue's bound for an answer that must not wait behind someone else's apply.
constexpr absl::Duration kPromptly = absl::Milliseconds(200);

constexpr char kRecipe[] = R"(recipe_version: "2"
name: echo
engine: exec
runtime: process
nodes: NODES
defaults:
  port: 8000
command: fleet-echo-engine --port {port}
)";

v1::ApplyRequest ApplyRequestFor(const std::string& name, int nodes) {
  std::string yaml = kRecipe;
  yaml.replace(yaml.find("NODES"), 5, absl::StrCat(nodes));
  v1::ApplyRequest request;
  request.set_recipe_path("recipes/echo.yaml");
  request.set_recipe_yaml(yaml);
  request.set_name(name);
  // The fake agents' probes are empty: their failures become warnings.
  request.set_force(true);
  return request;
}

class ControllerConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-concurrency-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    SeedNodes(3);
    ControllerOptions options;
    options.state_dir = dir_ + "/state";
    options.listen = "127.0.0.1:0";
    options.admin_config = dir_ + "/admin.yaml";
    // The seeded nodes send no heartbeats: they stay Ready for the test's few seconds.
    options.registry.suspect_after = absl::Minutes(5);
    options.registry.lost_after = absl::Minutes(10);
    options.agent_client_factory = [this](std::shared_ptr<TransportCredentials>) {
      auto agents = std::make_unique<FakeAgentClient>();
      agents_ = agents.get();
      return agents;
    };
    absl::StatusOr<std::unique_ptr<ControllerServer>> server = ControllerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    absl::StatusOr<cli::CliConfig> config = cli::LoadConfigFile(options.admin_config);
    ASSERT_TRUE(config.ok()) << config.status();
    absl::StatusOr<cli::AdminClient> client = cli::AdminClient::Create(*config);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::make_unique<cli::AdminClient>(*std::move(client));
  }

  void TearDown() override {
    if (agents_ != nullptr) agents_->ReleaseProbes();
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  // A controller restarted with `n` Ready, reachable nodes in its database.
  void SeedNodes(int n) {
    ASSERT_TRUE(MakeDirectories(dir_ + "/state", 0700).ok());
    absl::StatusOr<std::unique_ptr<SqliteStore>> store =
        SqliteStore::Open(dir_ + "/state/fleet.db");
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 1; i <= n; ++i) {
      v1::Node node;
      node.mutable_identity()->set_node_id(absl::StrCat("id", i));
      node.mutable_identity()->set_name(absl::StrCat("spark-", i));
      node.set_address(absl::StrCat("10.0.0.", i, ":7101"));
      node.set_state(v1::NODE_STATE_READY);
      node.set_reachable(true);
      *node.mutable_last_heartbeat() = ToProtoTime(absl::Now());
      ASSERT_TRUE((*store)->PutNode(node).ok());
    }
  }

  std::string dir_;
  FakeAgentClient* agents_ = nullptr;  // owned by server_
  std::unique_ptr<ControllerServer> server_;
  std::unique_ptr<cli::AdminClient> client_;
};

TEST_F(ControllerConcurrencyTest, StuckApplyDelaysNoOtherUser) {
  absl::StatusOr<v1::ApplyResponse> other = client_->Apply(ApplyRequestFor("other", 1), {});
  ASSERT_TRUE(other.ok()) << other.status();

  agents_->HoldProbes();
  std::atomic<bool> apply_done{false};
  absl::StatusOr<v1::ApplyResponse> stuck;
  std::thread apply([&] {
    stuck = client_->Apply(ApplyRequestFor("stuck", 2), absl::Minutes(1));
    apply_done = true;
  });
  // A failed assertion returns early: the apply is released and joined all the same.
  absl::Cleanup finish_apply = [&] {
    agents_->ReleaseProbes();
    if (apply.joinable()) apply.join();
  };
  // Both of its nodes are being probed, and stay so until released.
  ASSERT_TRUE(agents_->AwaitHeldProbes(2, absl::Seconds(10)));

  absl::Time start = absl::Now();
  absl::StatusOr<v1::ListNodesResponse> nodes = client_->ListNodes();
  const absl::Duration list_took = absl::Now() - start;
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ(nodes->nodes_size(), 3);

  v1::GroupLogsRequest logs_request;
  logs_request.set_name("other");
  start = absl::Now();
  absl::StatusOr<v1::GroupLogsResponse> logs = client_->GroupLogs(logs_request);
  const absl::Duration logs_took = absl::Now() - start;
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(logs->data(), absl::StrCat("log of other rank 0 at ",
                                       other->groups(0).ranks(0).node_address(), "\n"));

  start = absl::Now();
  absl::StatusOr<v1::GetGroupResponse> described = client_->GetGroup("other");
  const absl::Duration describe_took = absl::Now() - start;
  ASSERT_TRUE(described.ok()) << described.status();

  start = absl::Now();
  absl::StatusOr<v1::StopGroupResponse> stopped = client_->StopGroup("other", {});
  const absl::Duration stop_took = absl::Now() - start;
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->group().state(), v1::GROUP_STATE_STOPPED);

  // Every answer came while the apply was still stuck in its preflight.
  EXPECT_EQ(agents_->probes_waiting(), 2);
  EXPECT_FALSE(apply_done.load());
  EXPECT_LT(list_took, kPromptly);
  EXPECT_LT(logs_took, kPromptly);
  EXPECT_LT(describe_took, kPromptly);
  EXPECT_LT(stop_took, kPromptly);
  std::cout << "while an apply was stuck in preflight: fleet nodes " << list_took << ", fleet logs "
            << logs_took << ", fleet describe " << describe_took << ", fleet stop " << stop_took
            << "\n";

  agents_->ReleaseProbes();
  apply.join();
  ASSERT_TRUE(stuck.ok()) << stuck.status();
  ASSERT_EQ(stuck->groups_size(), 1);
  EXPECT_EQ(stuck->groups(0).ranks_size(), 2);
}

}  // namespace
}  // namespace fleet::controller
