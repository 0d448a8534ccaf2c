// The node's certificate, key and the cluster CA on disk, under STATE_DIR/pki, which is a
// symlink to a versioned directory so a renewal swaps all three files at once (gRPC's file
// watcher re-reads them and must never see a key without its certificate).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fleet::agent {

struct NodeCredentialPaths {
  std::string ca, key, cert;
};

NodeCredentialPaths CredentialPaths(const std::string& state_dir);

// True when all three files are present.
bool HaveCredentials(const std::string& state_dir);

// Checks that the stored certificate is for `node_id`, matches its key, was issued by the stored
// CA and has not expired. FailedPrecondition naming the file and the fix otherwise.
absl::Status CheckCredentials(const std::string& state_dir, const std::string& node_id,
                              absl::Time now);

// Writes a new version directory and points STATE_DIR/pki at it (key 0600).
absl::Status InstallCredentials(const std::string& state_dir, const std::string& ca_pem,
                                const std::string& key_pem, const std::string& cert_pem);

// When the stored certificate should be renewed: two thirds into its lifetime, counted from
// when it was issued (not from its backdated notBefore).
absl::StatusOr<absl::Time> RenewalTime(const std::string& state_dir);

}  // namespace fleet::agent
