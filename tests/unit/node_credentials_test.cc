// The agent's credentials on disk: installed atomically, checked against the node id, and
// renewed two thirds into their life counted from issue.
#include "agent/session/node_credentials.h"

#include <filesystem>

#include "common/files.h"
#include "common/identity_names.h"
#include "common/pki.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::HasSubstr;

class NodeCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-creds-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto ca = pki::CreateCertificateAuthority("test CA", absl::Hours(1));
    ASSERT_TRUE(ca.ok());
    ca_ = *ca;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  pki::KeyAndCert Issue(const std::string& node_id, absl::Duration validity) {
    auto pair = pki::IssueKeyAndCertificate(ca_, {.common_name = NodeCommonName(node_id),
                                                  .dns_names = {NodeServerName(node_id)},
                                                  .validity = validity,
                                                  .server_auth = true,
                                                  .client_auth = true});
    EXPECT_TRUE(pair.ok()) << pair.status();
    return *pair;
  }

  std::string dir_;
  pki::KeyAndCert ca_;
};

const char kNode[] = "0123456789abcdef0123456789abcdef";

TEST_F(NodeCredentialsTest, ShortLivedCertificateIsRenewedTwoThirdsIntoItsLife) {
  absl::Time before = absl::Now();
  pki::KeyAndCert pair = Issue(kNode, absl::Seconds(9));
  ASSERT_TRUE(InstallCredentials(dir_, ca_.cert_pem, pair.key_pem, pair.cert_pem).ok());
  auto due = RenewalTime(dir_);
  ASSERT_TRUE(due.ok()) << due.status();
  // Certificates carry whole seconds: allow one either side of issue + 6 s.
  EXPECT_GE(*due, before + absl::Seconds(5));
  EXPECT_LE(*due, absl::Now() + absl::Seconds(7));
}

TEST_F(NodeCredentialsTest, InstalledCredentialsCheckOutAndAreSwappedWhole) {
  pki::KeyAndCert first = Issue(kNode, absl::Hours(1));
  ASSERT_TRUE(InstallCredentials(dir_, ca_.cert_pem, first.key_pem, first.cert_pem).ok());
  EXPECT_TRUE(HaveCredentials(dir_));
  EXPECT_TRUE(CheckCredentials(dir_, kNode, absl::Now()).ok());
  pki::KeyAndCert second = Issue(kNode, absl::Hours(1));
  ASSERT_TRUE(InstallCredentials(dir_, ca_.cert_pem, second.key_pem, second.cert_pem).ok());
  EXPECT_EQ(*ReadFileToString(CredentialPaths(dir_).cert), second.cert_pem);
  EXPECT_EQ(*ReadFileToString(CredentialPaths(dir_).key), second.key_pem);
  EXPECT_TRUE(std::filesystem::is_symlink(dir_ + "/pki"));
  int versions = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    versions += e.path().filename().string().rfind("pki-", 0) == 0;
  }
  EXPECT_EQ(versions, 1);  // the old version is gone
}

TEST_F(NodeCredentialsTest, CertificateOfAnotherNodeIsRefused) {
  pki::KeyAndCert pair = Issue("ffffffffffffffffffffffffffffffff", absl::Hours(1));
  ASSERT_TRUE(InstallCredentials(dir_, ca_.cert_pem, pair.key_pem, pair.cert_pem).ok());
  absl::Status st = CheckCredentials(dir_, kNode, absl::Now());
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("delete"));
}

TEST_F(NodeCredentialsTest, ExpiredCertificateIsRefused) {
  pki::KeyAndCert pair = Issue(kNode, absl::Seconds(5));
  ASSERT_TRUE(InstallCredentials(dir_, ca_.cert_pem, pair.key_pem, pair.cert_pem).ok());
  EXPECT_FALSE(CheckCredentials(dir_, kNode, absl::Now() + absl::Minutes(1)).ok());
}

}  // namespace
}  // namespace fleet::agent
