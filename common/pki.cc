// The fleet's PKI on OpenSSL 3's EVP and X509 APIs. Every OpenSSL object lives in a unique_ptr
// with its free function, and every failure drains OpenSSL's error queue into the Status.
#include "common/pki.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::pki {
namespace {

// Calls `kFree` on a non-null pointer; unique_ptr never calls its deleter with null.
template <auto kFree>
struct OpenSslDeleter {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};

// OPENSSL_free is a macro (it records file and line), so it cannot be a template argument.
struct OpenSslFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};

using Asn1Ia5StringPtr = std::unique_ptr<ASN1_IA5STRING, OpenSslDeleter<ASN1_IA5STRING_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpenSslDeleter<BN_free>>;
using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO_free_all>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OpenSslDeleter<EVP_PKEY_CTX_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, OpenSslDeleter<GENERAL_NAME_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OpenSslDeleter<GENERAL_NAMES_free>>;
using OpenSslStringPtr = std::unique_ptr<unsigned char, OpenSslFree>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpenSslDeleter<X509_EXTENSION_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, OpenSslDeleter<X509_NAME_free>>;
using X509Ptr = std::unique_ptr<X509, OpenSslDeleter<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OpenSslDeleter<X509_REQ_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslDeleter<X509_STORE_CTX_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpenSslDeleter<X509_STORE_free>>;

// A serial number of 128 random bits: unique without a counter to persist, and unpredictable,
// as the CA/Browser Forum asks (RFC 5280 allows up to 20 octets).
constexpr int kSerialBytes = 16;

// RFC 5280's ub-common-name.
constexpr size_t kMaxCommonNameChars = 64;

// RFC 1035: a name is at most 253 characters written out.
constexpr size_t kMaxDnsNameChars = 253;

// OpenSSL's error queue is per thread and outlives a call: emptying it here keeps one failure's
// errors out of the next failure's message.
std::string DrainOpenSslErrors() {
  std::vector<std::string> errors;
  while (unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    errors.emplace_back(buf);
  }
  if (errors.empty()) return "OpenSSL gave no detail";
  return absl::StrJoin(errors, "; ");
}

// "<what>: <OpenSSL's errors>".
std::string OpenSslError(absl::string_view what) {
  return absl::StrCat(what, ": ", DrainOpenSslErrors());
}

// For the functions that cannot return a Status: a failing hash or CSPRNG means the library or
// the machine is broken, and carrying on would hand out weak secrets.
[[noreturn]] void DieOnCryptoFailure(absl::string_view what) {
  Log(LogLevel::kError, "pki", "crypto primitive failed; aborting",
      {{"call", what}, {"openssl", DrainOpenSslErrors()}});
  std::abort();
}

std::string FormatUtc(absl::Time t) {
  return absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone());
}

// A read-only memory BIO over `data`, which must outlive it.
absl::StatusOr<BioPtr> ReadOnlyBio(absl::string_view data, absl::string_view what) {
  if (data.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty; expected PEM text"));
  }
  if (data.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", data.size(), " bytes; no PEM object is that large"));
  }
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (bio == nullptr) return absl::InternalError(OpenSslError("BIO_new_mem_buf"));
  return bio;
}

// Runs `write(BIO*)`, an OpenSSL PEM writer returning 1 on success, into a string.
template <typename Writer>
absl::StatusOr<std::string> WritePem(absl::string_view what, Writer write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) return absl::InternalError(OpenSslError("BIO_new"));
  if (write(bio.get()) != 1) {
    return absl::InternalError(OpenSslError(absl::StrCat("writing ", what, " as PEM")));
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  if (size <= 0 || data == nullptr) {
    return absl::InternalError(absl::StrCat("writing ", what, " as PEM produced no output"));
  }
  return std::string(data, static_cast<size_t>(size));
}

// Encrypted keys are refused rather than prompted for: OpenSSL's default callback would read a
// passphrase from the daemon's terminal.
int RefusePassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return 0; }

