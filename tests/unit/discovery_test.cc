// Discovery: the wire format's encoding and defensive decoding, then Discoverer and
// DiscoveryResponder talking real UDP over 127.0.0.1 (never any other address).
#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/discovery/discovery_responder.h"
#include "common/udp.h"
#include "common/wire/discovery_wire.h"
#include "controller/discovery/discoverer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/eventually.h"

namespace fleet {
namespace {

using ::fleet::testing::Eventually;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using discovery::Adopt;
using discovery::Answer;
using discovery::Decode;
using discovery::Decoded;
using discovery::Encode;
using discovery::Nonce;
using discovery::Probe;

constexpr Nonce kNonce = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const std::string& Key() {
  static const std::string* const key = new std::string(discovery::DeriveKey("token secret"));
  return *key;
}

Probe SampleProbe() {
  return Probe{.nonce = kNonce, .controller_port = 7100, .controller_id = "c1"};
}

Answer SampleAnswer(std::string node_id = "spark-1") {
  return Answer{.nonce = kNonce,
                .node_id = std::move(node_id),
                .hostname = "spark-1.lab",
                .agent_port = 7101,
                .joined = true,
                .interfaces = {{.name = "enp1s0f0np0",
                                .mtu = 9000,
                                .addresses = {"10.0.0.2/24", "fe80::1/64"}},
                               {.name = "lo0", .mtu = 65536, .addresses = {}}},
                .rdma_devices = {"rocep1s0f0", "roceP2p1s0f1"}};
}

Adopt SampleAdopt() {
  return Adopt{.nonce = kNonce, .node_id = "spark-1", .controller_address = "10.0.0.1:7100"};
}

template <typename T>
std::string MustEncode(const T& message, const std::string& key = Key()) {
  absl::StatusOr<std::string> encoded = Encode(message, key);
  EXPECT_TRUE(encoded.ok()) << encoded.status();
  return encoded.ok() ? *encoded : std::string();
}

std::vector<std::string> ValidDatagrams() {
  return {MustEncode(SampleProbe()), MustEncode(SampleAnswer()), MustEncode(SampleAdopt())};
}

// The body of an encoded datagram (between the header and the mac).
std::string BodyOf(const std::string& datagram) {
  return datagram.substr(discovery::kHeaderSize,
                         datagram.size() - discovery::kHeaderSize - discovery::kMacSize);
}

// ---- Wire format ----

TEST(DiscoveryWireTest, DeriveKeyIsStableAndHidesTheSecret) {
  std::string key = discovery::DeriveKey("token secret");
  EXPECT_THAT(key, SizeIs(32));
  EXPECT_EQ(key, discovery::DeriveKey("token secret"));
  EXPECT_NE(key, discovery::DeriveKey("token secreT"));
  EXPECT_THAT(key, ::testing::Not(HasSubstr("token")));
  EXPECT_THAT(discovery::DeriveKey(""), SizeIs(32));
}

TEST(DiscoveryWireTest, RoundTripsEveryMessage) {
  for (const discovery::Message& message :
       {discovery::Message(SampleProbe()), discovery::Message(SampleAnswer()),
        discovery::Message(SampleAdopt())}) {
    std::string datagram = std::visit([](const auto& m) { return MustEncode(m); }, message);
    EXPECT_LE(datagram.size(), discovery::kMaxDatagramSize);
    EXPECT_EQ(datagram.substr(0, 6), std::string("FLDP\x01", 5) + char(message.index() + 1));
    absl::StatusOr<Decoded> decoded = Decode(datagram, Key());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_TRUE(decoded->proven);
    EXPECT_EQ(decoded->message, message);
  }
}

TEST(DiscoveryWireTest, RoundTripsUtf8AndEmptyLists) {
  Answer answer{.nonce = kNonce, .node_id = "n\xc5\x93ud", .hostname = "h"};
  absl::StatusOr<Decoded> decoded = Decode(MustEncode(answer), Key());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(std::get<Answer>(decoded->message), answer);
}

TEST(DiscoveryWireTest, EveryTruncationIsRejected) {
  for (const std::string& datagram : ValidDatagrams()) {
    for (size_t length = 0; length < datagram.size(); ++length) {
      absl::StatusOr<Decoded> decoded = Decode(datagram.substr(0, length), Key());
      EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument)
          << "prefix of " << length << " bytes";
    }
  }
}

TEST(DiscoveryWireTest, EveryTruncatedBodyIsRejectedEvenWithAValidMac) {
  for (const std::string& datagram : ValidDatagrams()) {
    const uint8_t type = static_cast<uint8_t>(datagram[5]);
    const std::string body = BodyOf(datagram);
    for (size_t length = 0; length < body.size(); ++length) {
      absl::StatusOr<Decoded> decoded =
          Decode(discovery::Frame(type, body.substr(0, length), Key()), Key());
      ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument)
          << "type " << int{type} << " body of " << length << " bytes";
      EXPECT_THAT(decoded.status().message(), HasSubstr("at offset"));
    }
  }
}

