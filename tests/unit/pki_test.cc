// The fleet PKI: a CA, CSRs issued into certificates, verification, and the hashing helpers.
#include "common/pki.h"

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::pki {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

constexpr absl::Duration kCaValidity = absl::Hours(24 * 365 * 10);
constexpr absl::Duration kLeafValidity = absl::Hours(24);

// The DER bytes inside a PEM object.
std::string DerOf(const std::string& pem) {
  std::string base64;
  for (absl::string_view line : absl::StrSplit(pem, '\n')) {
    if (!line.empty() && !absl::StartsWith(line, "-----")) absl::StrAppend(&base64, line);
  }
  std::string der;
  EXPECT_TRUE(absl::Base64Unescape(base64, &der));
  return der;
}

// DER bytes wrapped back into PEM with 64-character lines.
std::string PemOf(absl::string_view der, absl::string_view label) {
  std::string base64 = absl::Base64Escape(der);
  std::string pem = absl::StrCat("-----BEGIN ", label, "-----\n");
  for (size_t i = 0; i < base64.size(); i += 64) {
    absl::StrAppend(&pem, base64.substr(i, 64), "\n");
  }
  absl::StrAppend(&pem, "-----END ", label, "-----\n");
  return pem;
}

// A CSR for an ECDSA P-384 key, made with `openssl req -newkey ec -pkeyopt
// ec_paramgen_curve:P-384 -subj /CN=p384-node`: well-formed and correctly signed, but not a key
// the fleet issues for.
constexpr char kP384Csr[] = R"(-----BEGIN CERTIFICATE REQUEST-----
MIIBDDCBkwIBADAUMRIwEAYDVQQDDAlwMzg0LW5vZGUwdjAQBgcqhkjOPQIBBgUr
gQQAIgNiAATnuAGGGSD61Zo31jaqOyHPwoM4yCg0jIc9GPNVT+CHmeu2mXXkya3E
BRYnfptfmRCe8ZXyXRpmkOaMS96pb9nDv2VYuNveQ8/NmsZ8PAjlGgSQp1chjJ4n
bobO2Vz38aOgADAKBggqhkjOPQQDAgNoADBlAjEA8PNMO5qMMg6y0suTgdWjBPvY
ablix5pFFaY6bg1vJlYWCz/ERhZAwyd1GmQ8+KQ0AjAqCVjdPcHNTM0oagmrqT8u
CUl4JOb2rV9TH9iKRFW2ZFFEDMARe0qNQmFuw0XXxLA=
-----END CERTIFICATE REQUEST-----
)";

CertSpec NodeSpec() {
  return CertSpec{.common_name = "node/spark-1",
                  .dns_names = {"spark-1", "spark-1.fleet.local"},
                  .validity = kLeafValidity,
                  .client_auth = true};
}

class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<KeyAndCert> ca = CreateCertificateAuthority("sparkfleet-ca", kCaValidity);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = *ca;
  }

  // A node key and a certificate issued for it from a CSR, with NodeSpec().
  KeyAndCert IssueNode() {
    absl::StatusOr<std::string> key = GeneratePrivateKey();
    EXPECT_TRUE(key.ok()) << key.status();
    absl::StatusOr<std::string> csr = CreateCsr(*key, "spark-1");
    EXPECT_TRUE(csr.ok()) << csr.status();
    absl::StatusOr<std::string> cert = IssueCertificate(ca_, *csr, NodeSpec());
    EXPECT_TRUE(cert.ok()) << cert.status();
    return {.key_pem = *key, .cert_pem = cert.value_or("")};
  }

  KeyAndCert ca_;
};

