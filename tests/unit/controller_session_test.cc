// ControllerSession driven by hand against a fake controller: register, heartbeat with the
// session's key, report shards when they change or the controller asks, back off while the
// controller is away, and register again when it has forgotten the node or the session.
#include "agent/session/controller_session.h"

#include "agent/session/fake_controller_client.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

v1::RegisterRequest Registration() {
  v1::RegisterRequest r;
  r.mutable_identity()->set_node_id("0123456789abcdef0123456789abcdef");
  r.mutable_identity()->set_name("spark-1");
  r.set_advertise_address("10.0.0.2:7101");
  return r;
}

BackoffPolicy NoJitter() {
  BackoffPolicy p;
  p.jitter = 0;
  return p;
}

v1::ShardStatus Shard(v1::ShardState state) {
  v1::ShardStatus s;
  s.set_group("demo");
  s.set_generation(1);
  s.set_state(state);
  return s;
}

TEST(ControllerSessionTest, RegistersThenHeartbeatsWithTheSessionAtTheControllersPeriod) {
  FakeControllerClient controller;
  controller.heartbeat_period_ms = 250;
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  EXPECT_EQ(session.Step(), absl::Milliseconds(250));
  EXPECT_TRUE(session.registered());
  EXPECT_EQ(session.Step(), absl::Milliseconds(250));
  EXPECT_EQ(session.Step(), absl::Milliseconds(250));
  ASSERT_EQ(controller.registers.size(), 1u);
  ASSERT_EQ(controller.heartbeats.size(), 2u);
  EXPECT_TRUE(controller.reports.empty());
  EXPECT_EQ(controller.heartbeats[0].node_id(), "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(controller.heartbeats[0].session(), 1001u);
  EXPECT_EQ(controller.heartbeats[0].sequence(), 1u);
  EXPECT_EQ(controller.heartbeats[1].sequence(), 2u);
  EXPECT_EQ(controller.heartbeat_keys[0], std::string(32, 'b'));
  EXPECT_EQ(controller.heartbeat_ports[0], 7100);
}

TEST(ControllerSessionTest, ChangedShardsAreReportedAtOnceAndOnlyThen) {
  FakeControllerClient controller;
  std::vector<v1::ShardStatus> shards = {Shard(v1::SHARD_STATE_STARTING)};
  ControllerSession session(&controller, Registration(), NoJitter(), 1, [&] { return shards; });
  session.Step();
  ASSERT_EQ(controller.registers[0].shards_size(), 1);
  const uint64_t registered = controller.registers[0].shards_version();
  session.Step();  // unchanged: a heartbeat naming the registered version
  ASSERT_EQ(controller.heartbeats.size(), 1u);
  EXPECT_EQ(controller.heartbeats[0].shards_version(), registered);

  shards[0].set_state(v1::SHARD_STATE_READY);
  EXPECT_EQ(session.Step(), absl::Seconds(1));
  ASSERT_EQ(controller.reports.size(), 1u);
  EXPECT_EQ(controller.reports[0].shards(0).state(), v1::SHARD_STATE_READY);
  EXPECT_GT(controller.reports[0].shards_version(), registered);
  session.Step();
  session.Step();
  EXPECT_EQ(controller.reports.size(), 1u);
  EXPECT_EQ(controller.heartbeats.back().shards_version(), controller.reports[0].shards_version());
}

TEST(ControllerSessionTest, AFailedReportIsRetriedAndTheControllerCanAskForOne) {
  FakeControllerClient controller;
  std::vector<v1::ShardStatus> shards;
  ControllerSession session(&controller, Registration(), NoJitter(), 1, [&] { return shards; });
  session.Step();
  shards.push_back(Shard(v1::SHARD_STATE_READY));
  controller.report_results.push_back(absl::UnavailableError("down"));
  EXPECT_EQ(session.Step(), absl::Milliseconds(200));
  EXPECT_FALSE(session.connected());
  EXPECT_EQ(session.Step(), absl::Seconds(1));
  ASSERT_EQ(controller.reports.size(), 2u);
  EXPECT_TRUE(controller.heartbeats.empty());

  controller.heartbeat_results.push_back(v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  EXPECT_EQ(session.Step(), absl::ZeroDuration());
  EXPECT_EQ(session.Step(), absl::Seconds(1));
  ASSERT_EQ(controller.reports.size(), 3u);
  EXPECT_EQ(controller.reports[2].shards_size(), 1);
  session.Step();
  EXPECT_EQ(controller.heartbeats.size(), 2u);
}

TEST(ControllerSessionTest, ControllerAwayAtStartIsRetriedWithCappedBackoff) {
  FakeControllerClient controller;
  for (int i = 0; i < 8; ++i) controller.register_errors.push_back(absl::UnavailableError("down"));
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  std::vector<absl::Duration> waits;
  for (int i = 0; i < 8; ++i) waits.push_back(session.Step());
  EXPECT_EQ(waits[0], absl::Milliseconds(200));
  EXPECT_EQ(waits[1], absl::Milliseconds(400));
  EXPECT_EQ(waits[2], absl::Milliseconds(800));
  EXPECT_EQ(waits[7], absl::Seconds(5));  // capped
  EXPECT_FALSE(session.registered());
  EXPECT_EQ(session.Step(), absl::Seconds(1));  // the controller came up
  EXPECT_TRUE(session.registered());
  EXPECT_TRUE(session.connected());
}

TEST(ControllerSessionTest, HeartbeatFailuresBackOffAndRecoverWithoutReregistering) {
  FakeControllerClient controller;
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  session.Step();
  controller.heartbeat_results.push_back(absl::DeadlineExceededError("no answer"));
  controller.heartbeat_results.push_back(absl::DeadlineExceededError("no answer"));
  EXPECT_EQ(session.Step(), absl::Milliseconds(200));
  EXPECT_FALSE(session.connected());
  EXPECT_EQ(session.Step(), absl::Milliseconds(400));
  EXPECT_EQ(session.Step(), absl::Seconds(1));
  EXPECT_TRUE(session.connected());
  EXPECT_EQ(controller.registers.size(), 1u);
  // The sequence goes on across failures: the controller drops none as a replay.
  EXPECT_EQ(controller.heartbeats[2].sequence(), 3u);
  // The backoff starts over after a success.
  controller.heartbeat_results.push_back(absl::DeadlineExceededError("no answer"));
  EXPECT_EQ(session.Step(), absl::Milliseconds(200));
}

TEST(ControllerSessionTest, RegistersAgainWithANewSessionWhenTheControllerForgotIt) {
  FakeControllerClient controller;
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  session.Step();
  session.Step();
  controller.heartbeat_results.push_back(v1::HEARTBEAT_VERDICT_REGISTER);
  EXPECT_EQ(session.Step(), absl::ZeroDuration());
  EXPECT_FALSE(session.registered());
  session.Step();
  EXPECT_TRUE(session.registered());
  EXPECT_EQ(controller.registers.size(), 2u);
  session.Step();
  EXPECT_EQ(controller.heartbeats.back().session(), 1002u);
  EXPECT_EQ(controller.heartbeats.back().sequence(), 1u);
  EXPECT_EQ(controller.heartbeat_keys.back(), std::string(32, 'c'));
}

TEST(ControllerSessionTest, AReportAnsweredReregisterRegistersAgain) {
  FakeControllerClient controller;
  std::vector<v1::ShardStatus> shards;
  ControllerSession session(&controller, Registration(), NoJitter(), 1, [&] { return shards; });
  session.Step();
  shards.push_back(Shard(v1::SHARD_STATE_READY));
  v1::ReportShardsResponse forgot;
  forgot.set_reregister(true);
  controller.report_results.push_back(forgot);
  EXPECT_EQ(session.Step(), absl::ZeroDuration());
  EXPECT_FALSE(session.registered());
  session.Step();
  ASSERT_EQ(controller.registers.size(), 2u);
  EXPECT_EQ(controller.registers[1].shards_size(), 1);
}

TEST(ControllerSessionTest, AControllerWithoutHeartbeatPortIsRetriedNotUsed) {
  FakeControllerClient controller;
  controller.without_heartbeat_session = true;  // a controller older than heartbeat datagrams
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  EXPECT_EQ(session.Step(), absl::Milliseconds(200));
  EXPECT_FALSE(session.registered());
  EXPECT_TRUE(controller.heartbeats.empty());
}

TEST(BackoffTest, JitterStaysWithinItsBand) {
  BackoffPolicy p;
  p.jitter = 0.2;
  Backoff backoff(p, 7);
  for (int i = 0; i < 50; ++i) {
    absl::Duration expected = std::min(p.initial * (1 << std::min(i, 10)), p.max);
    absl::Duration d = backoff.Next();
    EXPECT_LE(d, expected);
    EXPECT_GE(d, expected * 0.8);
  }
}

}  // namespace
}  // namespace fleet::agent
