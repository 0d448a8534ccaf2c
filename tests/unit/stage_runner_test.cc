// StageRunner with a fake agent client: the chain it plans (last hop prepared first, each hop
// forwarding what the nodes after it lack), the rounds that re-send rejected chunks, a target
// that fails, and requests refused with the fix; for images, the skip rule (same ID), the chain
// of the targets that lack the image, and the ID comparison after the load. No network, fake
// clock.
#include "controller/stage/stage_runner.h"

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/fake_clock.h"
#include "controller/stage/fake_stage_agent_client.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

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
  struct CancelledRun {
    absl::StatusOr<v1::StageModelResponse> run = absl::UnknownError("not run");
    absl::StatusOr<v1::StageCancelResponse> cancel = absl::UnknownError("not asked");
  };
  // A copy to spark-2 and spark-3, cancelled once the fake holds one of its calls (a send, or
  // a scan with `hold_scans`).
  CancelledRun RunAndCancelOnceHeld() {
    CancelledRun ended;
    std::thread run([&] { ended.run = runner_.Run(Request({"spark-2", "spark-3"}), nodes_); });
    EXPECT_TRUE(agents_.WaitForHeldSend());
    ended.cancel = runner_.Cancel();
    run.join();
    return ended;
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
  // The three targets are finished at once (each fsyncs while the others do).
  agents_.finish_together = 3;
  absl::StatusOr<v1::StageModelResponse> done =
      runner_.Run(Request({"spark-2", "spark-3", "spark-4"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->run().state(), "done") << done->run().DebugString();
  ASSERT_EQ(agents_.calls.size(), 8u);
  EXPECT_THAT(std::vector<std::string>(agents_.calls.begin(), agents_.calls.begin() + 5),
              ElementsAre("scan " + Agent(1), "prepare " + Agent(4), "prepare " + Agent(3),
                          "prepare " + Agent(2), "send " + Agent(1)));
  EXPECT_THAT(
      std::vector<std::string>(agents_.calls.begin() + 5, agents_.calls.end()),
      UnorderedElementsAre("finish " + Agent(2), "finish " + Agent(3), "finish " + Agent(4)));
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

// `fleet stage cancel` while the source still hashes a tree it has never seen: the scan is
// cancelled (not waited for), no other node is asked to scan, nothing is prepared.
TEST_F(StageRunnerTest, CancelStopsTheSourcesScan) {
  agents_.hold_scans = true;
  CancelledRun cancelled = RunAndCancelOnceHeld();
  ASSERT_TRUE(cancelled.cancel.ok()) << cancelled.cancel.status();
  ASSERT_TRUE(cancelled.run.ok()) << cancelled.run.status();
  EXPECT_THAT(agents_.calls, ElementsAre("scan " + Agent(1)));
  for (const v1::StageRun* run : {&cancelled.run->run(), &cancelled.cancel->run()}) {
    EXPECT_EQ(run->state(), "cancelled");
    ASSERT_EQ(run->nodes_size(), 2);
    EXPECT_EQ(run->nodes(0).node(), "spark-2");
    EXPECT_EQ(run->nodes(0).state(), "cancelled");
    EXPECT_EQ(run->nodes(1).state(), "cancelled");
    EXPECT_EQ(run->nodes(1).bytes_sent(), 0u);
  }
}

// `fleet stage cancel` while the source sends: each prepared target is told to abort (which is
// what ends the send), no target is asked to finish, and the run ends "cancelled".
TEST_F(StageRunnerTest, CancelAbortsEveryPreparedTargetAndEndsTheRunCancelled) {
  EXPECT_TRUE(absl::IsFailedPrecondition(runner_.Cancel().status()));
  agents_.lacking[Agent(2)] = {0, 1};
  agents_.lacking[Agent(3)] = {2};
  agents_.hold_sends = true;
  CancelledRun ended = RunAndCancelOnceHeld();
  absl::StatusOr<v1::StageCancelResponse>& cancelled = ended.cancel;
  absl::StatusOr<v1::StageModelResponse>& done = ended.run;
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  ASSERT_TRUE(done.ok()) << done.status();
  const std::string id = agents_.prepares[Agent(2)][0].transfer_id();
  EXPECT_THAT(agents_.calls, ::testing::IsSupersetOf(
                                 {"abort " + Agent(2) + " " + id, "abort " + Agent(3) + " " + id}));
  for (const std::string& call : agents_.calls) {
    EXPECT_FALSE(absl::StartsWith(call, "finish ")) << call;
  }
  const v1::StageStatusResponse status = runner_.Status();
  for (const v1::StageRun* run : {&done->run(), &cancelled->run(), &status.run()}) {
    EXPECT_EQ(run->state(), "cancelled");
    EXPECT_THAT(run->error(), HasSubstr("the next run resumes"));
    ASSERT_EQ(run->nodes_size(), 2);
    EXPECT_EQ(run->nodes(0).state(), "cancelled");
    EXPECT_EQ(run->nodes(1).state(), "cancelled");
    EXPECT_EQ(run->nodes(0).tree_sha256(), "");
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(runner_.Cancel().status()));
  EXPECT_THAT(std::string(runner_.Cancel().status().message()),
              HasSubstr("no stage run in flight"));
}

// The last run is kept in the store: a new runner (a restarted controller) shows it.
TEST_F(StageRunnerTest, TheLastRunIsShownByARunnerStartedLater) {
  FakeStore store;
  agents_.lacking[Agent(2)] = {0};
  StageRunner first(&clock_, &agents_, &store);
  ASSERT_TRUE(first.Load().ok());
  EXPECT_FALSE(first.Status().has_run());
  ASSERT_TRUE(first.Run(Request({"spark-2"}), nodes_).ok());

  StageRunner restarted(&clock_, &agents_, &store);
  ASSERT_TRUE(restarted.Load().ok());
  const v1::StageStatusResponse status = restarted.Status();
  ASSERT_TRUE(status.has_run());
  EXPECT_EQ(status.run().id(), first.Status().run().id());
  EXPECT_EQ(status.run().state(), "done");
  ASSERT_EQ(status.run().nodes_size(), 1);
  EXPECT_EQ(status.run().nodes(0).bytes_sent(), FakeStageAgentClient::kChunkBytes);
  EXPECT_EQ(status.run().nodes(0).tree_sha256(), manifest_.tree_sha256());
}

// A run the store holds in flight belonged to a controller that died during it.
TEST_F(StageRunnerTest, ARunInFlightWhenTheControllerDiedIsInterrupted) {
  FakeStore store;
  v1::StageRun stored;
  stored.set_id("stage-1");
  stored.set_kind("model");
  stored.set_state("copying");
  v1::StageNodeResult* done = stored.add_nodes();
  done->set_node("spark-2");
  done->set_state("done");
  stored.add_nodes()->set_node("spark-3");
  stored.mutable_nodes(1)->set_state("copying");
  ASSERT_TRUE(store.PutLastStageRun(stored).ok());

  StageRunner restarted(&clock_, &agents_, &store);
  ASSERT_TRUE(restarted.Load().ok());
  const v1::StageRun run = restarted.Status().run();
  EXPECT_EQ(run.id(), "stage-1");
  EXPECT_EQ(run.state(), "interrupted");
  EXPECT_THAT(run.error(), HasSubstr("run the same command again"));
  EXPECT_EQ(run.nodes(0).state(), "done");
  EXPECT_EQ(run.nodes(1).state(), "interrupted");
  EXPECT_EQ((*store.LoadLastStageRun())->state(), "interrupted");
  EXPECT_TRUE(absl::IsFailedPrecondition(restarted.Cancel().status()));
}

// What the controller's metrics are told: a start with the kind, an end with the final run.
TEST_F(StageRunnerTest, EveryRunReportsItsStartAndItsEnd) {
  std::vector<std::string> seen;
  StageRunner runner(&clock_, &agents_, nullptr,
                     {.started = [&](const std::string& kind) { seen.push_back("start " + kind); },
                      .ended =
                          [&](const v1::StageRun& run) {
                            seen.push_back(absl::StrCat("end ", run.kind(), " ", run.state()));
                          }});
  agents_.lacking[Agent(2)] = {0};
  ASSERT_TRUE(runner.Run(Request({"spark-2"}), nodes_).ok());
  v1::StageModelRequest nowhere = Request({"spark-2"});
  nowhere.set_path("/absent");
  EXPECT_FALSE(runner.Run(nowhere, nodes_).ok());
  EXPECT_THAT(seen,
              ElementsAre("start model", "end model done", "start model", "end model failed"));
}

constexpr const char* kImageId =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
constexpr const char* kOldId =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";

class StageRunnerImageTest : public StageRunnerTest {
 protected:
  void SetUp() override { agents_.images[Agent(1)] = kImageId; }
  v1::StageImageRequest Request(std::vector<std::string> to, std::string from = "") {
    v1::StageImageRequest request;
    request.set_ref("fleet-test/app:1");
    request.set_from(std::move(from));
    for (std::string& n : to) request.add_to(std::move(n));
    return request;
  }
};

TEST_F(StageRunnerImageTest, SkipsTargetsWithTheSameIdAndChainsTheOthers) {
  agents_.images[Agent(3)] = kImageId;  // has it: skipped
  agents_.images[Agent(4)] = kOldId;    // an older build under the same tag: replaced
  agents_.finish_together = 2;
  absl::StatusOr<v1::StageImageResponse> done =
      runner_.RunImage(Request({"spark-2", "spark-3", "spark-4"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(agents_.calls.size(), 9u);
  EXPECT_THAT(std::vector<std::string>(agents_.calls.begin(), agents_.calls.begin() + 7),
              ElementsAre("inspect " + Agent(1), "inspect " + Agent(2), "inspect " + Agent(3),
                          "inspect " + Agent(4), "receive " + Agent(4), "receive " + Agent(2),
                          "send-image " + Agent(1)));
  // The two loads are waited for at once.
  EXPECT_THAT(std::vector<std::string>(agents_.calls.begin() + 7, agents_.calls.end()),
              UnorderedElementsAre("finish-image " + Agent(2), "finish-image " + Agent(4)));
  // source -> spark-2 -> spark-4: each hop admits only its upstream, with its own token.
  const v1::StageImageReceiveRequest& last = agents_.receives[Agent(4)][0];
  const v1::StageImageReceiveRequest& first = agents_.receives[Agent(2)][0];
  EXPECT_EQ(last.peer_ip(), "192.168.100.2");
  EXPECT_EQ(last.bind_ip(), "192.168.100.4");
  EXPECT_FALSE(last.has_forward());
  EXPECT_EQ(first.peer_ip(), "192.168.100.1");
  ASSERT_TRUE(first.has_forward());
  EXPECT_THAT(first.forward().target(), ::testing::StartsWith("192.168.100.4:"));
  EXPECT_EQ(first.forward().token(), last.token());
  EXPECT_EQ(first.forward().source_ip(), "192.168.100.2");
  EXPECT_EQ(first.token().size(), 32u);
  EXPECT_NE(first.token(), last.token());
  ASSERT_EQ(agents_.image_sends.size(), 1u);
  EXPECT_EQ(agents_.image_sends[0].token(), first.token());
  EXPECT_THAT(agents_.image_sends[0].target(), ::testing::StartsWith("192.168.100.2:"));
  EXPECT_EQ(agents_.image_sends[0].ref(), "fleet-test/app:1");

  const v1::StageRun& run = done->run();
  EXPECT_EQ(run.kind(), "image");
  EXPECT_EQ(run.from(), "spark-1");
  EXPECT_EQ(run.state(), "done");
  ASSERT_EQ(run.nodes_size(), 3);
  for (const v1::StageNodeResult& n : run.nodes()) {
    EXPECT_EQ(n.state(), "done") << n.node();
    EXPECT_EQ(n.image_id(), kImageId) << n.node();
  }
  EXPECT_FALSE(run.nodes(0).skipped());
  EXPECT_EQ(run.nodes(0).bytes_sent(), FakeStageAgentClient::kImageBytes);
  EXPECT_TRUE(run.nodes(1).skipped());
  EXPECT_EQ(run.nodes(1).bytes_sent(), 0u);
  EXPECT_FALSE(run.nodes(2).skipped());
  EXPECT_EQ(runner_.Status().run().kind(), "image");
}

// Cancelling an image run aborts each receiving target (its docker load is killed there); a
// target that had the image already stays "done".
TEST_F(StageRunnerImageTest, CancelAbortsTheLoadsAndKeepsSkippedTargetsDone) {
  agents_.images[Agent(3)] = kImageId;
  agents_.hold_sends = true;
  absl::StatusOr<v1::StageImageResponse> done = absl::UnknownError("not run");
  std::thread run([&] { done = runner_.RunImage(Request({"spark-2", "spark-3"}), nodes_); });
  ASSERT_TRUE(agents_.WaitForHeldSend());
  ASSERT_TRUE(runner_.Cancel().ok());
  run.join();
  ASSERT_TRUE(done.ok()) << done.status();
  const std::string id = agents_.receives[Agent(2)][0].transfer_id();
  EXPECT_THAT(agents_.calls, ::testing::Contains("abort-image " + Agent(2) + " " + id));
  EXPECT_THAT(agents_.calls, ::testing::Not(::testing::Contains("finish-image " + Agent(2))));
  EXPECT_EQ(done->run().state(), "cancelled");
  EXPECT_EQ(done->run().nodes(0).state(), "cancelled");
  EXPECT_EQ(done->run().nodes(1).state(), "done");
  EXPECT_TRUE(done->run().nodes(1).skipped());
}

TEST_F(StageRunnerImageTest, NothingIsSentWhenEveryTargetHasTheImage) {
  agents_.images[Agent(2)] = kImageId;
  agents_.images[Agent(3)] = kImageId;
  absl::StatusOr<v1::StageImageResponse> done =
      runner_.RunImage(Request({"spark-2", "spark-3"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->run().state(), "done");
  EXPECT_TRUE(agents_.receives.empty());
  EXPECT_TRUE(agents_.image_sends.empty());
}

TEST_F(StageRunnerImageTest, AnotherIdAfterTheLoadFailsNamingTheNode) {
  agents_.loaded_ids[Agent(3)] = kOldId;
  absl::StatusOr<v1::StageImageResponse> done =
      runner_.RunImage(Request({"spark-2", "spark-3"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  const v1::StageRun& run = done->run();
  EXPECT_EQ(run.state(), "failed");
  EXPECT_THAT(run.error(), HasSubstr("not staged on spark-3"));
  EXPECT_EQ(run.nodes(0).state(), "done");
  EXPECT_EQ(run.nodes(1).state(), "failed");
  EXPECT_EQ(run.nodes(1).image_id(), kOldId);
  EXPECT_THAT(run.nodes(1).error(), HasSubstr("node spark-3 holds fleet-test/app:1 as"));
  EXPECT_THAT(run.nodes(1).error(), HasSubstr(kImageId));
}

TEST_F(StageRunnerImageTest, TargetsWithoutDockerOrWithAFailedLoadFailAloneWithTheReason) {
  agents_.inspect_errors[Agent(2)] = absl::FailedPreconditionError(
      "no docker CLI on node spark-2: not found; install docker.io there and start dockerd");
  agents_.load_errors[Agent(3)] =
      "node spark-3: docker load failed (exited with status 1): "
      "\"Error processing tar file(exit status 1): unexpected EOF\"";
  absl::StatusOr<v1::StageImageResponse> done =
      runner_.RunImage(Request({"spark-2", "spark-3", "spark-4"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  const v1::StageRun& run = done->run();
  EXPECT_THAT(run.nodes(0).error(), HasSubstr("install docker.io"));
  EXPECT_THAT(run.nodes(1).error(), HasSubstr("unexpected EOF"));
  EXPECT_EQ(run.nodes(2).state(), "done");
  EXPECT_THAT(run.error(), HasSubstr("not staged on spark-2, spark-3"));
}

TEST_F(StageRunnerImageTest, AHopThatCannotReceiveLeavesTheChainWhichIsPlannedAgain) {
  agents_.receive_errors[Agent(3)] =
      absl::FailedPreconditionError("node spark-3: cannot start docker load: not found");
  absl::StatusOr<v1::StageImageResponse> done =
      runner_.RunImage(Request({"spark-2", "spark-3"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_THAT(agents_.calls,
              ElementsAre("inspect " + Agent(1), "inspect " + Agent(2), "inspect " + Agent(3),
                          "receive " + Agent(3), "receive " + Agent(2), "send-image " + Agent(1),
                          "finish-image " + Agent(2)));
  EXPECT_FALSE(agents_.receives[Agent(2)][0].has_forward());
  EXPECT_EQ(done->run().nodes(0).state(), "done");
  EXPECT_EQ(done->run().nodes(1).state(), "failed");
}

TEST_F(StageRunnerImageTest, ASourceWithoutTheImageIsAClearError) {
  agents_.images.clear();
  absl::Status named = runner_.RunImage(Request({"spark-2"}, "spark-1"), nodes_).status();
  EXPECT_EQ(named.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(named.message(),
            "image fleet-test/app:1 not found on node spark-1; pull or build it there, or name "
            "another --from");
  absl::Status any = runner_.RunImage(Request({"spark-2"}), nodes_).status();
  EXPECT_THAT(any.message(), HasSubstr("spark-1: not there; spark-3: not there"));
  EXPECT_THAT(any.message(), HasSubstr("name --from NODE"));
  EXPECT_EQ(runner_.Status().run().state(), "failed");
  // The first Ready non-target that has it is the source.
  agents_.images[Agent(3)] = kImageId;
  absl::StatusOr<v1::StageImageResponse> done = runner_.RunImage(Request({"spark-2"}), nodes_);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->run().from(), "spark-3");
}

TEST_F(StageRunnerImageTest, BadRequestsAreRefusedWithTheFix) {
  v1::StageImageRequest flag = Request({"spark-2"});
  flag.set_ref("--help");
  EXPECT_THAT(runner_.RunImage(flag, nodes_).status().message(), HasSubstr("repo/name:tag"));
  EXPECT_THAT(runner_.RunImage(Request({}), nodes_).status().message(), HasSubstr("--to"));
  EXPECT_THAT(runner_.RunImage(Request({"spark-2"}, "spark-2"), nodes_).status().message(),
              HasSubstr("also a target"));
  EXPECT_THAT(runner_.RunImage(Request({"spark-9"}), nodes_).status().message(),
              HasSubstr("spark-9"));
  EXPECT_TRUE(agents_.calls.empty());
}

}  // namespace
}  // namespace fleet::controller
