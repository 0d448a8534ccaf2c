// The fleet's small PKI: a private ECDSA P-256 certificate authority that the controller runs,
// certificate signing requests from agents, mTLS certificates issued from them, and the hashes,
// MACs and random bytes that join tokens are made of. OpenSSL stays inside pki.cc.
//
//   ASSIGN_OR_RETURN(KeyAndCert ca, CreateCertificateAuthority("sparkfleet-ca",
//   absl::Hours(87600)));
//   // On the agent: a key that never leaves the node, and a CSR for it.
//   ASSIGN_OR_RETURN(std::string key, GeneratePrivateKey());
//   ASSIGN_OR_RETURN(std::string csr, CreateCsr(key, "spark-1"));
//   // On the controller: the CN, SANs and usages come from the controller, not from the CSR.
//   ASSIGN_OR_RETURN(std::string cert,
//                    IssueCertificate(ca, csr, {.common_name = "node/spark-1",
//                                               .dns_names = {"spark-1"},
//                                               .validity = absl::Hours(24 * 90),
//                                               .client_auth = true}));
//   RETURN_IF_ERROR(VerifyIssuedBy(cert, ca.cert_pem, absl::Now()));
//   ASSIGN_OR_RETURN(std::string pin, CertificateFingerprint(ca.cert_pem));  // "sha256:3f0c…"
//
// Malformed input (PEM that does not parse, a CSR whose signature fails) is InvalidArgument and
// never crashes; the messages carry OpenSSL's own error text.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::pki {

// Certificates start this far before they are issued, so that a node whose clock is a little
// behind the issuer's accepts a certificate issued a moment ago. Lifetimes (for renewal) count
// from notBefore + this.
inline constexpr absl::Duration kClockSkewAllowance = absl::Minutes(5);

// A private key (PKCS#8 PEM) and its certificate (PEM).
struct KeyAndCert {
  std::string key_pem;
  std::string cert_pem;
};

// What the issuer puts in a certificate. Nothing in it is ever taken from a CSR: a node asks only
// for its public key to be certified, the controller decides who the node is.
struct CertSpec {
  std::string common_name;             // subject CN; 1 to 64 characters (RFC 5280's limit)
  std::vector<std::string> dns_names;  // subjectAltName DNS entries; may be empty
  absl::Duration validity;             // from now; must be positive
  // extendedKeyUsage. At least one must be set: a certificate without an extendedKeyUsage is
  // good for every purpose, which is never what the fleet means.
  bool server_auth = false;
  bool client_auth = false;
};

// What ParseCertificate reads back out of a certificate.
struct CertInfo {
  std::string common_name;  // empty when the subject has no CN
  std::vector<std::string> dns_names;
  std::string issuer_common_name;
  std::string serial_hex;  // lowercase, no leading zeros
  absl::Time not_before;
  absl::Time not_after;
  bool is_ca = false;  // basicConstraints CA:TRUE
};

// A new ECDSA P-256 key and a self-signed CA certificate for it: basicConstraints critical
// CA:TRUE pathlen:0 (it signs leaf certificates only), keyUsage critical keyCertSign|cRLSign,
// subjectKeyIdentifier. notBefore is five minutes in the past, like issued certificates.
absl::StatusOr<KeyAndCert> CreateCertificateAuthority(absl::string_view common_name,
                                                      absl::Duration validity);

// A new ECDSA P-256 private key as unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY").
absl::StatusOr<std::string> GeneratePrivateKey();

// A PEM certificate signing request for the public half of `key_pem`, signed with it. The CN is
// a hint for humans reading the CSR; IssueCertificate ignores it.
absl::StatusOr<std::string> CreateCsr(absl::string_view key_pem, absl::string_view common_name);

// Verifies the CSR's self-signature (proof that the requester holds the private key), then issues
// a certificate signed by `ca` for the CSR's public key with `spec`'s subject, SANs and usages:
// random 128-bit serial, notBefore = now - 5 minutes (clock skew between nodes), notAfter = now +
// spec.validity, basicConstraints critical CA:FALSE, keyUsage critical digitalSignature,
// subject/authority key identifiers. Extensions and names in the CSR are ignored.
// InvalidArgument: the CSR does not parse, its signature fails, its key is not P-256, or `spec`
// is unusable. FailedPrecondition: `ca` is not a CA certificate with its matching key.
absl::StatusOr<std::string> IssueCertificate(const KeyAndCert& ca, absl::string_view csr_pem,
                                             const CertSpec& spec);

// IssueCertificate for a key the issuer makes itself (the controller's own server certificate,
// the admin's client certificate). Returns the new key with its certificate.
absl::StatusOr<KeyAndCert> IssueKeyAndCertificate(const KeyAndCert& ca, const CertSpec& spec);

// Reads the fields of a PEM certificate. InvalidArgument when it does not parse.
absl::StatusOr<CertInfo> ParseCertificate(absl::string_view cert_pem);

// OK when `cert_pem` is signed by the CA in `ca_pem` and both are within their validity at `now`.
// InvalidArgument: either PEM does not parse. FailedPrecondition: a certificate is expired or
// not yet valid (the message says which, and when). Unauthenticated: `cert_pem` was not issued
// by that CA (wrong CA, bad signature), with OpenSSL's verification error in the message.
absl::Status VerifyIssuedBy(absl::string_view cert_pem, absl::string_view ca_pem, absl::Time now);

// OK when the private key in `key_pem` is the one whose public key `cert_pem` certifies;
// FailedPrecondition when they do not match (a key and certificate from different issuances),
// InvalidArgument when either does not parse.
absl::Status CheckKeyMatchesCertificate(absl::string_view key_pem, absl::string_view cert_pem);

// "sha256:" + lowercase hex of SHA-256 over the certificate's DER encoding: 71 characters, the
// CA pin carried in join tokens. It does not depend on the PEM's line breaks or surrounding text.
absl::StatusOr<std::string> CertificateFingerprint(absl::string_view cert_pem);

// Lowercase hex of SHA-256 over `data`, 64 characters.
std::string Sha256Hex(absl::string_view data);

// HMAC-SHA-256 of `data` under `key`: the raw 32 bytes (HexEncode them for display).
std::string HmacSha256(absl::string_view key, absl::string_view data);

// Compares secrets (MACs, token hashes) in time that does not depend on where they differ.
// The lengths are not secret: strings of different lengths compare unequal at once.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// `n` bytes from OpenSSL's CSPRNG. Aborts the process if the CSPRNG fails: nothing that needs
// secrets can go on safely, and no caller could do better than stop.
std::string RandomBytes(size_t n);

// Lowercase hex of raw bytes: "\x00\xff" -> "00ff".
std::string HexEncode(absl::string_view raw);

}  // namespace fleet::pki
