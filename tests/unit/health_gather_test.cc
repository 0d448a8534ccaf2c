// GatherHealth: every Ready or Suspect node's agent asked once with the paths its ranks mount,
// a Lost node not asked, an agent that fails listed with the reason, answers in node order.
#include "controller/groups/health_gather.h"

#include "controller/groups/fake_agent_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::Node Node(const std::string& name, v1::NodeState state) {
  v1::Node n;
  n.mutable_identity()->set_name(name);
  n.mutable_identity()->set_node_id("id-" + name);
  n.set_address(name + ":7701");
  n.set_state(state);
  return n;
}

v1::Group GroupOn(const std::string& node, std::vector<std::string> mounts) {
  v1::Group g;
  g.set_name("ds4");
  v1::GroupRank& rank = *g.add_ranks();
  rank.set_node_id("id-" + node);
  for (const std::string& m : mounts) {
    v1::Mount& mount = *rank.mutable_spec()->add_mounts();
    mount.set_source(m);
    mount.set_target("/models");
  }
  return g;
}

TEST(GatherHealthTest, AsksEveryNodeThatAnswersWithItsRanksMountsAndNamesTheRest) {
  FakeAgentClient agents;
  v1::NodeHealthSample sample;
  sample.set_since_last_look_s(4);
  agents.SetHealth("spark-1:7701", sample);
  agents.SetHealth("spark-2:7701", absl::DeadlineExceededError("deadline exceeded"));
  std::vector<v1::Node> nodes = {Node("spark-1", v1::NODE_STATE_READY),
                                 Node("spark-2", v1::NODE_STATE_SUSPECT),
                                 Node("spark-3", v1::NODE_STATE_LOST)};
  std::vector<v1::Group> groups = {GroupOn("spark-1", {"/srv/models/ds4", "/srv/hf"}),
                                   GroupOn("spark-1", {"/srv/hf"}), GroupOn("spark-2", {})};

  v1::HealthResponse r = GatherHealth(agents, nodes, groups, absl::Seconds(5));
  ASSERT_EQ(r.nodes_size(), 3);
  EXPECT_EQ(r.nodes(0).node(), "spark-1");
  EXPECT_EQ(r.nodes(0).sample().since_last_look_s(), 4);
  EXPECT_TRUE(r.nodes(0).error().empty());
  EXPECT_FALSE(r.nodes(1).has_sample());
  EXPECT_THAT(r.nodes(1).error(), HasSubstr("no answer from its agent: deadline exceeded"));
  EXPECT_EQ(r.nodes(2).error(), "not asked: the node is Lost");

  std::vector<FakeAgentClient::Call<v1::CollectHealthRequest>> asked = agents.health_asked();
  ASSERT_EQ(asked.size(), 2u);  // the Lost node was not asked
  for (const auto& call : asked) {
    if (call.address == "spark-1:7701") {
      EXPECT_THAT(call.request.disk_paths(), ElementsAre("/srv/hf", "/srv/models/ds4"));
    } else {
      EXPECT_THAT(call.request.disk_paths(), IsEmpty());
    }
  }
}

}  // namespace
}  // namespace fleet::controller
