// The fixture of the integration suites that run a TestCluster: it builds the network and the
// cluster, starts the controller and agents, waits for them, and prints the daemons' logs when a
// test failed. Helpers that can fail fatally are void; call them inside ASSERT_NO_FATAL_FAILURE.

#ifndef FLEET_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
#define FLEET_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_

#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

namespace fleet::testing {

class ClusterFixture : public ::testing::Test {
 protected:
  // Takes `network` (CreateTestNetwork() or TestNetwork::Create()) and makes a cluster of the
  // `fleet` binary at `fleet_binary` on it.
  void CreateCluster(absl::StatusOr<std::unique_ptr<TestNetwork>> network,
                     const std::string& fleet_binary) {
    ASSERT_TRUE(network.ok()) << network.status();
    network_ = *std::move(network);
    absl::StatusOr<std::unique_ptr<TestCluster>> cluster =
        TestCluster::Create(*network_, fleet_binary);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
  }

  // Starts the controller with `controller_flags`, then agents node-1..node-`agents`, each
  // with --controller and the cluster's join token.
  void StartCluster(int agents, const std::vector<std::string>& controller_flags = {}) {
    absl::Status started = cluster_->StartController(controller_flags);
    ASSERT_TRUE(started.ok()) << started;
    for (int i = 1; i <= agents; ++i) {
      absl::Status agent = cluster_->StartAgent(i);
      ASSERT_TRUE(agent.ok()) << agent;
    }
  }

  ::testing::AssertionResult WaitForNodes(const std::function<bool(const nlohmann::json&)>& done,
                                          absl::Duration timeout,
                                          nlohmann::json* last_doc = nullptr) {
    return fleet::testing::WaitForNodes(*cluster_, done, timeout, last_doc);
  }

  // Waits until node-1..node-`agents` are all Ready and returns their ids by name; a timeout
  // fails the test (not fatally) and returns the ids of those listed.
  std::map<std::string, std::string> WaitAllReady(int agents, absl::Duration timeout) {
    nlohmann::json doc;
    EXPECT_TRUE(WaitForNodes(
        [&](const nlohmann::json& d) { return AllReady(d, AgentNames(agents)); }, timeout, &doc));
    std::map<std::string, std::string> ids;
    for (const std::string& name : AgentNames(agents)) {
      if (const nlohmann::json* node = FindNode(doc, name)) ids[name] = node->value("id", "");
    }
    return ids;
  }

  // Prints the tails of the daemons' logs when the test failed. Suites that check more after a
  // test call this from their own TearDown, while cluster_ is still there.
  void TearDown() override {
    if (cluster_ != nullptr && HasFailure()) {
      std::cerr << "Daemon logs of the failed test (" << cluster_->temp_dir() << "):\n"
                << cluster_->LogTails() << std::flush;
    }
  }

  // Declared before cluster_, so the cluster's daemons are stopped before the network goes.
  std::unique_ptr<TestNetwork> network_;
  std::unique_ptr<TestCluster> cluster_;
};

}  // namespace fleet::testing

#endif  // FLEET_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
