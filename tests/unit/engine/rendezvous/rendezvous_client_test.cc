// The real RendezvousClient against the controller's real Rendezvous service, served over TLS
// on 127.0.0.1 in this process with a test CA: ranks meet, deadlines hold, wrong tokens and old
// generations are refused at once, and an unreachable controller is named. Every wait is a few
// hundred milliseconds, bounded by the test's deadlines.
#include "engine/rendezvous/rendezvous_client.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/identity_names.h"
#include "common/pki.h"
#include "common/transport.h"
#include "controller/grpc/rendezvous_service.h"
#include "controller/rendezvous/rendezvous_store.h"
#include "gmock/gmock.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "tests/support/eventually.h"

namespace fleet::native {
namespace {

using ::fleet::testing::Eventually;
using ::testing::HasSubstr;

const std::string kToken5(64, '5');
const std::string kToken6(64, '6');

// Polls `done` for at most 5 s.
class RendezvousClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<pki::KeyAndCert> ca =
        pki::CreateCertificateAuthority("rendezvous-test-ca", absl::Hours(1));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_pem_ = ca->cert_pem;
    absl::StatusOr<pki::KeyAndCert> server =
        pki::IssueKeyAndCertificate(*ca, {.common_name = kControllerCommonName,
                                          .dns_names = {kControllerServerName},
                                          .validity = absl::Hours(1),
                                          .server_auth = true,
                                          .client_auth = true});
    ASSERT_TRUE(server.ok()) << server.status();
    // As the controller does: client certificates optional, the token is the credential.
    std::shared_ptr<TransportCredentials> tls =
        MutualTls(ca_pem_, server->key_pem, server->cert_pem, ClientCertificates::kOptional);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", tls->ForServer(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
    // The controller's ticker, faster: deadlines are kept to within 5 ms here.
    ticker_ = std::thread([this] {
      while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(5))) store_.Tick();
    });
    store_.Open("demo", 5, kToken5);
  }

  void TearDown() override {
    store_.Shutdown();
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    stop_.Notify();
    if (ticker_.joinable()) ticker_.join();
  }

  std::unique_ptr<RendezvousClient> Client(uint32_t rank, uint64_t generation = 5,
                                           const std::string& token = kToken5) {
    absl::StatusOr<std::unique_ptr<RendezvousClient>> client =
        RendezvousClient::Create({.controller = address_,
                                  .ca_pem = ca_pem_,
                                  .token = token,
                                  .group = "demo",
                                  .generation = generation,
                                  .rank = rank});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  controller::RendezvousStore store_{RealClock::Get()};
  controller::RendezvousService service_{&store_, RealClock::Get(), {}};
  std::unique_ptr<grpc::Server> server_;
  std::string ca_pem_;
  std::string address_;
  absl::Notification stop_;
  std::thread ticker_;
};

TEST_F(RendezvousClientTest, RankZeroSetsAndRankOneWaitsForIt) {
  std::unique_ptr<RendezvousClient> rank0 = Client(0);
  std::unique_ptr<RendezvousClient> rank1 = Client(1);
  const std::string id("\0nccl-unique-id\xff", 17);
  absl::StatusOr<std::string> got;
  std::thread waiter([&] { got = rank1->Get("nccl-id", absl::Now() + absl::Seconds(5)); });
  // Rank 1's call waits in the controller before rank 0 publishes.
  ASSERT_TRUE(Eventually(absl::Seconds(5), [&] { return store_.waiting() == 1; }));
  ASSERT_TRUE(rank0->Set("nccl-id", id).ok());
  waiter.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, id);
}

