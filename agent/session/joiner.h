// Joining a cluster with a join token, the kubeadm way: fetch the cluster CA over TLS that
// verifies nothing yet, check the CA's SHA-256 against the token's pin before sending anything,
// then, over TLS verified against that CA, prove the token and send a certificate request.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/join_token.h"
#include "fleet/v1/types.pb.h"

namespace fleet::agent {

// On success the node's credential is installed in STATE_DIR/pki. Unavailable when the
// controller does not answer (retry later); PermissionDenied when the CA does not match the
// token's pin or the controller refuses the token; FailedPrecondition for an expired or
// used-up token (the message says which and what to do).
absl::Status JoinCluster(const std::string& controller, const JoinToken& token,
                         const v1::NodeIdentity& identity, const std::string& state_dir,
                         absl::Duration deadline);

}  // namespace fleet::agent