TEST(DiscoveryWireTest, TrailingBytesAreRejected) {
  std::string body = BodyOf(MustEncode(SampleAdopt())) + "x";
  absl::StatusOr<Decoded> decoded = Decode(discovery::Frame(3, body, Key()), Key());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("1 trailing bytes"));

  std::string datagram = MustEncode(SampleProbe()) + "x";
  EXPECT_EQ(Decode(datagram, Key()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DiscoveryWireTest, EveryMacBitFlipLeavesTheMessageUnproven) {
  for (const std::string& datagram : ValidDatagrams()) {
    for (size_t bit = 0; bit < 8 * discovery::kMacSize; ++bit) {
      std::string flipped = datagram;
      flipped[datagram.size() - discovery::kMacSize + bit / 8] ^= static_cast<char>(1 << (bit % 8));
      absl::StatusOr<Decoded> decoded = Decode(flipped, Key());
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      EXPECT_FALSE(decoded->proven) << "bit " << bit;
    }
  }
}

TEST(DiscoveryWireTest, ChangedNonceOrOtherKeyIsUnprovenButStillListable) {
  std::string datagram = MustEncode(SampleAnswer());
  datagram[discovery::kHeaderSize] ^= 0x01;
  absl::StatusOr<Decoded> decoded = Decode(datagram, Key());
  ASSERT_TRUE(decoded.ok());
  EXPECT_FALSE(decoded->proven);

  decoded = Decode(MustEncode(SampleAnswer(), discovery::DeriveKey("other")), Key());
  ASSERT_TRUE(decoded.ok());
  EXPECT_FALSE(decoded->proven);
  EXPECT_EQ(std::get<Answer>(decoded->message).node_id, "spark-1");
  EXPECT_EQ(std::get<Answer>(decoded->message).hostname, "spark-1.lab");
}

TEST(DiscoveryWireTest, UnknownVersionAndTypeAreNamed) {
  std::string datagram = MustEncode(SampleProbe());
  std::string version = datagram;
  version[4] = 7;
  EXPECT_EQ(Decode(version, Key()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Decode(version, Key()).status().message(), HasSubstr("protocol version 7"));

  std::string type = datagram;
  type[5] = 9;
  EXPECT_EQ(Decode(type, Key()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Decode(type, Key()).status().message(), HasSubstr("message type 9"));

  std::string magic = datagram;
  magic[0] = 'X';
  EXPECT_THAT(Decode(magic, Key()).status().message(), HasSubstr("magic"));

  std::string reserved = datagram;
  reserved[7] = 1;
  EXPECT_THAT(Decode(reserved, Key()).status().message(), HasSubstr("reserved"));
}

TEST(DiscoveryWireTest, TooLongCountsAreRejected) {
  // ANSWER body up to the interface count: nonce, node_id "n", hostname "h", port, joined.
  const std::string prefix = std::string(16, '\0') + std::string("\x01n\x01h\x00\x01\x00", 7);
  absl::StatusOr<Decoded> decoded =
      Decode(discovery::Frame(2, prefix + "\x21", Key()), Key());  // 33 interfaces
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("interfaces count is 33 (limit 32)"));

  // One interface "e", mtu 1500, 17 addresses.
  decoded = Decode(discovery::Frame(2,
                                    prefix + std::string("\x01\x01"
                                                         "e\x00\x00\x05\xdc\x11",
                                                         8),
                                    Key()),
                   Key());
  EXPECT_THAT(decoded.status().message(), HasSubstr("count is 17 (limit 16)"));

  // No interfaces, 33 RDMA devices.
  decoded = Decode(discovery::Frame(2, prefix + std::string("\x00\x21", 2), Key()), Key());
  EXPECT_THAT(decoded.status().message(), HasSubstr("rdma_devices count is 33 (limit 32)"));

  // Encode refuses the same.
  Answer answer = SampleAnswer();
  answer.rdma_devices.assign(33, "mlx5_0");
  EXPECT_EQ(Encode(answer, Key()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DiscoveryWireTest, BadStringsAndFlagsAreRejected) {
  const std::string nonce(16, '\0');
  for (const std::string& node_id :
       {std::string("a\0b", 3), std::string("a\nb"), std::string("\xff"), std::string("\xc0\xaf"),
        std::string("\xed\xa0\x80"), std::string("\xc2\x85")}) {
    std::string body = nonce + static_cast<char>(node_id.size()) + node_id +
                       "\x02"
                       "c1";
    absl::StatusOr<Decoded> decoded = Decode(discovery::Frame(3, body, Key()), Key());
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument)
        << absl::CHexEscape(node_id);
    EXPECT_THAT(decoded.status().message(), HasSubstr("node_id"));
    EXPECT_EQ(Encode(Adopt{.node_id = node_id}, Key()).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(Encode(Adopt{.node_id = std::string(256, 'a')}, Key()).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::string joined = BodyOf(MustEncode(SampleAnswer()));
  joined[16 + 1 + 7 + 1 + 11 + 2] = 2;  // joined is 0 or 1
  EXPECT_THAT(Decode(discovery::Frame(2, joined, Key()), Key()).status().message(),
              HasSubstr("joined is 2"));
}

TEST(DiscoveryWireTest, OversizedDatagramsAreRefused) {
  Answer answer = SampleAnswer();
  answer.interfaces.assign(32, {.name = std::string(15, 'e'),
                                .mtu = 9000,
                                .addresses = {std::string(40, '1'), std::string(40, '2')}});
  EXPECT_EQ(Encode(answer, Key()).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Decode(std::string(1401, 'F'), Key()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Over loopback ----

// Probes that expect answers stop at the last one, so a slow machine only makes them wait
// longer; probes that expect silence listen for kQuiet.
constexpr absl::Duration kPatience = absl::Seconds(1);
constexpr absl::Duration kQuiet = absl::Milliseconds(300);
// How long a test waits for the responder, which works on its own thread.
constexpr absl::Duration kResponderWait = absl::Seconds(1);

controller::ProbeScope Loopback(size_t expected_proven = 0) {
  return {.broadcast = false,
          .multicast = false,
          .target_ips = {"127.0.0.1"},
          .stop_after_proven = expected_proven};
}

class LoopbackTest : public ::testing::Test {
 protected:
  // A responder on 127.0.0.1 and a free port, holding `key`, recording adoptions.
  std::unique_ptr<agent::DiscoveryResponder> StartResponder(const std::string& key,
                                                            std::string node_id = "spark-1") {
    auto responder = std::make_unique<agent::DiscoveryResponder>(
        agent::DiscoveryResponderOptions{.key = key,
                                         .bind_ip = "127.0.0.1",
                                         .udp_port = 0,
                                         .join_multicast = false,
                                         .answer = [node_id] { return SampleAnswer(node_id); },
                                         .on_adopt =
                                             [this](const std::string& address) {
                                               absl::MutexLock lock(&mu_);
                                               adopted_.push_back(address);
                                             }});
    absl::Status status = responder->Start();
    EXPECT_TRUE(status.ok()) << status;
    return responder;
  }

  std::vector<std::string> adopted() {
    absl::MutexLock lock(&mu_);
    return adopted_;
  }

  absl::Mutex mu_;
  std::vector<std::string> adopted_ ABSL_GUARDED_BY(mu_);
};

TEST_F(LoopbackTest, ResponderAnswersAProbe) {
  auto responder = StartResponder(Key());
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, responder->port());

  absl::StatusOr<std::vector<controller::Found>> found = discoverer.Probe(Loopback(1), kPatience);

  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));
  const controller::Found& node = (*found)[0];
  EXPECT_TRUE(node.proven);
  EXPECT_EQ(node.node_id, "spark-1");
  EXPECT_EQ(node.hostname, "spark-1.lab");
  EXPECT_EQ(node.source_ip, "127.0.0.1");
  EXPECT_EQ(node.source_port, responder->port());
  EXPECT_EQ(node.agent_port, 7101);
  EXPECT_TRUE(node.joined);
  EXPECT_EQ(node.interfaces, SampleAnswer().interfaces);
  EXPECT_EQ(node.rdma_devices, SampleAnswer().rdma_devices);
  EXPECT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().answered == 1; }));
}

TEST_F(LoopbackTest, ProbeTargetsAreValidated) {
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, 1);
  controller::ProbeScope scope = Loopback();
  scope.target_ips = {"spark-1"};
  EXPECT_EQ(discoverer.Probe(scope, kQuiet).status().code(), absl::StatusCode::kInvalidArgument);
  scope.target_ips.clear();
  EXPECT_EQ(discoverer.Probe(scope, kQuiet).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(LoopbackTest, ResponderWithAnotherKeyIsListedUnprovenAndNeverAdopted) {
  auto responder = StartResponder(discovery::DeriveKey("another cluster"));
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, responder->port());

  absl::StatusOr<std::vector<controller::Found>> found = discoverer.Probe(Loopback(), kQuiet);

  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));
  EXPECT_FALSE((*found)[0].proven);
  EXPECT_EQ((*found)[0].node_id, "spark-1");
  EXPECT_EQ(discoverer.Adopt((*found)[0], "127.0.0.1:7100").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(adopted(), IsEmpty());
}

TEST_F(LoopbackTest, AnswerIsProvenUnderAnyOfSeveralKeys) {
  auto responder = StartResponder(discovery::DeriveKey("second token"));
  controller::Discoverer discoverer({Key(), discovery::DeriveKey("second token")}, "ctl-1", 7100,
                                    responder->port());
  absl::StatusOr<std::vector<controller::Found>> found = discoverer.Probe(Loopback(1), kPatience);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));
  EXPECT_TRUE((*found)[0].proven);
  EXPECT_EQ((*found)[0].key_index, 1u);
  ASSERT_TRUE(discoverer.Adopt((*found)[0], "127.0.0.1:7100").ok());
  ASSERT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().adopted == 1; }));
}