absl::StatusOr<EvpPkeyPtr> ParsePrivateKey(absl::string_view pem, absl::string_view what) {
  ASSIGN_OR_RETURN(BioPtr bio, ReadOnlyBio(pem, what));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, RefusePassphrase, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(OpenSslError(
        absl::StrCat(what, " is not an unencrypted PEM private key (\"BEGIN PRIVATE KEY\")")));
  }
  return key;
}

absl::StatusOr<X509Ptr> ParseCertPem(absl::string_view pem, absl::string_view what) {
  ASSIGN_OR_RETURN(BioPtr bio, ReadOnlyBio(pem, what));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, RefusePassphrase, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        OpenSslError(absl::StrCat(what, " is not a PEM certificate (\"BEGIN CERTIFICATE\")")));
  }
  return cert;
}

absl::StatusOr<X509ReqPtr> ParseCsrPem(absl::string_view pem) {
  ASSIGN_OR_RETURN(BioPtr bio, ReadOnlyBio(pem, "CSR"));
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, RefusePassphrase, nullptr));
  if (req == nullptr) {
    return absl::InvalidArgumentError(
        OpenSslError("CSR is not a PEM certificate request (\"BEGIN CERTIFICATE REQUEST\")"));
  }
  return req;
}

absl::StatusOr<EvpPkeyPtr> NewP256Key() {
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) <= 0 ||
      EVP_PKEY_CTX_set_group_name(ctx.get(), SN_X9_62_prime256v1) <= 0) {
    return absl::InternalError(OpenSslError("setting up P-256 key generation"));
  }
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_generate(ctx.get(), &key) <= 0) {
    return absl::InternalError(OpenSslError("generating a P-256 key"));
  }
  return EvpPkeyPtr(key);
}

// "EC P-256", "EC secp384r1", "RSA": for messages about keys we refuse.
std::string DescribeKey(const EVP_PKEY* key) {
  const char* type = EVP_PKEY_get0_type_name(key);
  std::string out = type != nullptr ? type : "unknown";
  char group[80];
  size_t group_len = 0;
  if (EVP_PKEY_get_group_name(key, group, sizeof group, &group_len) == 1) {
    absl::StrAppend(&out, " ", absl::string_view(group, group_len));
  }
  ERR_clear_error();  // Keys without a group (RSA) leave an error behind.
  return out;
}

bool IsP256(const EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC") != 1) return false;
  char group[80];
  size_t group_len = 0;
  if (EVP_PKEY_get_group_name(key, group, sizeof group, &group_len) != 1) {
    ERR_clear_error();
    return false;
  }
  // OpenSSL may name the curve by its X9.62 or its NIST name.
  absl::string_view name(group, group_len);
  return absl::EqualsIgnoreCase(name, SN_X9_62_prime256v1) || absl::EqualsIgnoreCase(name, "P-256");
}

absl::StatusOr<X509NamePtr> NameWithCommonName(absl::string_view common_name) {
  if (common_name.empty()) {
    return absl::InvalidArgumentError("common name is empty; the issuer must name the subject");
  }
  X509NamePtr name(X509_NAME_new());
  if (name == nullptr) return absl::InternalError(OpenSslError("X509_NAME_new"));
  // OpenSSL enforces ub-common-name (64 characters) and valid UTF-8 here.
  if (common_name.size() > static_cast<size_t>(INT_MAX) ||
      X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return absl::InvalidArgumentError(OpenSslError(absl::StrCat(
        "common name \"", absl::CHexEscape(common_name),
        "\" is not usable; it must be UTF-8 of 1 to ", kMaxCommonNameChars, " characters")));
  }
  return name;
}

// The value of the first CN in `name`, as UTF-8; empty when there is none.
absl::StatusOr<std::string> CommonNameOf(const X509_NAME* name) {
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return std::string();
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int size = ASN1_STRING_to_UTF8(&utf8, value);
  if (size < 0) return absl::InvalidArgumentError(OpenSslError("common name is not valid text"));
  OpenSslStringPtr owner(utf8);
  return std::string(reinterpret_cast<const char*>(utf8), static_cast<size_t>(size));
}

