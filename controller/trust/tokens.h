// TokenManager: the controller's join tokens (common/join_token.h has their text form). The
// controller keeps only hashes of each secret.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/join_token.h"
#include "controller/store/store.h"

namespace fleet::controller {

// Example:
//   TokenManager tokens(&clock, &store, ca_sha256);
//   RETURN_IF_ERROR(tokens.Load());
//   ASSIGN_OR_RETURN(JoinToken t, tokens.Create(absl::Hours(24), /*uses=*/4, "rack 2"));
//   RETURN_IF_ERROR(tokens.Admit(presented_id, presented_secret));   // at Join
class TokenManager {
 public:
  TokenManager(const Clock* clock, Store* store, std::string ca_sha256)
      : clock_(clock), store_(store), ca_sha256_(std::move(ca_sha256)) {}

  absl::Status Load();

  // `ttl` of InfiniteDuration never expires; `uses` 0 is unlimited.
  absl::StatusOr<JoinToken> Create(absl::Duration ttl, int64_t uses, std::string description);
  std::vector<v1::StoredToken> List() const;
  // NotFound for an unknown id.
  absl::Status Revoke(absl::string_view id);

  // Checks a presented token and counts one use. PermissionDenied for an unknown id or wrong
  // secret (the same message for both, so ids cannot be probed); FailedPrecondition, saying
  // which and what to do, for an expired, used-up or revoked token.
  absl::Status Admit(absl::string_view id, absl::string_view secret);

  // Discovery keys of the tokens that could still admit a node.
  std::vector<std::string> DiscoveryKeys() const;

 private:
  absl::Status Usable(const v1::StoredToken& token) const;

  const Clock* const clock_;
  Store* const store_;
  const std::string ca_sha256_;
  mutable absl::Mutex mu_;
  std::vector<v1::StoredToken> tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller
