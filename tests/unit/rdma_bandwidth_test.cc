// The RDMA test engine and the agent's RDMA endpoints on a fake verbs device and a fake clock:
// perftest's formulas exactly, completion moderation, the QP state machine, the ping-pong
// latency, the queue-pair exchange and injected failures.
#include "agent/fabric/rdma_bandwidth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "agent/fabric/fake_verbs_device.h"
#include "agent/fabric/rdma_endpoints.h"
#include "agent/fabric/verbs_device_impl.h"
#include "common/fake_clock.h"

namespace fleet::agent {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

v1::RdmaPrepareRequest Request(const std::string& device, v1::RdmaSpec spec) {
  v1::RdmaPrepareRequest request;
  *request.mutable_spec() = std::move(spec);
  request.set_device(device);
  request.set_port(1);
  request.set_gid_index(3);
  return request;
}

v1::RdmaSpec Spec(uint32_t qps, uint32_t bytes, uint32_t depth, uint32_t cq_mod,
                  uint32_t latency = 0) {
  v1::RdmaSpec spec;
  spec.set_test_id("t1");
  spec.set_queue_pairs(qps);
  spec.set_message_bytes(bytes);
  spec.set_tx_depth(depth);
  spec.set_cq_mod(cq_mod);
  spec.set_duration_ms(100);
  spec.set_latency_iterations(latency);
  return spec;
}

class RdmaEngineTest : public ::testing::Test {
 protected:
  // Both ends prepared and connected with `spec`; the requester on dev_a.
  void Connect(const v1::RdmaSpec& spec, RdmaEngineOptions options = {}) {
    auto responder = RdmaTestEnd::Prepare(fabric_, Request("dev_b", spec), &clock_, options);
    ASSERT_TRUE(responder.ok()) << responder.status();
    auto requester = RdmaTestEnd::Prepare(fabric_, Request("dev_a", spec), &clock_, options);
    ASSERT_TRUE(requester.ok()) << requester.status();
    responder_ = *std::move(responder);
    requester_ = *std::move(requester);
    ASSERT_TRUE(responder_->Connect(requester_->endpoint()).ok());
    ASSERT_TRUE(requester_->Connect(responder_->endpoint()).ok());
  }

  FakeClock clock_;
  FakeVerbsFabric fabric_{{"dev_a", "dev_b"}};
  std::unique_ptr<RdmaTestEnd> responder_;
  std::unique_ptr<RdmaTestEnd> requester_;
};

TEST(RdmaSpecTest, PerftestDefaults) {
  v1::RdmaSpec in;
  in.set_test_id("t");
  in.set_duration_ms(1000);
  absl::StatusOr<v1::RdmaSpec> spec = ResolveRdmaSpec(in);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->queue_pairs(), 4u);
  EXPECT_EQ(spec->message_bytes(), 65536u);
  EXPECT_EQ(spec->tx_depth(), 128u);
  // perftest turns moderation off above 8 KiB unless asked; at 4 KiB it is DEF_CQ_MOD 100.
  EXPECT_EQ(spec->cq_mod(), 1u);
  in.set_message_bytes(4096);
  EXPECT_EQ(ResolveRdmaSpec(in)->cq_mod(), 100u);
  in.set_cq_mod(200);
  EXPECT_THAT(ResolveRdmaSpec(in).status().message(),
              AllOf(HasSubstr("cq_mod 200"), HasSubstr("1..tx_depth 128")));
}