TEST_F(LoopbackTest, ProbeFloodIsRateLimited) {
  auto responder = StartResponder(Key());
  auto sender = UdpSocket::Bind("127.0.0.1", 0);
  ASSERT_TRUE(sender.ok());
  std::string probe =
      MustEncode(Probe{.nonce = kNonce, .controller_port = 1, .controller_id = "x"});
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(sender->SendTo("127.0.0.1", responder->port(), probe).ok());
  }
  ASSERT_TRUE(Eventually(kResponderWait, [&] {
    auto c = responder->counters();
    return c.answered + c.rate_limited == 60;
  }));
  // The flood takes well under a second here, so at most one window's worth is answered.
  EXPECT_LE(responder->counters().answered, 40u);
  EXPECT_GE(responder->counters().rate_limited, 20u);
}

// A fake agent on a raw socket: receives a probe and lets the test choose what to send back.
class FakeAgent {
 public:
  FakeAgent() : socket_(*UdpSocket::Bind("127.0.0.1", 0)) {}
  uint16_t port() const { return socket_.port(); }

  // The next probe (decoded under `key`) and where it came from.
  std::pair<Probe, Datagram> NextProbe() {
    absl::StatusOr<std::optional<Datagram>> datagram = socket_.Receive(absl::Seconds(1));
    EXPECT_TRUE(datagram.ok() && datagram->has_value()) << "no probe arrived";
    if (!datagram.ok() || !datagram->has_value()) return {};
    absl::StatusOr<Decoded> decoded = Decode((*datagram)->bytes, Key());
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return {std::get<Probe>(decoded->message), **datagram};
  }

