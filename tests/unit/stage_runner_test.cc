// StageRunner with a fake agent client: the chain it plans (last hop prepared first, each hop
// forwarding what the nodes after it lack), the rounds that re-send rejected chunks, a target
// that fails, and requests refused with the fix. No network, fake clock.
#include "controller/stage/stage_runner.h"

#include "absl/strings/str_cat.h"
#include "common/fake_clock.h"
#include "controller/stage/fake_stage_agent_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::Node MakeNode(int i) {
  v1::Node node;
  node.mutable_identity()->set_name(absl::StrCat("spark-", i));
  node.mutable_identity()->set_node_id(absl::StrCat("id", i));
  node.set_address(absl::StrCat("10.0.0.", i, ":7101"));
  node.set_state(v1::NODE_STATE_READY);
  v1::ProbedInterface* itf = node.mutable_probe()->add_interfaces();
  itf->set_name("enp1s0f1np1");
  itf->add_addresses(absl::StrCat("192.168.100.", i, "/24"));
  itf->set_fabric(true);
  return node;
}

std::string Agent(int i) { return absl::StrCat("10.0.0.", i, ":7101"); }

class StageRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest_.set_root("/m");
    manifest_.set_total_bytes(400);
    manifest_.set_tree_sha256(std::string(64, 'a'));
    manifest_.add_files()->set_path("w.bin");
    agents_.trees[Agent(1)] = manifest_;
  }
  v1::StageModelRequest Request(std::vector<std::string> to) {
    v1::StageModelRequest request;
    request.set_path("/m");
    for (std::string& n : to) request.add_to(std::move(n));
    return request;
  }

  FakeClock clock_;
  FakeStageAgentClient agents_;
  StageRunner runner_{&clock_, &agents_};
  v1::StageManifest manifest_;
  std::vector<v1::Node> nodes_ = {MakeNode(1), MakeNode(2), MakeNode(3), MakeNode(4)};
};