// For messages: the subject CN, or a placeholder when it cannot be read.
std::string SubjectCnForMessage(const X509* cert) {
  absl::StatusOr<std::string> cn = CommonNameOf(X509_get_subject_name(cert));
  ERR_clear_error();
  return cn.ok() ? *cn : "<unreadable>";
}

absl::StatusOr<absl::Time> ToAbslTime(const ASN1_TIME* time, absl::string_view what) {
  struct tm tm = {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    return absl::InvalidArgumentError(OpenSslError(absl::StrCat(what, " is not a valid time")));
  }
  return absl::FromCivil(absl::CivilSecond(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                           tm.tm_min, tm.tm_sec),
                         absl::UTCTimeZone());
}

// Letters, digits, '-', '_', '.' and a leading "*." wildcard: what TLS hostname checks match
// against. Anything else would make a certificate that no client can match.
absl::Status CheckDnsName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("DNS name \"", absl::CHexEscape(name), "\" for subjectAltName ", why));
  };
  if (name.empty()) return bad("is empty");
  if (name.size() > kMaxDnsNameChars) {
    return bad(absl::StrCat("is longer than ", kMaxDnsNameChars, " characters"));
  }
  absl::string_view rest = name;
  if (absl::StartsWith(rest, "*.")) rest.remove_prefix(2);
  if (rest.empty() || rest.front() == '.' || rest.back() == '.' ||
      rest.find("..") != absl::string_view::npos) {
    return bad("has an empty label");
  }
  for (char c : rest) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return bad("may hold only letters, digits, '-', '_', '.' and a leading \"*.\"");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSpec(const CertSpec& spec) {
  if (spec.common_name.empty()) {
    return absl::InvalidArgumentError("CertSpec.common_name is empty; the issuer must name it");
  }
  if (!spec.server_auth && !spec.client_auth) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CertSpec for \"", spec.common_name,
        "\" allows neither server_auth nor client_auth; set the usage the certificate is for"));
  }
  for (const std::string& name : spec.dns_names) RETURN_IF_ERROR(CheckDnsName(name));
  return absl::OkStatus();
}

absl::Status SetRandomSerial(X509* cert) {
  std::string raw = RandomBytes(kSerialBytes);
  BignumPtr serial(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), kSerialBytes, nullptr));
  if (serial == nullptr ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert)) == nullptr) {
    return absl::InternalError(OpenSslError("setting the serial number"));
  }
  return absl::OkStatus();
}

absl::Status SetValidity(X509* cert, absl::Time now, absl::Duration validity) {
  if (validity <= absl::ZeroDuration() || validity == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate validity must be a positive, finite duration; got ",
                     absl::FormatDuration(validity)));
  }
  // ASN1_TIME_set happily writes a five-digit year, which no parser accepts afterwards.
  absl::Time not_after = now + validity;
  if (absl::ToCivilYear(not_after, absl::UTCTimeZone()).year() > 9999) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate validity ", absl::FormatDuration(validity),
        " ends after the year 9999, the last that X.509 can write; choose a shorter one"));
  }
  if (ASN1_TIME_set(X509_getm_notBefore(cert), absl::ToTimeT(now - kClockSkewAllowance)) ==
          nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), absl::ToTimeT(not_after)) == nullptr) {
    return absl::InternalError(OpenSslError("setting the validity period"));
  }
  return absl::OkStatus();
}