  void Send(const Datagram& to, const std::string& bytes) {
    ASSERT_TRUE(socket_.SendTo(to.source_ip, to.source_port, bytes).ok());
  }

 private:
  UdpSocket socket_;
};

TEST_F(LoopbackTest, AnswerFromAnotherKeyIsListedUnproven) {
  FakeAgent agent;
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, agent.port());
  auto probing =
      std::async(std::launch::async, [&] { return discoverer.Probe(Loopback(1), kPatience); });

  // spark-1 holds another cluster's key; spark-2, sent after it, ends the probe.
  auto [probe, from] = agent.NextProbe();
  Answer answer = SampleAnswer("spark-1");
  answer.nonce = probe.nonce;
  agent.Send(from, MustEncode(answer, discovery::DeriveKey("another cluster")));
  Answer proven = SampleAnswer("spark-2");
  proven.nonce = probe.nonce;
  agent.Send(from, MustEncode(proven));

  absl::StatusOr<std::vector<controller::Found>> found = probing.get();
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(2));
  EXPECT_FALSE((*found)[0].proven);
  EXPECT_EQ((*found)[0].node_id, "spark-1");
  EXPECT_EQ((*found)[0].hostname, "spark-1.lab");
  EXPECT_TRUE((*found)[1].proven);
  EXPECT_EQ(discoverer.Adopt((*found)[0], "127.0.0.1:7100").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LoopbackTest, DuplicateAnswersCountOnceAndProvenOnesWin) {
  FakeAgent agent;
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, agent.port());
  auto probing =
      std::async(std::launch::async, [&] { return discoverer.Probe(Loopback(2), kPatience); });

  // An impostor answers first in spark-1's name, then spark-1 answers twice (a probe can reach
  // it by several paths), then spark-2. Were the duplicate counted, the probe would end before
  // spark-2 and list spark-1 twice.
  auto [probe, from] = agent.NextProbe();
  Answer answer = SampleAnswer("spark-1");
  answer.nonce = probe.nonce;
  agent.Send(from, MustEncode(answer, discovery::DeriveKey("impostor")));
  agent.Send(from, MustEncode(answer));
  agent.Send(from, MustEncode(answer));
  Answer other = SampleAnswer("spark-2");
  other.nonce = probe.nonce;
  agent.Send(from, MustEncode(other));

  absl::StatusOr<std::vector<controller::Found>> found = probing.get();
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(2));
  EXPECT_EQ((*found)[0].node_id, "spark-1");
  EXPECT_TRUE((*found)[0].proven);
  EXPECT_EQ((*found)[1].node_id, "spark-2");
}