TEST_F(StageRunnerTest, PlansAChainLastHopFirstAndSendsTheUnionOnce) {
  agents_.lacking[Agent(2)] = {0, 1};
  agents_.lacking[Agent(3)] = {};
  agents_.lacking[Agent(4)] = {2, 3};
  absl::StatusOr<v1::StageModelResponse> done =
      runner_.Run(Request({"spark-2", "spark-3", "spark-4"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_THAT(agents_.calls,
              ElementsAre("scan " + Agent(1), "prepare " + Agent(4), "prepare " + Agent(3),
                          "prepare " + Agent(2), "send " + Agent(1), "finish " + Agent(2),
                          "finish " + Agent(3), "finish " + Agent(4)));
  // spark-3 lacks nothing but relays what spark-4 lacks; spark-2 relays 2 and 3.
  const v1::StagePrepareRequest& mid = agents_.prepares[Agent(3)][0];
  EXPECT_THAT(mid.forward().chunks(), ElementsAre(2, 3));
  EXPECT_EQ(mid.peer_ip(), "192.168.100.2");
  EXPECT_EQ(mid.bind_ip(), "192.168.100.3");
  const v1::StagePrepareRequest& first = agents_.prepares[Agent(2)][0];
  EXPECT_THAT(first.forward().chunks(), ElementsAre(2, 3));
  EXPECT_EQ(first.peer_ip(), "192.168.100.1");
  EXPECT_FALSE(agents_.prepares[Agent(4)][0].has_forward());
  ASSERT_EQ(agents_.sends.size(), 1u);
  EXPECT_THAT(agents_.sends[0].chunks(), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(agents_.sends[0].token(), first.token());
  EXPECT_EQ(agents_.sends[0].token().size(), 32u);
  EXPECT_NE(mid.token(), first.token());

  const v1::StageRun& run = done->run();
  EXPECT_EQ(run.state(), "done");
  EXPECT_EQ(run.from(), "spark-1");
  EXPECT_EQ(run.rounds(), 1u);
  ASSERT_EQ(run.nodes_size(), 3);
  EXPECT_EQ(run.nodes(0).bytes_sent(), 200u);
  EXPECT_EQ(run.nodes(1).bytes_sent(), 0u);
  EXPECT_EQ(run.nodes(0).dest(), "/prefix/m");
  EXPECT_EQ(run.nodes(2).tree_sha256(), manifest_.tree_sha256());
  EXPECT_EQ(runner_.Status().run().id(), run.id());
}

TEST_F(StageRunnerTest, RejectedChunksGoAgainInASecondRoundToThoseMissingThem) {
  agents_.lacking[Agent(2)] = {0, 1, 2};
  agents_.lacking[Agent(3)] = {0, 1, 2};
  agents_.rejects[Agent(2)] = 1;
  absl::StatusOr<v1::StageModelResponse> done =
      runner_.Run(Request({"spark-2", "spark-3"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  const v1::StageRun& run = done->run();
  EXPECT_EQ(run.state(), "done") << run.DebugString();
  EXPECT_EQ(run.rounds(), 2u);
  EXPECT_EQ(run.nodes(0).chunks_rejected(), 1u);
  EXPECT_EQ(run.nodes(0).bytes_sent(), 300u);
  // Round 2 prepared only spark-2, the one still missing a chunk.
  EXPECT_EQ(agents_.prepares[Agent(2)].size(), 2u);
  EXPECT_EQ(agents_.prepares[Agent(3)].size(), 1u);
}

TEST_F(StageRunnerTest, ATargetThatFailsIsReportedAndTheOthersComplete) {
  agents_.lacking[Agent(2)] = {0};
  agents_.lacking[Agent(3)] = {0};
  agents_.prepare_errors[Agent(3)] = absl::FailedPreconditionError(
      "node spark-3: /m has 0 bytes free but the copy needs 100 more; free space there");
  absl::StatusOr<v1::StageModelResponse> done =
      runner_.Run(Request({"spark-2", "spark-3"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  const v1::StageRun& run = done->run();
  EXPECT_EQ(run.state(), "failed");
  EXPECT_THAT(run.error(), HasSubstr("not staged on spark-3"));
  EXPECT_EQ(run.nodes(0).state(), "done");
  EXPECT_EQ(run.nodes(1).state(), "failed");
  EXPECT_THAT(run.nodes(1).error(), HasSubstr("0 bytes free"));
}

TEST_F(StageRunnerTest, TheSourceIsTheFirstReadyNonTargetHoldingThePath) {
  agents_.trees.clear();
  agents_.trees[Agent(3)] = manifest_;
  agents_.lacking[Agent(2)] = {0};
  absl::StatusOr<v1::StageModelResponse> done = runner_.Run(Request({"spark-2"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->run().from(), "spark-3");
  agents_.trees.clear();
  absl::Status none = runner_.Run(Request({"spark-2"}), nodes_).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(none)) << none;
  EXPECT_THAT(none.message(), HasSubstr("pass --from NODE"));
}

TEST_F(StageRunnerTest, BadRequestsAreRefusedWithTheFix) {
  v1::StageModelRequest relative = Request({"spark-2"});
  relative.set_path("models/x");
  EXPECT_THAT(runner_.Run(relative, nodes_).status().message(), HasSubstr("must be absolute"));
  EXPECT_THAT(runner_.Run(Request({}), nodes_).status().message(), HasSubstr("--to"));
  EXPECT_THAT(runner_.Run(Request({"spark-9"}), nodes_).status().message(),
              HasSubstr("node spark-9 is not Ready"));
  v1::StageModelRequest self = Request({"spark-2"});
  self.set_from("spark-2");
  EXPECT_THAT(runner_.Run(self, nodes_).status().message(), HasSubstr("also a target"));
  EXPECT_THAT(runner_.Run(Request({"spark-2", "spark-2"}), nodes_).status().message(),
              HasSubstr("named twice"));
}

}  // namespace
}  // namespace fleet::controller
