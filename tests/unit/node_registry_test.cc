// NodeRegistry with a fake clock and a fake store: registration, liveness transitions,
// name conflicts, persistence of changes and behaviour after a controller restart.
#include "controller/registry/node_registry.h"

#include "common/fake_clock.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;

v1::RegisterRequest Request(const std::string& id, const std::string& name,
                            const std::string& address = "10.0.0.2:7101") {
  v1::RegisterRequest r;
  r.mutable_identity()->set_node_id(id);
  r.mutable_identity()->set_name(name);
  r.set_advertise_address(address);
  r.set_agent_version("0.1.0");
  r.mutable_facts()->set_cpu_count(20);
  return r;
}

v1::NodeState StateOf(const NodeRegistry& registry, const std::string& id) {
  for (const v1::Node& n : registry.List()) {
    if (n.identity().node_id() == id) return n.state();
  }
  return v1::NODE_STATE_UNSPECIFIED;
}

class NodeRegistryTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  FakeStore store_;
  NodeRegistry registry_{RegistryConfig{}, &clock_, &store_};
};

TEST_F(NodeRegistryTest, RegisteredNodeIsReadyAndStored) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  EXPECT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_READY);
  ASSERT_EQ(store_.nodes().count("a"), 1u);
  EXPECT_EQ(store_.nodes().at("a").address(), "10.0.0.2:7101");
  EXPECT_EQ(store_.nodes().at("a").facts().cpu_count(), 20u);
  ASSERT_FALSE(store_.events().empty());
  EXPECT_EQ(store_.events().back().kind, "node-registered");
}

TEST_F(NodeRegistryTest, SilentNodeBecomesSuspectThenLostAtTheConfiguredTimes) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  clock_.Advance(absl::Milliseconds(2999));
  registry_.Tick();
  EXPECT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_READY);
  clock_.Advance(absl::Milliseconds(1));
  registry_.Tick();
  EXPECT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_SUSPECT);
  clock_.Advance(absl::Milliseconds(1999));
  registry_.Tick();
  EXPECT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_SUSPECT);
  EXPECT_TRUE(registry_.LostNodeIds().empty());
  clock_.Advance(absl::Milliseconds(1));
  registry_.Tick();
  EXPECT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_LOST);
  EXPECT_EQ(store_.nodes().at("a").state(), v1::NODE_STATE_LOST);
  EXPECT_EQ(registry_.LostNodeIds(), absl::flat_hash_set<std::string>{"a"});
}

TEST_F(NodeRegistryTest, HeartbeatsKeepANodeReady) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  for (int i = 0; i < 20; ++i) {
    clock_.Advance(absl::Seconds(1));
    ASSERT_TRUE(registry_.Heartbeat("a").ok());
    registry_.Tick();
    ASSERT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_READY);
  }
}

TEST_F(NodeRegistryTest, LostNodeThatHeartbeatsAgainIsReady) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  clock_.Advance(absl::Seconds(10));
  registry_.Tick();
  ASSERT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_LOST);
  absl::StatusOr<v1::NodeState> before = registry_.Heartbeat("a");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(*before, v1::NODE_STATE_LOST);
  EXPECT_EQ(StateOf(registry_, "a"), v1::NODE_STATE_READY);
  EXPECT_EQ(store_.nodes().at("a").state(), v1::NODE_STATE_READY);
  EXPECT_EQ(*registry_.Heartbeat("a"), v1::NODE_STATE_READY);
  EXPECT_EQ(store_.events().back().kind, "node-Ready");
}

TEST_F(NodeRegistryTest, HeartbeatFromUnknownNodeIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(registry_.Heartbeat("nobody").status()));
}

TEST_F(NodeRegistryTest, RegistrationMissingFieldsIsInvalid) {
  absl::Status st = registry_.Register(Request("", "spark-1"));
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  st = registry_.Register(Request("a", "spark-1", ""));
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
}

TEST_F(NodeRegistryTest, NameHeldByALiveNodeIsRefused) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  absl::Status st = registry_.Register(Request("b", "spark-1", "10.0.0.3:7101"));
  EXPECT_TRUE(absl::IsAlreadyExists(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("--name"));
}

TEST_F(NodeRegistryTest, NameOfALostNodeIsTakenOverByANewId) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  clock_.Advance(absl::Seconds(6));
  registry_.Tick();
  ASSERT_TRUE(registry_.Register(Request("b", "spark-1")).ok());
  ASSERT_EQ(registry_.List().size(), 1u);
  EXPECT_EQ(registry_.List()[0].identity().node_id(), "b");
  EXPECT_EQ(store_.nodes().count("a"), 0u);
}

TEST_F(NodeRegistryTest, ReRegistrationKeepsOneRecord) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1", "10.0.0.9:7101")).ok());
  ASSERT_EQ(registry_.List().size(), 1u);
  EXPECT_EQ(registry_.List()[0].address(), "10.0.0.9:7101");
}

TEST_F(NodeRegistryTest, FailedStoreWriteFailsRegistrationSoTheAgentRetries) {
  store_.FailWrites(absl::InternalError("disk full"));
  absl::Status st = registry_.Register(Request("a", "spark-1"));
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("disk full"));
  store_.FailWrites(absl::OkStatus());
  EXPECT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
}

TEST_F(NodeRegistryTest, ReachabilityIsRecorded) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  registry_.SetReachability("a", absl::UnavailableError("connection refused"));
  EXPECT_FALSE(registry_.List()[0].reachable());
  EXPECT_EQ(registry_.List()[0].reach_error(), "connection refused");
  registry_.SetReachability("a", absl::OkStatus());
  EXPECT_TRUE(registry_.List()[0].reachable());
}

TEST_F(NodeRegistryTest, RestartedRegistryGivesStoredNodesAGracePeriod) {
  ASSERT_TRUE(registry_.Register(Request("a", "spark-1")).ok());
  ASSERT_TRUE(registry_.Register(Request("b", "spark-2", "10.0.0.3:7101")).ok());
  clock_.Advance(absl::Minutes(10));  // the controller was down for ten minutes

  NodeRegistry restarted(RegistryConfig{}, &clock_, &store_);
  ASSERT_TRUE(restarted.Load().ok());
  ASSERT_EQ(restarted.List().size(), 2u);
  restarted.Tick();
  EXPECT_EQ(StateOf(restarted, "a"), v1::NODE_STATE_READY);
  for (int i = 0; i < 5; ++i) {  // a is alive, b stays silent
    clock_.Advance(absl::Seconds(1));
    ASSERT_TRUE(restarted.Heartbeat("a").ok());
    restarted.Tick();
  }
  EXPECT_EQ(StateOf(restarted, "a"), v1::NODE_STATE_READY);
  EXPECT_EQ(StateOf(restarted, "b"), v1::NODE_STATE_LOST);
}

TEST(RegistryConfigTest, TimingsMustBeOrdered) {
  EXPECT_TRUE(ValidateRegistryConfig(RegistryConfig{}).ok());
  RegistryConfig bad;
  bad.lost_after = absl::Seconds(2);
  absl::Status st = ValidateRegistryConfig(bad);
  EXPECT_TRUE(absl::IsInvalidArgument(st));
  EXPECT_THAT(st.message(), HasSubstr("lost-after 2s"));
  bad = RegistryConfig{};
  bad.heartbeat_period = absl::ZeroDuration();
  EXPECT_FALSE(ValidateRegistryConfig(bad).ok());
}

}  // namespace
}  // namespace fleet::controller