TEST_F(LoopbackTest, ReplayedAnswerIsIgnored) {
  FakeAgent agent;
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, agent.port());

  // First call: a genuine answer, captured.
  auto first =
      std::async(std::launch::async, [&] { return discoverer.Probe(Loopback(1), kPatience); });
  auto [probe, from] = agent.NextProbe();
  Answer answer = SampleAnswer("spark-1");
  answer.nonce = probe.nonce;
  const std::string captured = MustEncode(answer);
  agent.Send(from, captured);
  absl::StatusOr<std::vector<controller::Found>> found = first.get();
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));

  // Second call: the captured answer replayed, and a fresh one from another node.
  auto second =
      std::async(std::launch::async, [&] { return discoverer.Probe(Loopback(1), kPatience); });
  auto [probe2, from2] = agent.NextProbe();
  EXPECT_NE(probe2.nonce, probe.nonce);
  agent.Send(from2, captured);
  Answer fresh = SampleAnswer("spark-2");
  fresh.nonce = probe2.nonce;
  agent.Send(from2, MustEncode(fresh));
  found = second.get();
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));
  EXPECT_EQ((*found)[0].node_id, "spark-2");
}

TEST_F(LoopbackTest, AdoptReachesTheAgentOnce) {
  auto responder = StartResponder(Key());
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, responder->port());
  absl::StatusOr<std::vector<controller::Found>> found = discoverer.Probe(Loopback(1), kPatience);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));

  ASSERT_TRUE(discoverer.Adopt((*found)[0], "127.0.0.1:7100").ok());
  ASSERT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().adopted == 1; }));
  EXPECT_THAT(adopted(), ElementsAre("127.0.0.1:7100"));

  // The same ADOPT again (a replay) is dropped.
  ASSERT_TRUE(discoverer.Adopt((*found)[0], "127.0.0.1:7100").ok());
  ASSERT_TRUE(
      Eventually(kResponderWait, [&] { return responder->counters().replayed_adopt == 1; }));
  EXPECT_THAT(adopted(), ElementsAre("127.0.0.1:7100"));
}