TEST(RdmaFormulaTest, GigabitsPerSecondIsPerftests) {
  // 1,250,000,000 bytes in 1 s: perftest's bytes / s / 125,000,000 = 10 Gb/s.
  EXPECT_DOUBLE_EQ(GigabitsPerSecond(1'250'000'000, absl::Seconds(1)), 10.0);
  EXPECT_DOUBLE_EQ(GigabitsPerSecond(65536, absl::Nanoseconds(524288)), 1.0);
  EXPECT_EQ(GigabitsPerSecond(100, absl::ZeroDuration()), 0);
}

TEST(RdmaFormulaTest, MedianAndNearestRankP99) {
  std::vector<absl::Duration> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(absl::Microseconds(i));
  LatencySummary s = SummarizeLatency(samples);
  EXPECT_DOUBLE_EQ(s.median_us, 51);  // sorted[50]
  EXPECT_DOUBLE_EQ(s.p99_us, 99);     // sorted[ceil(99) - 1]
  EXPECT_DOUBLE_EQ(SummarizeLatency({absl::Microseconds(7)}).p99_us, 7);
}

TEST_F(RdmaEngineTest, BandwidthIsBytesTimesIterationsOverTime) {
  // Every 64 KiB WRITE takes 524,288 ns on the fake wire: exactly 1 Gb/s.
  fabric_.on_write = [this](uint32_t) { clock_.Advance(absl::Nanoseconds(524288)); };
  Connect(Spec(4, 65536, 128, 0));
  absl::StatusOr<v1::RdmaRunResponse> run = requester_->Run();
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->messages(), static_cast<uint64_t>(fabric_.writes()));
  EXPECT_EQ(run->bytes(), run->messages() * 65536);
  EXPECT_DOUBLE_EQ(run->seconds(), run->messages() * 524288e-9);
  EXPECT_DOUBLE_EQ(run->bandwidth_gbps(), run->bytes() * 8 / 1e9 / run->seconds());
  EXPECT_DOUBLE_EQ(run->bandwidth_gbps(), 1.0);
  // The 4 send queues start full (512 WRITEs, longer than the 100 ms) and none is added after.
  EXPECT_EQ(run->messages(), 512u);
  EXPECT_EQ(run->latency_samples(), 0u);
}

TEST_F(RdmaEngineTest, OneCompletionPerCqModWrites) {
  fabric_.on_write = [this](uint32_t) { clock_.Advance(absl::Microseconds(10)); };
  Connect(Spec(2, 4096, 128, 0));  // cq_mod 100 at 4 KiB
  absl::StatusOr<v1::RdmaRunResponse> run = requester_->Run();
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->messages() % 100, 0u);
  EXPECT_EQ(fabric_.completions() * 100, fabric_.writes());
  EXPECT_EQ(run->messages(), static_cast<uint64_t>(fabric_.writes()));
  EXPECT_GE(run->seconds(), 0.1);
}

TEST_F(RdmaEngineTest, PeakIsTheBestCompletionWindow) {
  // One WRITE in flight at a time: 1 ms each for 50 ms, then 0.5 ms each until 100 ms.
  int written = 0;
  fabric_.on_write = [&](uint32_t) {
    clock_.Advance(++written <= 50 ? absl::Milliseconds(1) : absl::Microseconds(500));
  };
  Connect(Spec(1, 65536, 1, 1), {.peak_window = absl::Milliseconds(10)});
  absl::StatusOr<v1::RdmaRunResponse> run = requester_->Run();
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->messages(), 150u);
  EXPECT_DOUBLE_EQ(run->bandwidth_gbps(), 150 * 65536 * 8 / 1e9 / 0.1);  // 0.786432
  EXPECT_NEAR(run->peak_gbps(), 20 * 65536 * 8 / 1e9 / 0.01, 1e-9);      // 1.048576
}

TEST_F(RdmaEngineTest, LatencyIsHalfTheRoundTrip) {
  // A ping and its pong each take 3 us on the fake wire: a 6 us round trip, 3 us one way.
  fabric_.on_write = [this](uint32_t bytes) {
    clock_.Advance(bytes == 8 ? absl::Microseconds(3) : absl::Milliseconds(1));
  };
  Connect(Spec(1, 65536, 4, 1, /*latency=*/40));
  std::atomic<bool> stop{false};
  absl::StatusOr<uint32_t> answered = 0u;
  std::thread pongs([&] { answered = responder_->ServePongs(stop); });
  absl::StatusOr<v1::RdmaRunResponse> run = requester_->Run();
  pongs.join();
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(*answered, 40u);
  EXPECT_EQ(run->latency_samples(), 40u);
  EXPECT_DOUBLE_EQ(run->latency_median_us(), 3.0);
  EXPECT_DOUBLE_EQ(run->latency_p99_us(), 3.0);
}