// A version 3 certificate for `subject_key` named `common_name`, with serial and validity set;
// the caller sets the issuer, adds extensions and signs.
absl::StatusOr<X509Ptr> NewCertificate(EVP_PKEY* subject_key, absl::string_view common_name,
                                       absl::Duration validity) {
  X509Ptr cert(X509_new());
  if (cert == nullptr) return absl::InternalError(OpenSslError("X509_new"));
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return absl::InternalError(OpenSslError("X509_set_version"));
  }
  RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  RETURN_IF_ERROR(SetValidity(cert.get(), absl::Now(), validity));
  ASSIGN_OR_RETURN(X509NamePtr subject, NameWithCommonName(common_name));
  if (X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return absl::InternalError(OpenSslError("setting the subject and public key"));
  }
  return cert;
}

// Adds an extension written in OpenSSL's config syntax ("critical,CA:TRUE,pathlen:0"). Only
// fixed strings go through here; names from callers are encoded by AddDnsNames.
absl::Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509ExtensionPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return absl::InternalError(
        OpenSslError(absl::StrCat("adding extension ", OBJ_nid2sn(nid), "=", value)));
  }
  return absl::OkStatus();
}

// subjectAltName with one dNSName per entry, built as ASN.1 rather than as an OpenSSL config
// string so that a name containing ',' or ':' cannot smuggle in another entry.
absl::Status AddDnsNames(X509* cert, const std::vector<std::string>& dns_names) {
  if (dns_names.empty()) return absl::OkStatus();
  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (names == nullptr) return absl::InternalError(OpenSslError("sk_GENERAL_NAME_new_null"));
  for (const std::string& dns_name : dns_names) {
    Asn1Ia5StringPtr ia5(ASN1_IA5STRING_new());
    GeneralNamePtr name(GENERAL_NAME_new());
    if (ia5 == nullptr || name == nullptr ||
        ASN1_STRING_set(ia5.get(), dns_name.data(), static_cast<int>(dns_name.size())) != 1) {
      return absl::InternalError(OpenSslError("encoding a subjectAltName DNS entry"));
    }
    GENERAL_NAME_set0_value(name.get(), GEN_DNS, ia5.release());
    if (sk_GENERAL_NAME_push(names.get(), name.get()) <= 0) {
      return absl::InternalError(OpenSslError("sk_GENERAL_NAME_push"));
    }
    name.release();  // Now owned by `names`.
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), /*crit=*/0, X509V3_ADD_DEFAULT) !=
      1) {
    return absl::InternalError(OpenSslError("adding subjectAltName"));
  }
  return absl::OkStatus();
}

absl::Status Sign(X509* cert, EVP_PKEY* issuer_key) {
  if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
    return absl::InternalError(OpenSslError("signing the certificate"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  return WritePem("certificate", [&](BIO* bio) { return PEM_write_bio_X509(bio, cert); });
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  return WritePem("private key", [&](BIO* bio) {
    return PEM_write_bio_PKCS8PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
}

// The CA's certificate and key, checked to be usable for issuing. A broken CA is the
// issuer's own setup, not the requester's input, hence FailedPrecondition.
absl::StatusOr<std::pair<X509Ptr, EvpPkeyPtr>> LoadIssuer(const KeyAndCert& ca) {
  absl::StatusOr<X509Ptr> cert = ParseCertPem(ca.cert_pem, "CA certificate");
  if (!cert.ok()) return absl::FailedPreconditionError(cert.status().message());
  absl::StatusOr<EvpPkeyPtr> key = ParsePrivateKey(ca.key_pem, "CA private key");
  if (!key.ok()) return absl::FailedPreconditionError(key.status().message());
  if ((X509_get_extension_flags(cert->get()) & EXFLAG_CA) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "certificate CN=", SubjectCnForMessage(cert->get()),
        " is not a CA (no basicConstraints CA:TRUE); issue from the fleet CA's certificate"));
  }
  const EVP_PKEY* public_key = X509_get0_pubkey(cert->get());
  if (public_key == nullptr || EVP_PKEY_eq(key->get(), public_key) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(
        "the CA private key does not belong to CA certificate CN=",
        SubjectCnForMessage(cert->get()), "; the CA's key and certificate files are mismatched"));
  }
  return std::make_pair(*std::move(cert), *std::move(key));
}

// Issues a leaf certificate for `subject_key` (already checked) from `ca`.
absl::StatusOr<std::string> IssueForKey(const KeyAndCert& ca, EVP_PKEY* subject_key,
                                        const CertSpec& spec) {
  RETURN_IF_ERROR(CheckSpec(spec));
  ASSIGN_OR_RETURN(auto issuer, LoadIssuer(ca));
  auto& [ca_cert, ca_key] = issuer;

  ASSIGN_OR_RETURN(X509Ptr cert, NewCertificate(subject_key, spec.common_name, spec.validity));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get())) != 1) {
    return absl::InternalError(OpenSslError("X509_set_issuer_name"));
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca_cert.get(), cert.get(), nullptr, nullptr, 0);
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature"));
  std::string usages = spec.server_auth && spec.client_auth ? "serverAuth,clientAuth"
                       : spec.server_auth                   ? "serverAuth"
                                                            : "clientAuth";
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_ext_key_usage, usages.c_str()));
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
  RETURN_IF_ERROR(AddDnsNames(cert.get(), spec.dns_names));
  RETURN_IF_ERROR(Sign(cert.get(), ca_key.get()));
  return CertToPem(cert.get());
}

}  // namespace