TEST_F(PkiTest, CreatesACertificateAuthority) {
  EXPECT_THAT(ca_.key_pem, StartsWith("-----BEGIN PRIVATE KEY-----\n"));
  EXPECT_THAT(ca_.cert_pem, StartsWith("-----BEGIN CERTIFICATE-----\n"));

  absl::Time before = absl::Now();
  absl::StatusOr<CertInfo> info = ParseCertificate(ca_.cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->is_ca);
  EXPECT_EQ(info->common_name, "sparkfleet-ca");
  EXPECT_EQ(info->issuer_common_name, "sparkfleet-ca");
  EXPECT_TRUE(info->dns_names.empty());
  EXPECT_THAT(info->serial_hex, MatchesRegex("[0-9a-f]+"));
  EXPECT_EQ(info->not_after - info->not_before, kCaValidity + absl::Minutes(5));
  EXPECT_LE(info->not_before, before - absl::Minutes(5) + absl::Seconds(1));
  EXPECT_GE(info->not_before, before - absl::Minutes(5) - absl::Seconds(60));

  EXPECT_TRUE(CheckKeyMatchesCertificate(ca_.key_pem, ca_.cert_pem).ok());
  // A root is issued by itself.
  EXPECT_TRUE(VerifyIssuedBy(ca_.cert_pem, ca_.cert_pem, absl::Now()).ok());
}

TEST_F(PkiTest, IssuesACsrWithTheIssuersNameSansAndValidity) {
  absl::StatusOr<std::string> key = GeneratePrivateKey();
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_THAT(*key, StartsWith("-----BEGIN PRIVATE KEY-----\n"));
  // The node asks to be called "admin"; the controller decides it is node/spark-1.
  absl::StatusOr<std::string> csr = CreateCsr(*key, "admin");
  ASSERT_TRUE(csr.ok()) << csr.status();
  EXPECT_THAT(*csr, StartsWith("-----BEGIN CERTIFICATE REQUEST-----\n"));

  absl::Time before = absl::Now();
  absl::StatusOr<std::string> cert = IssueCertificate(ca_, *csr, NodeSpec());
  ASSERT_TRUE(cert.ok()) << cert.status();

  absl::StatusOr<CertInfo> info = ParseCertificate(*cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "node/spark-1");
  EXPECT_EQ(info->issuer_common_name, "sparkfleet-ca");
  EXPECT_THAT(info->dns_names, ElementsAre("spark-1", "spark-1.fleet.local"));
  EXPECT_FALSE(info->is_ca);
  EXPECT_EQ(info->not_after - info->not_before, kLeafValidity + absl::Minutes(5));
  EXPECT_LE(info->not_before, before - absl::Minutes(5) + absl::Seconds(1));
  EXPECT_GE(info->not_before, before - absl::Minutes(5) - absl::Seconds(60));

  EXPECT_TRUE(VerifyIssuedBy(*cert, ca_.cert_pem, absl::Now()).ok());
  EXPECT_TRUE(CheckKeyMatchesCertificate(*key, *cert).ok());
}

TEST_F(PkiTest, SerialsAreRandom) {
  absl::StatusOr<CertInfo> a = ParseCertificate(IssueNode().cert_pem);
  absl::StatusOr<CertInfo> b = ParseCertificate(IssueNode().cert_pem);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->serial_hex, b->serial_hex);
  // 128 random bits print as up to 32 hex digits.
  EXPECT_LE(a->serial_hex.size(), 32u);
  EXPECT_GE(a->serial_hex.size(), 16u);
}

TEST_F(PkiTest, IssuesKeyAndCertificateForTheIssuersOwnUse) {
  absl::StatusOr<KeyAndCert> server =
      IssueKeyAndCertificate(ca_, {.common_name = "controller",
                                   .dns_names = {"controller.fleet.local", "localhost"},
                                   .validity = absl::Hours(24 * 90),
                                   .server_auth = true,
                                   .client_auth = true});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(CheckKeyMatchesCertificate(server->key_pem, server->cert_pem).ok());
  EXPECT_TRUE(VerifyIssuedBy(server->cert_pem, ca_.cert_pem, absl::Now()).ok());
  absl::StatusOr<CertInfo> info = ParseCertificate(server->cert_pem);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->common_name, "controller");
  EXPECT_THAT(info->dns_names, ElementsAre("controller.fleet.local", "localhost"));
}