TEST_F(RdmaEngineTest, ExchangesGidsAndQueuePairs) {
  Connect(Spec(4, 65536, 128, 0));
  const v1::RdmaEndpoint& a = requester_->endpoint();
  EXPECT_EQ(a.device(), "dev_a");
  EXPECT_EQ(a.queue_pairs_size(), 4);
  EXPECT_EQ(a.gid().size(), 16u);
  EXPECT_EQ(a.mtu(), 4096u);
  EXPECT_EQ(a.length(), 4 * 65536u + 128);
  for (const v1::RdmaQueuePair& qp : a.queue_pairs()) EXPECT_LE(qp.psn(), 0xFFFFFFu);
  // Connecting twice is refused: the queue pairs are past RTR.
  EXPECT_THAT(requester_->Connect(responder_->endpoint()).message(),
              HasSubstr("connected already"));
}

TEST_F(RdmaEngineTest, RunBeforeConnectAndPostBeforeRtsFail) {
  auto end = RdmaTestEnd::Prepare(fabric_, Request("dev_a", Spec(1, 65536, 4, 1)), &clock_);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ((*end)->Run().status().code(), absl::StatusCode::kFailedPrecondition);

  // The seam itself, as a real device behaves: no WRITE before RTS, no skipped transition.
  auto context = fabric_.Open("dev_b");
  ASSERT_TRUE(context.ok());
  auto cq = (*context)->CreateCompletionQueue(4);
  auto qp = (*context)->CreateQueuePair(**cq, 4);
  std::vector<uint8_t> memory(64);
  auto mr = (*context)->RegisterMemory(memory.data(), memory.size());
  ASSERT_TRUE(qp.ok() && mr.ok());
  absl::Status early = (*qp)->PostWrite(**mr, memory.data(), 8, 0, 0, 1, true);
  EXPECT_THAT(early.message(),
              AllOf(HasSubstr("dev_b"), HasSubstr("before RTS"), HasSubstr("Invalid argument")));
  EXPECT_THAT((*qp)->ToRts(1).message(), HasSubstr("ibv_modify_qp(RTS)"));
}

