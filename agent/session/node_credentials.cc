// The node's credentials on disk.
#include "agent/session/node_credentials.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/identity_names.h"
#include "common/pki.h"
#include "common/status_macros.h"

namespace fleet::agent {

NodeCredentialPaths CredentialPaths(const std::string& state_dir) {
  std::string dir = absl::StrCat(state_dir, "/pki");
  return {absl::StrCat(dir, "/ca.crt"), absl::StrCat(dir, "/node.key"),
          absl::StrCat(dir, "/node.crt")};
}

bool HaveCredentials(const std::string& state_dir) {
  NodeCredentialPaths p = CredentialPaths(state_dir);
  return ::access(p.ca.c_str(), R_OK) == 0 && ::access(p.key.c_str(), R_OK) == 0 &&
         ::access(p.cert.c_str(), R_OK) == 0;
}

absl::Status CheckCredentials(const std::string& state_dir, const std::string& node_id,
                              absl::Time now) {
  NodeCredentialPaths p = CredentialPaths(state_dir);
  ASSIGN_OR_RETURN(std::string ca, ReadFileToString(p.ca));
  ASSIGN_OR_RETURN(std::string key, ReadFileToString(p.key));
  ASSIGN_OR_RETURN(std::string cert, ReadFileToString(p.cert));
  auto broken = [&](absl::string_view why) {
    return absl::FailedPreconditionError(
        absl::StrCat("this node's credential in ", state_dir, "/pki is unusable: ", why,
                     "; delete ", state_dir, "/pki and start the agent with a new join token"));
  };
  if (absl::Status st = pki::CheckKeyMatchesCertificate(key, cert); !st.ok()) {
    return broken(st.message());
  }
  if (absl::Status st = pki::VerifyIssuedBy(cert, ca, now); !st.ok()) return broken(st.message());
  ASSIGN_OR_RETURN(pki::CertInfo info, pki::ParseCertificate(cert));
  if (info.common_name != NodeCommonName(node_id)) {
    return broken(absl::StrCat("it names ", info.common_name, ", but this node is ", node_id));
  }
  return absl::OkStatus();
}

absl::Status InstallCredentials(const std::string& state_dir, const std::string& ca_pem,
                                const std::string& key_pem, const std::string& cert_pem) {
  ASSIGN_OR_RETURN(pki::CertInfo info, pki::ParseCertificate(cert_pem));
  std::string version = absl::StrCat("pki-", info.serial_hex.substr(0, 16));
  std::string dir = absl::StrCat(state_dir, "/", version);
  RETURN_IF_ERROR(MakeDirectories(dir, 0700));
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/ca.crt"), ca_pem, 0644));
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/node.key"), key_pem, 0600));
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/node.crt"), cert_pem, 0644));
  // rename(2) of a new symlink over the old one swaps the directory atomically.
  std::string link = absl::StrCat(state_dir, "/pki");
  std::string tmp = absl::StrCat(link, ".tmp");
  ::unlink(tmp.c_str());
  if (::symlink(version.c_str(), tmp.c_str()) != 0)
    return ErrnoStatus(absl::StrCat("symlink ", tmp));
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("rename ", tmp, " to ", link));
  }
  // Older versions are no longer referenced.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(state_dir, ec)) {
    std::string name = entry.path().filename();
    if (name.rfind("pki-", 0) == 0 && name != version) std::filesystem::remove_all(entry, ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> RenewalTime(const std::string& state_dir) {
  ASSIGN_OR_RETURN(std::string cert, ReadFileToString(CredentialPaths(state_dir).cert));
  ASSIGN_OR_RETURN(pki::CertInfo info, pki::ParseCertificate(cert));
  // notBefore is backdated for clock skew; the lifetime that matters starts at issue.
  absl::Time issued = std::min(info.not_before + pki::kClockSkewAllowance, info.not_after);
  return issued + (info.not_after - issued) * 2 / 3;
}

}  // namespace fleet::agent