TEST_F(PkiTest, CertificateFromAnotherCaFailsVerification) {
  // Two clusters whose CAs carry the same default name must still not trust each other.
  absl::StatusOr<KeyAndCert> other = CreateCertificateAuthority("sparkfleet-ca", kCaValidity);
  ASSERT_TRUE(other.ok()) << other.status();
  KeyAndCert node = IssueNode();

  absl::Status status = VerifyIssuedBy(node.cert_pem, other->cert_pem, absl::Now());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
  EXPECT_THAT(status.message(), HasSubstr("was not issued by CA CN=sparkfleet-ca"));

  // Nor does another CA's root verify as issued by ours.
  EXPECT_EQ(VerifyIssuedBy(other->cert_pem, ca_.cert_pem, absl::Now()).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(PkiTest, LeafIsNotAcceptedAsItsOwnCa) {
  KeyAndCert node = IssueNode();
  EXPECT_EQ(VerifyIssuedBy(node.cert_pem, node.cert_pem, absl::Now()).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(PkiTest, ExpiredCertificateFailsSayingExpired) {
  KeyAndCert node = IssueNode();
  absl::Time later = absl::Now() + kLeafValidity + absl::Hours(1);
  absl::Status status = VerifyIssuedBy(node.cert_pem, ca_.cert_pem, later);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("certificate CN=node/spark-1 expired at"));
  EXPECT_THAT(status.message(), HasSubstr("issue a new certificate"));
}

TEST_F(PkiTest, NotYetValidCertificateFailsSayingSo) {
  KeyAndCert node = IssueNode();
  // Five minutes of skew are allowed for; an hour is not.
  EXPECT_TRUE(VerifyIssuedBy(node.cert_pem, ca_.cert_pem, absl::Now() - absl::Minutes(4)).ok());
  absl::Status status = VerifyIssuedBy(node.cert_pem, ca_.cert_pem, absl::Now() - absl::Hours(1));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("not yet valid"));
}

TEST_F(PkiTest, ExpiredCaIsNamedAsTheCause) {
  absl::StatusOr<KeyAndCert> short_ca = CreateCertificateAuthority("short-ca", absl::Hours(1));
  ASSERT_TRUE(short_ca.ok()) << short_ca.status();
  absl::StatusOr<KeyAndCert> leaf = IssueKeyAndCertificate(*short_ca, NodeSpec());
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  absl::Status status =
      VerifyIssuedBy(leaf->cert_pem, short_ca->cert_pem, absl::Now() + absl::Hours(2));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("CA certificate CN=short-ca expired"));
}

TEST_F(PkiTest, CsrWithAFlippedBase64CharacterIsRejected) {
  absl::StatusOr<std::string> key = GeneratePrivateKey();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> csr = CreateCsr(*key, "spark-1");
  ASSERT_TRUE(csr.ok());
  // Flip one character in the middle of the base64 body, staying inside the base64 alphabet.
  std::string tampered = *csr;
  size_t pos = tampered.find('\n') + 100;
  tampered[pos] = tampered[pos] == 'A' ? 'B' : 'A';
  absl::StatusOr<std::string> cert = IssueCertificate(ca_, tampered, NodeSpec());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument) << cert.status();
}

TEST_F(PkiTest, CsrWhoseContentChangedFailsItsSignatureCheck) {
  absl::StatusOr<std::string> key = GeneratePrivateKey();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> csr = CreateCsr(*key, "spark-aaaa");
  ASSERT_TRUE(csr.ok());
  // Edit the subject inside the DER: the CSR still parses, but its signature no longer matches.
  std::string der = DerOf(*csr);
  size_t pos = der.find("spark-aaaa");
  ASSERT_NE(pos, std::string::npos);
  der[pos + 9] = 'b';
  absl::StatusOr<std::string> cert =
      IssueCertificate(ca_, PemOf(der, "CERTIFICATE REQUEST"), NodeSpec());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument) << cert.status();
  EXPECT_THAT(cert.status().message(), HasSubstr("signature does not verify"));
}