TEST_F(RdmaEngineTest, RegMrEnomemNamesTheMemlockFix) {
  fabric_.reg_mr_errno = ENOMEM;
  auto end = RdmaTestEnd::Prepare(fabric_, Request("dev_a", Spec(4, 65536, 128, 0)), &clock_);
  EXPECT_EQ(end.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(end.status().message(),
              AllOf(HasSubstr("dev_a"), HasSubstr("ibv_reg_mr"),
                    HasSubstr("Cannot allocate memory"), HasSubstr("LimitMEMLOCK=infinity")));
  EXPECT_EQ(fabric_.open_contexts(), 0);
}

TEST_F(RdmaEngineTest, AQueuePairThatFailsMidRunEndsTheTestWithItsStatus) {
  fabric_.on_write = [this](uint32_t) { clock_.Advance(absl::Microseconds(5)); };
  fabric_.fail_after_writes = 300;
  fabric_.fail_device = "dev_a";
  Connect(Spec(4, 65536, 128, 0));
  absl::StatusOr<v1::RdmaRunResponse> run = requester_->Run();
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(run.status().message(), AllOf(HasSubstr("dev_a"), HasSubstr("to dev_b"),
                                            HasSubstr("transport retry counter exceeded")));
}

TEST_F(RdmaEngineTest, AnUnknownDeviceIsNamedWithTheOnesThereAre) {
  auto end = RdmaTestEnd::Prepare(fabric_, Request("mlx5_9", Spec(4, 65536, 128, 0)), &clock_);
  EXPECT_EQ(end.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(end.status().message(), AllOf(HasSubstr("mlx5_9"), HasSubstr("dev_a, dev_b")));
}

TEST(RdmaEndpointsTest, FourCallsRunATestAndFinishFreesEverything) {
  FakeClock clock;
  FakeVerbsFabric fabric({"dev_a", "dev_b"});
  fabric.on_write = [&](uint32_t bytes) {
    clock.Advance(bytes == 8 ? absl::Microseconds(2) : absl::Milliseconds(1));
  };
  RdmaEndpoints requester(&fabric, &clock);
  RdmaEndpoints responder(&fabric, &clock);
  v1::RdmaSpec spec = Spec(2, 65536, 16, 1, /*latency=*/10);
  auto to = responder.Prepare(Request("dev_b", spec));
  auto from = requester.Prepare(Request("dev_a", spec));
  ASSERT_TRUE(to.ok() && from.ok());
  EXPECT_EQ(responder.Prepare(Request("dev_b", spec)).status().code(),
            absl::StatusCode::kAlreadyExists);

  v1::RdmaConnectRequest connect;
  connect.set_test_id("t1");
  *connect.mutable_peer() = *from;
  ASSERT_TRUE(responder.Connect(connect).ok());
  v1::RdmaRunRequest run;
  run.set_test_id("t1");
  *run.mutable_peer() = *to;
  absl::StatusOr<v1::RdmaRunResponse> figures = requester.Run(run);
  ASSERT_TRUE(figures.ok()) << figures.status();
  EXPECT_EQ(figures->latency_samples(), 10u);
  EXPECT_DOUBLE_EQ(figures->latency_median_us(), 2.0);
  EXPECT_DOUBLE_EQ(figures->bandwidth_gbps(), 65536 * 8 / 1e9 / 1e-3);

  v1::RdmaFinishRequest finish;
  finish.set_test_id("t1");
  EXPECT_TRUE(requester.Finish(finish).ok());
  EXPECT_TRUE(responder.Finish(finish).ok());
  EXPECT_TRUE(responder.Finish(finish).ok());  // a retried finish is harmless
  EXPECT_EQ(fabric.open_contexts(), 0);
  EXPECT_EQ(fabric.open_queue_pairs(), 0);
  EXPECT_EQ(fabric.open_memory_regions(), 0);
  EXPECT_EQ(requester.Run(run).status().code(), absl::StatusCode::kNotFound);
}

TEST(RdmaEndpointsTest, UnfinishedTestsExpire) {
  FakeClock clock;
  FakeVerbsFabric fabric({"dev_a", "dev_b"});
  RdmaEndpoints endpoints(&fabric, &clock);
  v1::RdmaSpec spec = Spec(1, 65536, 4, 1);
  ASSERT_TRUE(endpoints.Prepare(Request("dev_a", spec)).ok());
  clock.Advance(absl::Milliseconds(100) + absl::Seconds(30));
  spec.set_test_id("t2");
  ASSERT_TRUE(endpoints.Prepare(Request("dev_b", spec)).ok());
  EXPECT_EQ(endpoints.in_flight(), 1);
  EXPECT_EQ(fabric.open_contexts(), 1);
}

// The real device's loader: every symbol it needs resolves in this machine's libibverbs, and a
// device that cannot be opened is answered with what to do. The build machine has libibverbs
// but no kernel verbs support, so libibverbs answers ENOSYS there; with verbs devices, an absent
// one is named with the ones there are.
TEST(VerbsDevicesImplTest, AnAbsentDeviceIsAnsweredWithTheFix) {
  VerbsDevicesImpl devices;
  absl::StatusOr<std::unique_ptr<VerbsContext>> context = devices.Open("fleet-absent0");
  ASSERT_FALSE(context.ok());
  const std::string message(context.status().message());
  if (message.find("needs libibverbs") != std::string::npos) {
    EXPECT_THAT(message, HasSubstr("install rdma-core"));
    GTEST_SKIP() << "no libibverbs here: " << message;
  }
  if (absl::IsFailedPrecondition(context.status())) {
    EXPECT_THAT(message, AllOf(HasSubstr("ibv_get_device_list: Function not implemented"),
                               HasSubstr("fleet-absent0"), HasSubstr("modprobe ib_uverbs")));
    return;
  }
  EXPECT_EQ(context.status().code(), absl::StatusCode::kNotFound) << context.status();
  EXPECT_THAT(message, AllOf(HasSubstr("fleet-absent0"), HasSubstr("(it lists ")));
}

TEST(VerbsDevicesImplTest, WithoutLibibverbsTheFixIsNamed) {
  VerbsDevicesImpl devices("libibverbs-fleet-absent.so.1");
  absl::StatusOr<std::unique_ptr<VerbsContext>> context = devices.Open("rocep1s0f1");
  EXPECT_EQ(context.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(context.status().message(),
              AllOf(HasSubstr("the RDMA test needs libibverbs"),
                    HasSubstr("libibverbs-fleet-absent.so.1"), HasSubstr("install rdma-core")));
}

}  // namespace
}  // namespace fleet::agent
