// ClusterCa: the cluster's certificate authority on disk.
#include "controller/trust/cluster_ca.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/identity_names.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::controller {
namespace {

// The CA and the controller's certificate outlive any node certificate by far; nodes renew
// theirs, the CA is replaced only by re-creating the cluster.
constexpr absl::Duration kCaValidity = absl::Hours(24 * 365 * 10);
// Issued credentials end a day before the CA, so none outlives its issuer.
constexpr absl::Duration kCredentialValidity = absl::Hours(24 * (365 * 10 - 1));

// Loads NAME.key and NAME.crt from `dir`; NotFound when neither exists, so the caller makes
// them; any other inconsistency is FailedPrecondition.
absl::StatusOr<pki::KeyAndCert> LoadPair(const std::string& dir, absl::string_view name) {
  std::string key_path = absl::StrCat(dir, "/", name, ".key");
  std::string cert_path = absl::StrCat(dir, "/", name, ".crt");
  absl::StatusOr<std::string> key = ReadFileToString(key_path);
  absl::StatusOr<std::string> cert = ReadFileToString(cert_path);
  if (absl::IsNotFound(key.status()) && absl::IsNotFound(cert.status())) {
    return absl::NotFoundError(absl::StrCat(name, " credential not made yet"));
  }
  auto broken = [&](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cluster credential ", cert_path, " / ", key_path, " is unusable: ", why,
        "; restore both files from a backup (a new CA would orphan every node's certificate)"));
  };
  if (!key.ok()) return broken(key.status().message());
  if (!cert.ok()) return broken(cert.status().message());
  if (absl::Status st = pki::CheckKeyMatchesCertificate(*key, *cert); !st.ok()) {
    return broken(st.message());
  }
  return pki::KeyAndCert{*std::move(key), *std::move(cert)};
}

absl::Status SavePair(const std::string& dir, absl::string_view name, const pki::KeyAndCert& pair) {
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/", name, ".key"), pair.key_pem, 0600));
  return WriteFileAtomically(absl::StrCat(dir, "/", name, ".crt"), pair.cert_pem, 0644);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClusterCa>> ClusterCa::LoadOrCreate(const std::string& dir,
                                                                   absl::Duration node_validity) {
  RETURN_IF_ERROR(MakeDirectories(dir, 0700));
  std::unique_ptr<ClusterCa> ca(new ClusterCa());
  ca->node_validity_ = node_validity;
  absl::StatusOr<pki::KeyAndCert> loaded = LoadPair(dir, "ca");
  if (loaded.ok()) {
    ca->ca_ = *std::move(loaded);
  } else if (absl::IsNotFound(loaded.status())) {
    ASSIGN_OR_RETURN(ca->ca_,
                     pki::CreateCertificateAuthority("SparkFleet cluster CA", kCaValidity));
    RETURN_IF_ERROR(SavePair(dir, "ca", ca->ca_));
    Log(LogLevel::kInfo, "pki", "created cluster CA", {{"dir", dir}});
  } else {
    return loaded.status();
  }
  ASSIGN_OR_RETURN(std::string fingerprint, pki::CertificateFingerprint(ca->ca_.cert_pem));
  ca->ca_sha256_ = absl::StartsWith(fingerprint, "sha256:") ? fingerprint.substr(7) : fingerprint;

  struct Issued {
    absl::string_view name;
    pki::KeyAndCert* into;
    pki::CertSpec spec;
  };
  Issued issued[] = {
      {"controller",
       &ca->controller_,
       {.common_name = kControllerCommonName,
        .dns_names = {kControllerServerName},
        .validity = kCredentialValidity,
        .server_auth = true,
        .client_auth = true}},
      {"admin",
       &ca->admin_,
       {.common_name = AdminCommonName("admin"),
        .dns_names = {},
        .validity = kCredentialValidity,
        .server_auth = false,
        .client_auth = true}},
  };
  for (Issued& i : issued) {
    absl::StatusOr<pki::KeyAndCert> pair = LoadPair(dir, i.name);
    if (pair.ok()) {
      // A credential from another CA (a restored ca.* without its siblings) is unusable.
      if (absl::Status st = pki::VerifyIssuedBy(pair->cert_pem, ca->ca_.cert_pem, absl::Now());
          !st.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            dir, "/", i.name, ".crt was not issued by ", dir, "/ca.crt (", st.message(),
            "); delete ", i.name, ".crt and ", i.name, ".key to have them made again"));
      }
      *i.into = *std::move(pair);
      continue;
    }
    if (!absl::IsNotFound(pair.status())) return pair.status();
    ASSIGN_OR_RETURN(*i.into, pki::IssueKeyAndCertificate(ca->ca_, i.spec));
    RETURN_IF_ERROR(SavePair(dir, i.name, *i.into));
  }
  return ca;
}

absl::StatusOr<std::string> ClusterCa::IssueNodeCertificate(absl::string_view csr_pem,
                                                            absl::string_view node_id) const {
  return pki::IssueCertificate(ca_, csr_pem,
                               {.common_name = NodeCommonName(node_id),
                                .dns_names = {NodeServerName(node_id)},
                                .validity = node_validity_,
                                .server_auth = true,
                                .client_auth = true});
}

}  // namespace fleet::controller