absl::StatusOr<KeyAndCert> CreateCertificateAuthority(absl::string_view common_name,
                                                      absl::Duration validity) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(EvpPkeyPtr key, NewP256Key());
  ASSIGN_OR_RETURN(X509Ptr cert, NewCertificate(key.get(), common_name, validity));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) {
    return absl::InternalError(OpenSslError("X509_set_issuer_name"));
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  // pathlen:0: the fleet CA signs node and admin certificates, never another CA.
  RETURN_IF_ERROR(
      AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  RETURN_IF_ERROR(Sign(cert.get(), key.get()));
  KeyAndCert out;
  ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  ASSIGN_OR_RETURN(out.cert_pem, CertToPem(cert.get()));
  return out;
}

absl::StatusOr<std::string> GeneratePrivateKey() {
  ERR_clear_error();
  ASSIGN_OR_RETURN(EvpPkeyPtr key, NewP256Key());
  return KeyToPem(key.get());
}

absl::StatusOr<std::string> CreateCsr(absl::string_view key_pem, absl::string_view common_name) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(EvpPkeyPtr key, ParsePrivateKey(key_pem, "private key"));
  ASSIGN_OR_RETURN(X509NamePtr subject, NameWithCommonName(common_name));
  X509ReqPtr req(X509_REQ_new());
  if (req == nullptr) return absl::InternalError(OpenSslError("X509_REQ_new"));
  if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_subject_name(req.get(), subject.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1) {
    return absl::InternalError(OpenSslError("filling in the CSR"));
  }
  if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) {
    return absl::InternalError(OpenSslError("signing the CSR"));
  }
  return WritePem("CSR", [&](BIO* bio) { return PEM_write_bio_X509_REQ(bio, req.get()); });
}

absl::StatusOr<std::string> IssueCertificate(const KeyAndCert& ca, absl::string_view csr_pem,
                                             const CertSpec& spec) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(X509ReqPtr req, ParseCsrPem(csr_pem));
  EVP_PKEY* public_key = X509_REQ_get0_pubkey(req.get());
  if (public_key == nullptr) {
    return absl::InvalidArgumentError(OpenSslError("the CSR's public key does not decode"));
  }
  // The self-signature proves the requester holds the private key; without it anyone could get
  // a certificate for someone else's public key.
  if (X509_REQ_verify(req.get(), public_key) != 1) {
    return absl::InvalidArgumentError(OpenSslError(
        "the CSR's signature does not verify against its own public key (corrupted or tampered "
        "in transit); make a new CSR"));
  }
  if (!IsP256(public_key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CSR's key is ", DescribeKey(public_key),
        "; the fleet issues certificates only for ECDSA P-256 keys (see GeneratePrivateKey)"));
  }
  return IssueForKey(ca, public_key, spec);
}

