// ClusterCa: the cluster's certificate authority, made on the controller's first start and
// kept in STATE_DIR/pki (private keys 0600). It issues the controller's own certificate, the
// admin credential of the CLI, and a certificate to every node that joins.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/pki.h"

namespace fleet::controller {

// Example:
//   ASSIGN_OR_RETURN(auto ca, ClusterCa::LoadOrCreate(state_dir + "/pki", absl::Hours(24 * 30)));
//   ASSIGN_OR_RETURN(std::string cert, ca->IssueNodeCertificate(csr_pem, node_id));
class ClusterCa {
 public:
  // Loads ca.crt/ca.key, controller.crt/.key and admin.crt/.key from `dir`, creating what is
  // missing. A file that exists but does not parse, or a key that does not match its
  // certificate, is FailedPrecondition naming the file: the CA is never silently replaced,
  // since every node's certificate hangs on it.
  static absl::StatusOr<std::unique_ptr<ClusterCa>> LoadOrCreate(const std::string& dir,
                                                                 absl::Duration node_validity);

  const std::string& ca_pem() const { return ca_.cert_pem; }
  // 64 hex digits: SHA-256 of the CA certificate's DER, the pin in join tokens.
  const std::string& ca_sha256() const { return ca_sha256_; }
  const pki::KeyAndCert& controller_credential() const { return controller_; }
  const pki::KeyAndCert& admin_credential() const { return admin_; }
  absl::Duration node_validity() const { return node_validity_; }

  // A node certificate (client and server use) for the key in `csr_pem`, naming `node_id`.
  absl::StatusOr<std::string> IssueNodeCertificate(absl::string_view csr_pem,
                                                   absl::string_view node_id) const;

 private:
  ClusterCa() = default;

  pki::KeyAndCert ca_;
  pki::KeyAndCert controller_;
  pki::KeyAndCert admin_;
  std::string ca_sha256_;
  absl::Duration node_validity_;
};

}  // namespace fleet::controller
