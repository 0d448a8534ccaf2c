// Heartbeat datagrams: the wire format (round trips, tampering, malformed input), the
// controller's sessions with a fake clock (verdicts, replays, forgeries, unknown sessions,
// removed nodes), and the agent's client against those sessions over real UDP on 127.0.0.1.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/session/controller_client_impl.h"
#include "common/fake_clock.h"
#include "common/udp.h"
#include "common/wire/heartbeat_wire.h"
#include "controller/registry/heartbeat_sessions.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;

const std::string kKey(32, 'k');

v1::HeartbeatDatagram Beat(const std::string& node_id, uint64_t session, uint64_t sequence,
                           uint64_t shards_version = 0) {
  v1::HeartbeatDatagram beat;
  beat.set_node_id(node_id);
  beat.set_session(session);
  beat.set_sequence(sequence);
  beat.set_shards_version(shards_version);
  return beat;
}

TEST(HeartbeatWireTest, BeatAndAckRoundTripAndVerifyOnlyUnderTheirKey) {
  absl::StatusOr<std::string> datagram =
      heartbeat::EncodeBeat(Beat("0123456789abcdef0123456789abcdef", 7, 42, 3), kKey);
  ASSERT_TRUE(datagram.ok()) << datagram.status();
  EXPECT_LT(datagram->size(), 100u);
  absl::StatusOr<v1::HeartbeatDatagram> beat = heartbeat::ParseBeat(*datagram);
  ASSERT_TRUE(beat.ok()) << beat.status();
  EXPECT_EQ(beat->node_id(), "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(beat->session(), 7u);
  EXPECT_EQ(beat->sequence(), 42u);
  EXPECT_EQ(beat->shards_version(), 3u);
  EXPECT_TRUE(heartbeat::Verify(*datagram, kKey));
  EXPECT_FALSE(heartbeat::Verify(*datagram, std::string(32, 'x')));

  v1::HeartbeatAck ack;
  ack.set_session(7);
  ack.set_sequence(42);
  ack.set_verdict(v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  absl::StatusOr<std::string> reply = heartbeat::EncodeAck(ack, kKey);
  ASSERT_TRUE(reply.ok());
  absl::StatusOr<v1::HeartbeatAck> parsed = heartbeat::ParseAck(*reply);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->verdict(), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  EXPECT_TRUE(heartbeat::Verify(*reply, kKey));
  // A beat is not an ack, nor the other way round.
  EXPECT_THAT(heartbeat::ParseAck(*datagram).status().message(), HasSubstr("got type 1"));
  EXPECT_THAT(heartbeat::ParseBeat(*reply).status().message(), HasSubstr("got type 2"));
}

TEST(HeartbeatWireTest, EveryFlippedBitBreaksTheMac) {
  std::string datagram = *heartbeat::EncodeBeat(Beat("node", 1, 1), kKey);
  for (size_t i = 0; i < datagram.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string tampered = datagram;
      tampered[i] = static_cast<char>(tampered[i] ^ (1 << bit));
      EXPECT_FALSE(heartbeat::Verify(tampered, kKey)) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(HeartbeatWireTest, MalformedDatagramsAreRefusedWithTheReason) {
  std::string good = *heartbeat::EncodeBeat(Beat("node", 1, 1), kKey);
  EXPECT_THAT(heartbeat::ParseBeat("").status().message(), HasSubstr("got 0"));
  EXPECT_THAT(heartbeat::ParseBeat(std::string(600, 'x')).status().message(), HasSubstr("got 600"));
  std::string magic = good;
  magic[0] = 'X';
  EXPECT_THAT(heartbeat::ParseBeat(magic).status().message(), HasSubstr("bad magic"));
  std::string version = good;
  version[4] = 9;
  EXPECT_THAT(heartbeat::ParseBeat(version).status().message(),
              HasSubstr("version 9; this build speaks version 1"));
  std::string body =
      good.substr(0, 6) + std::string("\xff\xff\xff", 3) + good.substr(good.size() - 32);
  EXPECT_THAT(heartbeat::ParseBeat(body).status().message(), HasSubstr("does not parse"));
  EXPECT_FALSE(heartbeat::Verify("short", kKey));
  EXPECT_THAT(heartbeat::EncodeBeat(Beat(std::string(600, 'n'), 1, 1), kKey).status().message(),
              HasSubstr("over the limit of 512"));
}

class HeartbeatSessionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v1::RegisterRequest r;
    r.mutable_identity()->set_node_id("a");
    r.mutable_identity()->set_name("spark-1");
    r.set_advertise_address("10.0.0.2:7101");
    ASSERT_TRUE(registry_.Register(r).ok());
    session_ = sessions_.Open("a", 1);
  }

  // The verdict of the ack Handle returns for `beat` signed with `key`, checking that the ack
  // echoes the beat and is proven by `ack_key`; UNSPECIFIED when the beat is dropped.
  v1::HeartbeatVerdict Send(const v1::HeartbeatDatagram& beat, const std::string& key,
                            const std::string& ack_key) {
    std::optional<std::string> reply = sessions_.Handle(*heartbeat::EncodeBeat(beat, key));
    if (!reply) return v1::HEARTBEAT_VERDICT_UNSPECIFIED;
    absl::StatusOr<v1::HeartbeatAck> ack = heartbeat::ParseAck(*reply);
    EXPECT_TRUE(ack.ok()) << ack.status();
    EXPECT_EQ(ack->session(), beat.session());
    EXPECT_EQ(ack->sequence(), beat.sequence());
    EXPECT_TRUE(heartbeat::Verify(*reply, ack_key));
    return ack->verdict();
  }
  v1::HeartbeatVerdict Send(uint64_t sequence, uint64_t shards_version = 1) {
    return Send(Beat("a", session_.id, sequence, shards_version), session_.key, session_.key);
  }
  v1::NodeState State() { return registry_.List().at(0).state(); }

  FakeClock clock_;
  controller::FakeStore store_;
  controller::NodeRegistry registry_{controller::RegistryConfig{}, &clock_, &store_};
  controller::HeartbeatSessions sessions_{&clock_, &registry_, absl::Seconds(30)};
  controller::HeartbeatSession session_;
};

TEST_F(HeartbeatSessionsTest, ProvenBeatsKeepTheNodeReadyAndBringALostOneBack) {
  EXPECT_EQ(session_.key.size(), heartbeat::kKeySize);
  clock_.Advance(absl::Seconds(6));
  registry_.Tick();
  EXPECT_EQ(State(), v1::NODE_STATE_LOST);
  // Back from Lost with the same session (a link that returns): its shards are asked for at
  // once, and on every beat until they are reported, though their version did not change.
  EXPECT_EQ(Send(1), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  EXPECT_EQ(State(), v1::NODE_STATE_READY);
  EXPECT_EQ(Send(2), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  sessions_.Reported("a", 1);
  for (uint64_t seq = 3; seq <= 10; ++seq) {
    clock_.Advance(absl::Seconds(1));
    EXPECT_EQ(Send(seq), v1::HEARTBEAT_VERDICT_OK);
    registry_.Tick();
  }
  EXPECT_EQ(State(), v1::NODE_STATE_READY);
  EXPECT_EQ(sessions_.counters().answered, 10u);
}

TEST_F(HeartbeatSessionsTest, ForgedAndReplayedBeatsAreDroppedAndDoNotCount) {
  EXPECT_EQ(Send(Beat("a", session_.id, 1, 1), std::string(32, 'x'), session_.key),
            v1::HEARTBEAT_VERDICT_UNSPECIFIED);
  EXPECT_EQ(Send(5), v1::HEARTBEAT_VERDICT_OK);
  EXPECT_EQ(Send(5), v1::HEARTBEAT_VERDICT_UNSPECIFIED);
  EXPECT_EQ(Send(4), v1::HEARTBEAT_VERDICT_UNSPECIFIED);
  EXPECT_EQ(sessions_.Handle("garbage"), std::nullopt);
  // Only the proven beat counted: the node goes Lost 5 s after it.
  clock_.Advance(absl::Seconds(5));
  registry_.Tick();
  EXPECT_EQ(State(), v1::NODE_STATE_LOST);
  controller::HeartbeatCounters c = sessions_.counters();
  EXPECT_EQ(c.answered, 1u);
  EXPECT_EQ(c.unproven, 1u);
  EXPECT_EQ(c.replayed, 2u);
  EXPECT_EQ(c.malformed, 1u);
}

TEST_F(HeartbeatSessionsTest, UnknownNodesAndSessionsAreToldToRegisterUnsigned) {
  EXPECT_EQ(Send(Beat("nobody", 1, 1), kKey, ""), v1::HEARTBEAT_VERDICT_REGISTER);
  // A registration opens a new session; beats of the old one are answered REGISTER, which the
  // agent ignores because the ack names the old session.
  controller::HeartbeatSession old = session_;
  session_ = sessions_.Open("a", 1);
  EXPECT_NE(session_.id, old.id);
  EXPECT_NE(session_.key, old.key);
  EXPECT_EQ(Send(Beat("a", old.id, 9, 1), old.key, ""), v1::HEARTBEAT_VERDICT_REGISTER);
  EXPECT_EQ(Send(1), v1::HEARTBEAT_VERDICT_OK);
  EXPECT_EQ(sessions_.counters().told_to_register, 2u);
}

TEST_F(HeartbeatSessionsTest, ARemovedNodeIsToldToRegister) {
  ASSERT_TRUE(registry_.Remove("spark-1").ok());
  EXPECT_EQ(Send(Beat("a", session_.id, 1, 1), session_.key, ""), v1::HEARTBEAT_VERDICT_REGISTER);
  // Its session is gone too.
  EXPECT_EQ(Send(Beat("a", session_.id, 2, 1), session_.key, ""), v1::HEARTBEAT_VERDICT_REGISTER);
}

TEST_F(HeartbeatSessionsTest, ShardsAreAskedForWhenTheirVersionDiffersOrTheReportIsOld) {
  EXPECT_EQ(Send(1, 1), v1::HEARTBEAT_VERDICT_OK);
  EXPECT_EQ(Send(2, 2), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  EXPECT_EQ(Send(3, 2), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  sessions_.Reported("a", 2);
  EXPECT_EQ(Send(4, 2), v1::HEARTBEAT_VERDICT_OK);
  clock_.Advance(absl::Seconds(29));
  EXPECT_EQ(Send(5, 2), v1::HEARTBEAT_VERDICT_OK);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(Send(6, 2), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  sessions_.Reported("a", 2);
  EXPECT_EQ(Send(7, 2), v1::HEARTBEAT_VERDICT_OK);
}

// The agent's client against HeartbeatSessions served on 127.0.0.1 by a thread of the test.
class HeartbeatClientTest : public HeartbeatSessionsTest {
 protected:
  void SetUp() override {
    HeartbeatSessionsTest::SetUp();
    absl::StatusOr<UdpSocket> socket = UdpSocket::Bind("127.0.0.1", 0);
    ASSERT_TRUE(socket.ok()) << socket.status();
    socket_.emplace(*std::move(socket));
    port_ = socket_->port();
  }
  void TearDown() override {
    stop_.store(true);
    if (server_.joinable()) server_.join();
  }
  // Answers datagrams with `answer` (Handle by default) until the test ends.
  void Serve(std::function<std::optional<std::string>(const std::string&)> answer = nullptr) {
    server_ = std::thread([this, answer = std::move(answer)] {
      while (!stop_.load()) {
        absl::StatusOr<std::optional<Datagram>> d = socket_->Receive(absl::Milliseconds(50));
        if (!d.ok() || !d->has_value()) continue;
        std::optional<std::string> reply =
            answer ? answer((*d)->bytes) : sessions_.Handle((*d)->bytes);
        if (reply) (void)socket_->SendTo((*d)->source_ip, (*d)->source_port, *reply);
      }
    });
  }

  std::optional<UdpSocket> socket_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread server_;
  std::shared_ptr<TransportCredentials> transport_ = PlaintextTransport();
  agent::GrpcControllerClient client_{"127.0.0.1:1", *transport_, absl::Seconds(1)};
};

TEST_F(HeartbeatClientTest, BeatsAreAnsweredOverUdp) {
  Serve();
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    absl::StatusOr<v1::HeartbeatVerdict> verdict =
        client_.Heartbeat(Beat("a", session_.id, seq, 1), session_.key, port_);
    ASSERT_TRUE(verdict.ok()) << verdict.status();
    EXPECT_EQ(*verdict, v1::HEARTBEAT_VERDICT_OK);
  }
  absl::StatusOr<v1::HeartbeatVerdict> verdict =
      client_.Heartbeat(Beat("a", session_.id + 1, 4, 1), session_.key, port_);
  ASSERT_TRUE(verdict.ok()) << verdict.status();
  EXPECT_EQ(*verdict, v1::HEARTBEAT_VERDICT_REGISTER);
}

TEST_F(HeartbeatClientTest, NoAnswerIsDeadlineExceededNamingThePort) {
  // Nothing serves the socket.
  absl::StatusOr<v1::HeartbeatVerdict> verdict =
      client_.Heartbeat(Beat("a", session_.id, 1, 1), session_.key, port_);
  EXPECT_EQ(verdict.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(verdict.status().message(),
              HasSubstr(absl::StrCat("127.0.0.1:", port_, "/udp within 500ms")));
  EXPECT_THAT(verdict.status().message(), HasSubstr("open it"));
}

TEST_F(HeartbeatClientTest, ForgedAndMismatchedAcksAreIgnored) {
  // The server answers each beat with an OK ack signed with the wrong key, one for another
  // sequence, and then nothing: the client must not take either.
  Serve([](const std::string& bytes) -> std::optional<std::string> {
    v1::HeartbeatDatagram beat = *heartbeat::ParseBeat(bytes);
    v1::HeartbeatAck ack;
    ack.set_session(beat.session());
    ack.set_sequence(beat.sequence());
    ack.set_verdict(v1::HEARTBEAT_VERDICT_OK);
    return *heartbeat::EncodeAck(ack, std::string(32, 'x'));
  });
  absl::StatusOr<v1::HeartbeatVerdict> verdict =
      client_.Heartbeat(Beat("a", session_.id, 1, 1), session_.key, port_);
  EXPECT_EQ(verdict.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(HeartbeatSessionsTest, GapsInTheSequenceAreCountedAsMissedBeats) {
  EXPECT_EQ(Send(1), v1::HEARTBEAT_VERDICT_OK);
  EXPECT_EQ(Send(2), v1::HEARTBEAT_VERDICT_OK);
  EXPECT_EQ(Send(5), v1::HEARTBEAT_VERDICT_OK);  // 3 and 4 were lost on the way
  EXPECT_EQ(Send(6), v1::HEARTBEAT_VERDICT_OK);
  EXPECT_EQ(sessions_.counters().missed, 2u);
  // A replay is dropped, not a gap.
  EXPECT_EQ(Send(4), v1::HEARTBEAT_VERDICT_UNSPECIFIED);
  EXPECT_EQ(sessions_.counters().missed, 2u);
}

}  // namespace
}  // namespace fleet