absl::StatusOr<KeyAndCert> IssueKeyAndCertificate(const KeyAndCert& ca, const CertSpec& spec) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(EvpPkeyPtr key, NewP256Key());
  KeyAndCert out;
  ASSIGN_OR_RETURN(out.cert_pem, IssueForKey(ca, key.get(), spec));
  ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  return out;
}

absl::StatusOr<CertInfo> ParseCertificate(absl::string_view cert_pem) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(X509Ptr cert, ParseCertPem(cert_pem, "certificate"));
  CertInfo info;
  ASSIGN_OR_RETURN(info.common_name, CommonNameOf(X509_get_subject_name(cert.get())));
  ASSIGN_OR_RETURN(info.issuer_common_name, CommonNameOf(X509_get_issuer_name(cert.get())));
  ASSIGN_OR_RETURN(info.not_before, ToAbslTime(X509_get0_notBefore(cert.get()), "notBefore"));
  ASSIGN_OR_RETURN(info.not_after, ToAbslTime(X509_get0_notAfter(cert.get()), "notAfter"));

  BignumPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  if (serial == nullptr) {
    return absl::InvalidArgumentError(OpenSslError("the serial number does not decode"));
  }
  OpenSslStringPtr serial_hex(reinterpret_cast<unsigned char*>(BN_bn2hex(serial.get())));
  if (serial_hex == nullptr) return absl::InternalError(OpenSslError("BN_bn2hex"));
  info.serial_hex = absl::AsciiStrToLower(reinterpret_cast<const char*>(serial_hex.get()));

  info.is_ca = (X509_get_extension_flags(cert.get()) & EXFLAG_CA) != 0;

  int critical = 0;
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, &critical, nullptr)));
  if (names == nullptr && critical != -1) {
    // -1 means there is no subjectAltName; anything else is a malformed or duplicated one.
    return absl::InvalidArgumentError(OpenSslError("the subjectAltName extension is malformed"));
  }
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    int type = 0;
    auto* value = static_cast<ASN1_STRING*>(
        GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names.get(), i), &type));
    if (type != GEN_DNS || value == nullptr) continue;
    info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                                static_cast<size_t>(ASN1_STRING_length(value)));
  }
  return info;
}

absl::Status VerifyIssuedBy(absl::string_view cert_pem, absl::string_view ca_pem, absl::Time now) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(X509Ptr cert, ParseCertPem(cert_pem, "certificate"));
  ASSIGN_OR_RETURN(X509Ptr ca, ParseCertPem(ca_pem, "CA certificate"));

  // The CA is the only trust anchor. It must be self-signed: without X509_V_FLAG_PARTIAL_CHAIN
  // a leaf passed as its own "CA" does not verify.
  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (store == nullptr || ctx == nullptr || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return absl::InternalError(OpenSslError("setting up certificate verification"));
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(now));

  int verified = X509_verify_cert(ctx.get());
  if (verified == 1) return absl::OkStatus();
  if (verified < 0) return absl::InternalError(OpenSslError("X509_verify_cert"));
  ERR_clear_error();  // The verification error below says all there is to say.

  int error = X509_STORE_CTX_get_error(ctx.get());
  // The chain is the certificate (depth 0) and the CA above it.
  bool about_ca = X509_STORE_CTX_get_error_depth(ctx.get()) > 0;
  X509* subject = about_ca ? ca.get() : cert.get();
  std::string which = absl::StrCat(about_ca ? "CA certificate CN=" : "certificate CN=",
                                   SubjectCnForMessage(subject));
  std::string at = absl::StrCat(" (checked at ", FormatUtc(now), ")");
  if (error == X509_V_ERR_CERT_HAS_EXPIRED) {
    absl::StatusOr<absl::Time> not_after = ToAbslTime(X509_get0_notAfter(subject), "notAfter");
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat(which, " expired at ", not_after.ok() ? FormatUtc(*not_after) : "<unreadable>",
                     at, about_ca ? "; rotate the fleet CA" : "; issue a new certificate"));
  }
  if (error == X509_V_ERR_CERT_NOT_YET_VALID) {
    absl::StatusOr<absl::Time> not_before = ToAbslTime(X509_get0_notBefore(subject), "notBefore");
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat(which, " is not yet valid: its validity starts at ",
                     not_before.ok() ? FormatUtc(*not_before) : "<unreadable>", at,
                     "; check that this machine's clock agrees with the issuer's"));
  }
  return absl::UnauthenticatedError(
      absl::StrCat("certificate CN=", SubjectCnForMessage(cert.get()), " was not issued by CA CN=",
                   SubjectCnForMessage(ca.get()), ": ", X509_verify_cert_error_string(error)));
}