TEST_F(RendezvousClientTest, KeyNeverSetIsDeadlineExceededWithinTheDeadline) {
  std::unique_ptr<RendezvousClient> rank1 = Client(1);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> got = rank1->Get("never-set", start + absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(absl::IsDeadlineExceeded(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("'never-set'"));
  EXPECT_THAT(got.status().message(), HasSubstr("was not set before the deadline"));
  EXPECT_GE(took, absl::Milliseconds(290));
  EXPECT_LT(took, absl::Milliseconds(800));
}

TEST_F(RendezvousClientTest, WrongTokenIsPermissionDeniedAtOnce) {
  std::unique_ptr<RendezvousClient> intruder = Client(0, 5, std::string(64, '0'));
  absl::Status set = intruder->Set("nccl-id", "forged");
  EXPECT_TRUE(absl::IsPermissionDenied(set)) << set;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> got = intruder->Get("nccl-id", start + absl::Seconds(5));
  EXPECT_TRUE(absl::IsPermissionDenied(got.status())) << got.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

TEST_F(RendezvousClientTest, RankOfAReplacedGenerationIsAbortedAtOnce) {
  std::unique_ptr<RendezvousClient> old_rank = Client(1, 5, kToken5);
  absl::StatusOr<std::string> waited;
  std::thread waiter([&] { waited = old_rank->Get("nccl-id", absl::Now() + absl::Seconds(5)); });
  ASSERT_TRUE(Eventually(absl::Seconds(5), [&] { return store_.waiting() == 1; }));
  const absl::Time replaced = absl::Now();
  store_.Open("demo", 6, kToken6);  // the controller started generation 6
  waiter.join();
  EXPECT_TRUE(absl::IsAborted(waited.status())) << waited.status();
  EXPECT_LT(absl::Now() - replaced, absl::Seconds(1));

  absl::Status st = old_rank->Set("nccl-id", "stale");
  EXPECT_TRUE(absl::IsAborted(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("is from generation 5; the group is at generation 6"));
  EXPECT_TRUE(Client(0, 6, kToken6)->Set("nccl-id", "fresh").ok());
}

TEST_F(RendezvousClientTest, UnreachableControllerIsDeadlineExceededNamingIt) {
  // A port bound on 127.0.0.1 but never listened on: every connection is refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string closed = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  absl::StatusOr<std::unique_ptr<RendezvousClient>> client =
      RendezvousClient::Create({.controller = closed,
                                .ca_pem = ca_pem_,
                                .token = kToken5,
                                .group = "demo",
                                .generation = 5,
                                .rank = 1});
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> got = (*client)->Get("nccl-id", start + absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  ::close(fd);
  ASSERT_TRUE(absl::IsDeadlineExceeded(got.status())) << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr(closed));
  EXPECT_LT(took, absl::Milliseconds(1300));
}

TEST_F(RendezvousClientTest, FromEnvironmentNamesWhatIsMissingThenWorks) {
  const char* names[] = {"FLEET_CONTROLLER_ADDR", "FLEET_CONTROLLER_CA", "FLEET_RENDEZVOUS_TOKEN",
                         "FLEET_GROUP",           "FLEET_GENERATION",    "FLEET_RANK"};
  for (const char* name : names) ::unsetenv(name);
  absl::StatusOr<std::unique_ptr<RendezvousClient>> client = RendezvousClient::FromEnvironment();
  ASSERT_TRUE(absl::IsFailedPrecondition(client.status())) << client.status();
  EXPECT_THAT(client.status().message(), HasSubstr("FLEET_CONTROLLER_ADDR is not set"));
  EXPECT_THAT(client.status().message(), HasSubstr("started by a SparkFleet agent"));

  char dir[] = "/tmp/fleet-rendezvous-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string ca_path = absl::StrCat(dir, "/ca.crt");
  ASSERT_TRUE(WriteFileAtomically(ca_path, ca_pem_).ok());
  ::setenv("FLEET_CONTROLLER_ADDR", address_.c_str(), 1);
  ::setenv("FLEET_CONTROLLER_CA", ca_path.c_str(), 1);
  ::setenv("FLEET_RENDEZVOUS_TOKEN", kToken5.c_str(), 1);
  ::setenv("FLEET_GROUP", "demo", 1);
  ::setenv("FLEET_GENERATION", "5", 1);
  client = RendezvousClient::FromEnvironment();
  ASSERT_TRUE(absl::IsFailedPrecondition(client.status())) << client.status();
  EXPECT_THAT(client.status().message(), HasSubstr("FLEET_RANK is not set"));
  ::setenv("FLEET_RANK", "x", 1);
  client = RendezvousClient::FromEnvironment();
  EXPECT_THAT(client.status().message(), HasSubstr("FLEET_RANK is \"x\", not a number"));

  ::setenv("FLEET_RANK", "0", 1);
  client = RendezvousClient::FromEnvironment();
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Set("gloo", "10.0.0.1:29500").ok());
  absl::StatusOr<std::string> got = Client(1)->Get("gloo", absl::Now() + absl::Seconds(1));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "10.0.0.1:29500");
  for (const char* name : names) ::unsetenv(name);
  ::unlink(ca_path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace fleet::native