TEST_F(LoopbackTest, ForgedAdoptsAreIgnored) {
  auto responder = StartResponder(Key());
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, responder->port());
  absl::StatusOr<std::vector<controller::Found>> found = discoverer.Probe(Loopback(1), kPatience);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));
  const controller::Found& node = (*found)[0];
  auto sender = UdpSocket::Bind("127.0.0.1", 0);
  ASSERT_TRUE(sender.ok());
  auto send = [&](const std::string& bytes) {
    ASSERT_TRUE(sender->SendTo("127.0.0.1", responder->port(), bytes).ok());
  };

  // Made with another key.
  send(MustEncode(Adopt{.nonce = node.nonce, .node_id = "spark-1", .controller_address = "evil:1"},
                  discovery::DeriveKey("attacker")));
  ASSERT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().bad_mac == 1; }));
  // For a nonce this agent never answered.
  send(MustEncode(Adopt{.nonce = kNonce, .node_id = "spark-1", .controller_address = "evil:2"}));
  ASSERT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().unknown_nonce == 1; }));
  // For another node id.
  send(
      MustEncode(Adopt{.nonce = node.nonce, .node_id = "spark-9", .controller_address = "evil:3"}));
  ASSERT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().unknown_nonce == 2; }));
  // Not a discovery datagram, and an ANSWER (which agents never take).
  send("hello");
  send(MustEncode(SampleAnswer()));
  ASSERT_TRUE(Eventually(kResponderWait, [&] {
    return responder->counters().malformed == 1 && responder->counters().wrong_type == 1;
  }));
  EXPECT_THAT(adopted(), IsEmpty());

  // The genuine one still works afterwards.
  ASSERT_TRUE(discoverer.Adopt(node, "127.0.0.1:7100").ok());
  ASSERT_TRUE(Eventually(kResponderWait, [&] { return responder->counters().adopted == 1; }));
  EXPECT_THAT(adopted(), ElementsAre("127.0.0.1:7100"));
}