absl::Status CheckKeyMatchesCertificate(absl::string_view key_pem, absl::string_view cert_pem) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(EvpPkeyPtr key, ParsePrivateKey(key_pem, "private key"));
  ASSIGN_OR_RETURN(X509Ptr cert, ParseCertPem(cert_pem, "certificate"));
  EVP_PKEY* public_key = X509_get0_pubkey(cert.get());
  if (public_key == nullptr) {
    return absl::InvalidArgumentError(OpenSslError("the certificate's public key does not decode"));
  }
  // 0: same type, different key; negative: different key types. Either way, no match.
  if (EVP_PKEY_eq(key.get(), public_key) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(
        "the private key (", DescribeKey(key.get()),
        ") does not match certificate CN=", SubjectCnForMessage(cert.get()), " (",
        DescribeKey(public_key), "); the key and certificate files come from different issuances"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CertificateFingerprint(absl::string_view cert_pem) {
  ERR_clear_error();
  ASSIGN_OR_RETURN(X509Ptr cert, ParseCertPem(cert_pem, "certificate"));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  // X509_digest hashes the DER encoding of the whole certificate.
  if (X509_digest(cert.get(), EVP_sha256(), digest, &size) != 1) {
    return absl::InternalError(OpenSslError("X509_digest"));
  }
  return absl::StrCat("sha256:",
                      HexEncode(absl::string_view(reinterpret_cast<const char*>(digest), size)));
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    DieOnCryptoFailure("EVP_Digest(SHA-256)");
  }
  return HexEncode(absl::string_view(reinterpret_cast<const char*>(digest), size));
}

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  // OpenSSL reads a null key as "no key given" rather than as the empty key, which is what an
  // empty string_view's data() may be; HMAC with an empty key is well defined, so pass a real
  // pointer.
  static constexpr unsigned char kNoBytes[1] = {0};
  const void* key_bytes = key.empty() ? kNoBytes : static_cast<const void*>(key.data());
  const unsigned char* data_bytes =
      data.empty() ? kNoBytes : reinterpret_cast<const unsigned char*>(data.data());
  if (key.size() > static_cast<size_t>(INT_MAX)) {
    // Keys longer than a block are hashed first (RFC 2104), so this is only a representational
    // limit of HMAC()'s int length.
    DieOnCryptoFailure("HMAC key longer than INT_MAX");
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()), data_bytes, data.size(), mac,
           &size) == nullptr) {
    DieOnCryptoFailure("HMAC(SHA-256)");
  }
  return std::string(reinterpret_cast<const char*>(mac), size);
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    // RAND_bytes takes an int length.
    int chunk = static_cast<int>(std::min<size_t>(n - done, INT_MAX));
    if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data() + done), chunk) != 1) {
      DieOnCryptoFailure("RAND_bytes");
    }
    done += static_cast<size_t>(chunk);
  }
  return out;
}

std::string HexEncode(absl::string_view raw) { return absl::BytesToHexString(raw); }

}  // namespace fleet::pki
