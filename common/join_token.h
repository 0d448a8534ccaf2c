// Join tokens in the kubeadm/k3s style. A token names the cluster CA by its SHA-256, so an
// agent can check it talks to the right controller before it sends anything, and carries a
// secret, so the controller can check the agent may join:
//
//   fleet1.<id: 16 hex>.<secret: 32 hex>.<sha256 of the CA certificate's DER: 64 hex>
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

struct JoinToken {
  std::string id;
  std::string secret;
  std::string ca_sha256;  // 64 lower-case hex digits
  std::string ToString() const;
};

// Parses the text of a token (surrounding white space ignored). Errors say which part is
// malformed without echoing the secret.
absl::StatusOr<JoinToken> ParseJoinToken(absl::string_view text);

}  // namespace fleet
