// The agents' TCP bandwidth test over real loopback sockets: data counted by the receiver and
// reported back, and the data port refusing a wrong token or a stranger's address. Each test
// sends for 200 ms at most; every wait is bounded by the test's own limits.
#include "agent/fabric/tcp_bandwidth.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::HasSubstr;

v1::FabricTcpSpec Spec(uint32_t streams = 2) {
  v1::FabricTcpSpec spec;
  spec.set_test_id("t1");
  spec.set_token(std::string(32, 'k'));
  spec.set_streams(streams);
  spec.set_duration_ms(200);
  spec.set_buffer_bytes(64 << 10);
  return spec;
}

TEST(TcpBandwidth, ReceiverCountsWhatEveryStreamSentAndReportsIt) {
  absl::StatusOr<std::unique_ptr<TcpReceiver>> receiver =
      TcpReceiver::Open("127.0.0.1", "127.0.0.1", Spec());
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  absl::StatusOr<v1::FabricSendResponse> sent =
      RunTcpSender("127.0.0.1", absl::StrCat("127.0.0.1:", (*receiver)->port()), Spec());
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(sent->streams(), 2u);
  EXPECT_GT(sent->bytes(), 64u << 10);
  EXPECT_GT(sent->seconds(), 0.1);
  EXPECT_LT(sent->seconds(), 1.0);
  EXPECT_NEAR(sent->bandwidth_gbps(), sent->bytes() * 8 / sent->seconds() / 1e9, 1e-6);
  EXPECT_EQ((*receiver)->rejected(), 0);
}

TEST(TcpBandwidth, AWrongTokenIsRefusedAndNothingIsMeasured) {
  absl::StatusOr<std::unique_ptr<TcpReceiver>> receiver =
      TcpReceiver::Open("127.0.0.1", "127.0.0.1", Spec(1));
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  v1::FabricTcpSpec forged = Spec(1);
  forged.set_token(std::string(32, 'x'));
  absl::StatusOr<v1::FabricSendResponse> sent =
      RunTcpSender("127.0.0.1", absl::StrCat("127.0.0.1:", (*receiver)->port()), forged);
  EXPECT_FALSE(sent.ok());
  EXPECT_GE((*receiver)->rejected(), 1);
}

TEST(TcpBandwidth, AConnectionFromAnotherAddressIsRefused) {
  // Only 127.0.0.9 may connect; this sender comes from 127.0.0.1.
  absl::StatusOr<std::unique_ptr<TcpReceiver>> receiver =
      TcpReceiver::Open("127.0.0.1", "127.0.0.9", Spec(1));
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  absl::StatusOr<v1::FabricSendResponse> sent =
      RunTcpSender("127.0.0.1", absl::StrCat("127.0.0.1:", (*receiver)->port()), Spec(1));
  EXPECT_FALSE(sent.ok());
  EXPECT_GE((*receiver)->rejected(), 1);
}

TEST(TcpBandwidth, SpecsOutOfRangeAreRefusedWithTheFix) {
  v1::FabricTcpSpec spec = Spec();
  spec.set_streams(0);
  EXPECT_THAT(ValidateTcpSpec(spec).message(), HasSubstr("streams must be 1 to 64"));
  spec = Spec();
  spec.set_duration_ms(61'000);
  EXPECT_THAT(ValidateTcpSpec(spec).message(), HasSubstr("duration must be 100ms to 60s"));
  spec = Spec();
  spec.set_token("short");
  EXPECT_THAT(ValidateTcpSpec(spec).message(), HasSubstr("token is 32 bytes"));
  EXPECT_THAT(TcpReceiver::Open("spark-1", "127.0.0.1", Spec()).status().message(),
              HasSubstr("is not an IPv4 address"));
}

}  // namespace
}  // namespace fleet::agent
