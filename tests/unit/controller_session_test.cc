// ControllerSession driven by hand against a fake controller: register, heartbeat, back off
// while the controller is away, and register again when it has forgotten the node.
#include "agent/controller_session.h"

#include "agent/fake_controller_client.h"
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

TEST(ControllerSessionTest, RegistersThenHeartbeatsAtTheControllersPeriod) {
  FakeControllerClient controller;
  controller.heartbeat_period_ms = 250;
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  EXPECT_EQ(session.Step(), absl::Milliseconds(250));
  EXPECT_TRUE(session.registered());
  EXPECT_EQ(session.Step(), absl::Milliseconds(250));
  EXPECT_EQ(session.Step(), absl::Milliseconds(250));
  ASSERT_EQ(controller.registers.size(), 1u);
  ASSERT_EQ(controller.heartbeats.size(), 2u);
  EXPECT_EQ(controller.heartbeats[0].node_id(), "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(controller.heartbeats[0].sequence(), 1u);
  EXPECT_EQ(controller.heartbeats[1].sequence(), 2u);
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
  controller.heartbeat_results.push_back(absl::UnavailableError("down"));
  controller.heartbeat_results.push_back(absl::DeadlineExceededError("slow"));
  EXPECT_EQ(session.Step(), absl::Milliseconds(200));
  EXPECT_FALSE(session.connected());
  EXPECT_EQ(session.Step(), absl::Milliseconds(400));
  EXPECT_EQ(session.Step(), absl::Seconds(1));
  EXPECT_TRUE(session.connected());
  EXPECT_EQ(controller.registers.size(), 1u);
  // The backoff starts over after a success.
  controller.heartbeat_results.push_back(absl::UnavailableError("down"));
  EXPECT_EQ(session.Step(), absl::Milliseconds(200));
}

TEST(ControllerSessionTest, RegistersAgainWhenTheControllerForgotTheNode) {
  FakeControllerClient controller;
  ControllerSession session(&controller, Registration(), NoJitter(), 1);
  session.Step();
  v1::HeartbeatResponse forgot;
  forgot.set_reregister(true);
  controller.heartbeat_results.push_back(forgot);
  EXPECT_EQ(session.Step(), absl::ZeroDuration());
  EXPECT_FALSE(session.registered());
  session.Step();
  EXPECT_TRUE(session.registered());
  EXPECT_EQ(controller.registers.size(), 2u);
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