TEST_F(LoopbackTest, OversizedAnswerIsTrimmedToFit) {
  agent::DiscoveryResponder responder(
      {.key = Key(), .bind_ip = "127.0.0.1", .udp_port = 0, .join_multicast = false, .answer = [] {
         Answer answer = SampleAnswer();
         answer.interfaces.assign(40, {.name = "veth0123456789",
                                       .mtu = 1500,
                                       .addresses = {"192.168.100.100/24", "192.168.200.100/24"}});
         return answer;
       }});
  ASSERT_TRUE(responder.Start().ok());
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, responder.port());
  absl::StatusOr<std::vector<controller::Found>> found = discoverer.Probe(Loopback(1), kPatience);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_THAT(*found, SizeIs(1));
  EXPECT_TRUE((*found)[0].proven);
  EXPECT_GT((*found)[0].interfaces.size(), 10u);
  EXPECT_LT((*found)[0].interfaces.size(), 40u);
}

TEST_F(LoopbackTest, StopIsPrompt) {
  auto responder = StartResponder(Key());
  // Once it has answered, its thread is inside its receive loop; the 10 ms let it block in the
  // receive again, which is the state under test and has no event to wait on.
  controller::Discoverer discoverer({Key()}, "ctl-1", 7100, responder->port());
  ASSERT_TRUE(discoverer.Probe(Loopback(1), kPatience).ok());
  absl::SleepFor(absl::Milliseconds(10));
  const absl::Time start = absl::Now();
  responder->Stop();
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(200));
  responder->Stop();
}

TEST(UdpSocketTest, BindRejectsBadAddressesAndReportsItsPort) {
  EXPECT_EQ(UdpSocket::Bind("not-an-ip", 0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<UdpSocket> socket = UdpSocket::Bind("127.0.0.1", 0);
  ASSERT_TRUE(socket.ok()) << socket.status();
  EXPECT_NE(socket->port(), 0);
  absl::StatusOr<std::optional<Datagram>> nothing = socket->Receive(absl::Milliseconds(10));
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing->has_value());
  UdpSocket moved = *std::move(socket);
  EXPECT_TRUE(moved.SendTo("127.0.0.1", moved.port(), "ping").ok());
  absl::StatusOr<std::optional<Datagram>> ping = moved.Receive(absl::Seconds(1));
  ASSERT_TRUE(ping.ok() && ping->has_value());
  EXPECT_EQ((*ping)->bytes, "ping");
  EXPECT_EQ((*ping)->source_ip, "127.0.0.1");
  EXPECT_EQ((*ping)->source_port, moved.port());
}

TEST(UdpSocketTest, EphemeralPortsAreNeverShared) {
  // Linux lets SO_REUSEADDR sockets share a port chosen for 0; the tests above would then
  // sometimes deliver a datagram to the wrong socket.
  std::vector<UdpSocket> sockets;
  absl::flat_hash_set<uint16_t> ports;
  for (int i = 0; i < 500; ++i) {
    absl::StatusOr<UdpSocket> socket = UdpSocket::Bind(i % 2 ? "127.0.0.1" : "0.0.0.0", 0);
    ASSERT_TRUE(socket.ok()) << socket.status();
    EXPECT_TRUE(ports.insert(socket->port()).second) << "port " << socket->port() << " reused";
    sockets.push_back(*std::move(socket));
  }
}

TEST(UdpSocketTest, BroadcastTargetsSkipLoopback) {
  absl::StatusOr<std::vector<BroadcastTarget>> targets = ListBroadcastTargets();
  ASSERT_TRUE(targets.ok()) << targets.status();
  for (const BroadcastTarget& target : *targets) EXPECT_NE(target.address, "127.0.0.1");
  std::vector<std::string> none = {"no-such-interface"};
  targets = ListBroadcastTargets(none);
  ASSERT_TRUE(targets.ok());
  EXPECT_THAT(*targets, IsEmpty());
}

}  // namespace
}  // namespace fleet