TEST_F(PkiTest, CsrForAKeyOtherThanP256IsRejected) {
  absl::StatusOr<std::string> cert = IssueCertificate(ca_, kP384Csr, NodeSpec());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kInvalidArgument) << cert.status();
  EXPECT_THAT(cert.status().message(), HasSubstr("only for ECDSA P-256 keys"));
}

TEST_F(PkiTest, DetectsKeyCertificateMismatch) {
  KeyAndCert node = IssueNode();
  absl::StatusOr<std::string> other_key = GeneratePrivateKey();
  ASSERT_TRUE(other_key.ok());
  absl::Status status = CheckKeyMatchesCertificate(*other_key, node.cert_pem);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("does not match certificate CN=node/spark-1"));
  EXPECT_EQ(CheckKeyMatchesCertificate(ca_.key_pem, node.cert_pem).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(PkiTest, RefusesToIssueFromABrokenCa) {
  absl::StatusOr<std::string> key = GeneratePrivateKey();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> csr = CreateCsr(*key, "spark-1");
  ASSERT_TRUE(csr.ok());

  absl::StatusOr<std::string> stray_key = GeneratePrivateKey();
  ASSERT_TRUE(stray_key.ok());
  KeyAndCert wrong_key{.key_pem = *stray_key, .cert_pem = ca_.cert_pem};
  absl::StatusOr<std::string> cert = IssueCertificate(wrong_key, *csr, NodeSpec());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kFailedPrecondition) << cert.status();
  EXPECT_THAT(cert.status().message(), HasSubstr("does not belong to CA certificate"));

  // A leaf certificate with its own key is not a CA.
  cert = IssueCertificate(IssueNode(), *csr, NodeSpec());
  EXPECT_EQ(cert.status().code(), absl::StatusCode::kFailedPrecondition) << cert.status();
  EXPECT_THAT(cert.status().message(), HasSubstr("is not a CA"));
}

TEST_F(PkiTest, RejectsUnusableSpecs) {
  absl::StatusOr<std::string> key = GeneratePrivateKey();
  ASSERT_TRUE(key.ok());
  absl::StatusOr<std::string> csr = CreateCsr(*key, "spark-1");
  ASSERT_TRUE(csr.ok());
  auto issue = [&](CertSpec spec) { return IssueCertificate(ca_, *csr, spec).status(); };

  CertSpec spec = NodeSpec();
  spec.common_name = "";
  EXPECT_EQ(issue(spec).code(), absl::StatusCode::kInvalidArgument);
  spec = NodeSpec();
  spec.common_name = std::string(65, 'x');
  EXPECT_EQ(issue(spec).code(), absl::StatusCode::kInvalidArgument) << issue(spec);
  spec = NodeSpec();
  spec.client_auth = false;
  EXPECT_THAT(issue(spec).message(), HasSubstr("neither server_auth nor client_auth"));
  spec = NodeSpec();
  spec.validity = absl::ZeroDuration();
  EXPECT_THAT(issue(spec).message(), HasSubstr("positive, finite"));
  spec = NodeSpec();
  spec.validity = absl::Hours(24 * 365 * 10000);
  EXPECT_EQ(issue(spec).code(), absl::StatusCode::kInvalidArgument) << issue(spec);
  // A comma would add a second, IP, entry if SANs were written as OpenSSL config text.
  spec = NodeSpec();
  spec.dns_names = {"spark-1,IP:10.0.0.1"};
  EXPECT_EQ(issue(spec).code(), absl::StatusCode::kInvalidArgument);
  spec.dns_names = {""};
  EXPECT_EQ(issue(spec).code(), absl::StatusCode::kInvalidArgument);
  spec.dns_names = {"*.fleet.local", "a-b_c.d"};
  EXPECT_TRUE(issue(spec).ok()) << issue(spec);
}

