// Join tokens and the cluster CA: only hashes stored, expiry, use counts, revocation, and a CA
// that is made once, reused, and never silently replaced.
#include <filesystem>

#include "common/fake_clock.h"
#include "common/files.h"
#include "common/identity_names.h"
#include "controller/store/fake_store.h"
#include "controller/trust/cluster_ca.h"
#include "controller/trust/tokens.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kCaHash(64, 'a');

class TokenTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  FakeStore store_;
  TokenManager tokens_{&clock_, &store_, kCaHash};
};

TEST_F(TokenTest, TokenTextRoundTripsAndCarriesTheCaPin) {
  auto token = tokens_.Create(absl::Hours(24), 0, "rack 1");
  ASSERT_TRUE(token.ok()) << token.status();
  auto parsed = ParseJoinToken("  " + token->ToString() + "\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->id, token->id);
  EXPECT_EQ(parsed->secret, token->secret);
  EXPECT_EQ(parsed->ca_sha256, kCaHash);
}

TEST_F(TokenTest, OnlyHashesOfTheSecretAreStored) {
  auto token = tokens_.Create(absl::Hours(1), 0, "");
  ASSERT_TRUE(token.ok());
  const v1::StoredToken stored = store_.LoadTokens()->at(0);
  EXPECT_THAT(stored.SerializeAsString(), Not(HasSubstr(token->secret)));
  EXPECT_FALSE(stored.discovery_key().empty());
}

TEST_F(TokenTest, AdmitChecksTheSecret) {
  auto token = tokens_.Create(absl::Hours(1), 0, "");
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(tokens_.Admit(token->id, token->secret).ok());
  absl::Status wrong = tokens_.Admit(token->id, std::string(32, '0'));
  EXPECT_TRUE(absl::IsPermissionDenied(wrong)) << wrong;
  // Unknown ids get the same answer as wrong secrets.
  EXPECT_EQ(tokens_.Admit("0000000000000000", token->secret), wrong);
}

TEST_F(TokenTest, ExpiredTokenIsRefusedWithTheFix) {
  auto token = tokens_.Create(absl::Minutes(10), 0, "");
  ASSERT_TRUE(token.ok());
  clock_.Advance(absl::Minutes(11));
  absl::Status st = tokens_.Admit(token->id, token->secret);
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("expired"));
  EXPECT_THAT(st.message(), HasSubstr("fleet token create"));
  EXPECT_TRUE(tokens_.DiscoveryKeys().empty());
}

TEST_F(TokenTest, UsedUpTokenIsRefused) {
  auto token = tokens_.Create(absl::InfiniteDuration(), 2, "");
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(tokens_.Admit(token->id, token->secret).ok());
  EXPECT_TRUE(tokens_.Admit(token->id, token->secret).ok());
  absl::Status st = tokens_.Admit(token->id, token->secret);
  EXPECT_THAT(st.message(), HasSubstr("used up (2 of 2"));
  EXPECT_EQ(store_.LoadTokens()->at(0).uses(), 2);
}

TEST_F(TokenTest, RevokedTokenIsRefusedAndSurvivesReload) {
  auto token = tokens_.Create(absl::Hours(1), 0, "");
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(tokens_.Revoke(token->id).ok());
  EXPECT_TRUE(absl::IsNotFound(tokens_.Revoke("ffffffffffffffff")));
  TokenManager reloaded(&clock_, &store_, kCaHash);
  ASSERT_TRUE(reloaded.Load().ok());
  EXPECT_THAT(reloaded.Admit(token->id, token->secret).message(), HasSubstr("revoked"));
}

TEST(JoinTokenTest, MalformedTokensNameThePartAndNeverEchoIt) {
  EXPECT_THAT(ParseJoinToken("hello").status().message(), HasSubstr("not a join token"));
  std::string secret(31, 'b');
  auto bad = ParseJoinToken("fleet1.0123456789abcdef." + secret + "." + kCaHash);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("secret part"));
  EXPECT_THAT(bad.status().message(), Not(HasSubstr(secret)));
}

class ClusterCaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-ca-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = std::string(tmpl) + "/pki";
  }
  void TearDown() override { std::filesystem::remove_all(dir_ + "/.."); }
  std::string dir_;
};

TEST_F(ClusterCaTest, MadeOnceAndReused) {
  auto first = ClusterCa::LoadOrCreate(dir_, absl::Hours(24));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->ca_sha256().size(), 64u);
  EXPECT_EQ(
      std::filesystem::status(dir_ + "/ca.key").permissions() & std::filesystem::perms::group_all,
      std::filesystem::perms::none);
  auto second = ClusterCa::LoadOrCreate(dir_, absl::Hours(24));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->ca_sha256(), (*second)->ca_sha256());
  EXPECT_EQ((*first)->admin_credential().cert_pem, (*second)->admin_credential().cert_pem);
  auto admin = pki::ParseCertificate((*second)->admin_credential().cert_pem);
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(admin->common_name, AdminCommonName("admin"));
}

TEST_F(ClusterCaTest, NodeCertificateNamesTheNodeWhateverTheCsrSays) {
  auto ca = ClusterCa::LoadOrCreate(dir_, absl::Hours(24));
  ASSERT_TRUE(ca.ok());
  auto key = pki::GeneratePrivateKey();
  ASSERT_TRUE(key.ok());
  auto csr = pki::CreateCsr(*key, "controller");  // a node trying to pass as the controller
  ASSERT_TRUE(csr.ok());
  auto cert = (*ca)->IssueNodeCertificate(*csr, "0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(cert.ok()) << cert.status();
  auto info = pki::ParseCertificate(*cert);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->common_name, "node:0123456789abcdef0123456789abcdef");
  EXPECT_THAT(info->dns_names,
              ::testing::ElementsAre(NodeServerName("0123456789abcdef0123456789abcdef")));
  EXPECT_TRUE(pki::VerifyIssuedBy(*cert, (*ca)->ca_pem(), absl::Now()).ok());
}

TEST_F(ClusterCaTest, DamagedCaIsNeverReplaced) {
  ASSERT_TRUE(ClusterCa::LoadOrCreate(dir_, absl::Hours(24)).ok());
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/ca.key", "garbage").ok());
  auto ca = ClusterCa::LoadOrCreate(dir_, absl::Hours(24));
  ASSERT_FALSE(ca.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(ca.status()));
  EXPECT_THAT(ca.status().message(), HasSubstr("ca.key"));
  EXPECT_EQ(*ReadFileToString(dir_ + "/ca.key"), "garbage");
}

}  // namespace
}  // namespace fleet::controller