TEST_F(PkiTest, FingerprintIsStableAndHashesTheDer) {
  absl::StatusOr<std::string> fingerprint = CertificateFingerprint(ca_.cert_pem);
  ASSERT_TRUE(fingerprint.ok()) << fingerprint.status();
  EXPECT_EQ(fingerprint->size(), 71u);
  EXPECT_THAT(*fingerprint, MatchesRegex("sha256:[0-9a-f]{64}"));
  EXPECT_EQ(*fingerprint, absl::StrCat("sha256:", Sha256Hex(DerOf(ca_.cert_pem))));
  // Text around the PEM does not change the pin.
  EXPECT_EQ(CertificateFingerprint(absl::StrCat("\n\n", ca_.cert_pem, "\n")).value_or(""),
            *fingerprint);
  EXPECT_EQ(CertificateFingerprint(ca_.cert_pem).value_or(""), *fingerprint);

  absl::StatusOr<KeyAndCert> other = CreateCertificateAuthority("sparkfleet-ca", kCaValidity);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(CertificateFingerprint(other->cert_pem).value_or(""), *fingerprint);
}

TEST(HashTest, Sha256MatchesFips180Vectors) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(HashTest, HmacSha256MatchesRfc4231TestCase2) {
  std::string mac = HmacSha256("Jefe", "what do ya want for nothing?");
  EXPECT_EQ(mac.size(), 32u);
  EXPECT_EQ(HexEncode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HashTest, HmacSha256AcceptsAnEmptyKeyAndMessage) {
  EXPECT_EQ(HexEncode(HmacSha256(absl::string_view(), absl::string_view())),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST(HashTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST(HashTest, RandomBytesAndHex) {
  EXPECT_EQ(RandomBytes(0), "");
  std::string a = RandomBytes(32);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, RandomBytes(32));
  EXPECT_EQ(HexEncode(std::string("\x00\xff\x10", 3)), "00ff10");
  EXPECT_EQ(HexEncode(""), "");
}

TEST_F(PkiTest, GarbageInputIsInvalidArgumentNotACrash) {
  const std::vector<std::string> garbage = {
      "",
      "garbage",
      std::string("\0\xff\x01", 3),
      "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
      "-----BEGIN CERTIFICATE-----\nQUJDREVGRw==\n-----END CERTIFICATE-----\n",
      "-----BEGIN PRIVATE KEY-----\nQUJDREVGRw==\n-----END PRIVATE KEY-----\n",
      "-----BEGIN CERTIFICATE REQUEST-----\nQUJDREVGRw==\n-----END CERTIFICATE REQUEST-----\n",
      ca_.cert_pem.substr(0, ca_.cert_pem.size() / 2),
  };
  KeyAndCert node = IssueNode();
  for (const std::string& pem : garbage) {
    SCOPED_TRACE(absl::CHexEscape(pem));
    constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
    EXPECT_EQ(ParseCertificate(pem).status().code(), kInvalid);
    EXPECT_EQ(CertificateFingerprint(pem).status().code(), kInvalid);
    EXPECT_EQ(CreateCsr(pem, "spark-1").status().code(), kInvalid);
    EXPECT_EQ(IssueCertificate(ca_, pem, NodeSpec()).status().code(), kInvalid);
    EXPECT_EQ(VerifyIssuedBy(pem, ca_.cert_pem, absl::Now()).code(), kInvalid);
    EXPECT_EQ(VerifyIssuedBy(node.cert_pem, pem, absl::Now()).code(), kInvalid);
    EXPECT_EQ(CheckKeyMatchesCertificate(pem, node.cert_pem).code(), kInvalid);
    EXPECT_EQ(CheckKeyMatchesCertificate(node.key_pem, pem).code(), kInvalid);
  }
  absl::Status status = ParseCertificate("garbage").status();
  EXPECT_THAT(status.message(), HasSubstr("is not a PEM certificate"));
  // OpenSSL's own reason is carried along.
  EXPECT_THAT(status.message(), HasSubstr("no start line"));
  // A private key is not a certificate.
  EXPECT_EQ(ParseCertificate(node.key_pem).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fleet::pki
