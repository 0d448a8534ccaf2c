// Join tokens.
#include "controller/trust/tokens.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/pki.h"
#include "common/proto_time.h"
#include "common/wire/discovery_wire.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::controller {
namespace {

using google::protobuf::util::TimeUtil;

}  // namespace

absl::Status TokenManager::Load() {
  absl::StatusOr<std::vector<v1::StoredToken>> stored = store_->LoadTokens();
  if (!stored.ok()) return stored.status();
  absl::MutexLock lock(&mu_);
  tokens_ = *std::move(stored);
  return absl::OkStatus();
}

absl::StatusOr<JoinToken> TokenManager::Create(absl::Duration ttl, int64_t uses,
                                               std::string description) {
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("token ttl must be positive (or unlimited)");
  }
  if (uses < 0) return absl::InvalidArgumentError("token uses must be 0 (unlimited) or more");
  JoinToken token{pki::HexEncode(pki::RandomBytes(8)), pki::HexEncode(pki::RandomBytes(16)),
                  ca_sha256_};
  v1::StoredToken record;
  record.set_id(token.id);
  record.set_secret_sha256(pki::Sha256Hex(token.secret));
  record.set_discovery_key(discovery::DeriveKey(token.secret));
  absl::Time now = clock_->Now();
  *record.mutable_created_at() = ToProtoTime(now);
  if (ttl != absl::InfiniteDuration()) *record.mutable_expires_at() = ToProtoTime(now + ttl);
  record.set_uses_allowed(uses);
  record.set_description(std::move(description));
  absl::MutexLock lock(&mu_);
  if (absl::Status st = store_->PutToken(record); !st.ok()) return st;
  tokens_.push_back(std::move(record));
  return token;
}

std::vector<v1::StoredToken> TokenManager::List() const {
  absl::MutexLock lock(&mu_);
  return tokens_;
}

absl::Status TokenManager::Revoke(absl::string_view id) {
  absl::MutexLock lock(&mu_);
  for (v1::StoredToken& t : tokens_) {
    if (t.id() != id) continue;
    v1::StoredToken updated = t;
    updated.set_revoked(true);
    if (absl::Status st = store_->PutToken(updated); !st.ok()) return st;
    t = std::move(updated);
    return absl::OkStatus();
  }
  return absl::NotFoundError(
      absl::StrCat("no join token with id ", id, "; see `fleet token list`"));
}

absl::Status TokenManager::Usable(const v1::StoredToken& t) const {
  if (t.revoked()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "join token ", t.id(), " was revoked; create a new one with `fleet token create`"));
  }
  if (t.has_expires_at() && clock_->Now() >= FromProtoTime(t.expires_at())) {
    return absl::FailedPreconditionError(
        absl::StrCat("join token ", t.id(), " expired at ", TimeUtil::ToString(t.expires_at()),
                     "; create a new one with `fleet token create`"));
  }
  if (t.uses_allowed() > 0 && t.uses() >= t.uses_allowed()) {
    return absl::FailedPreconditionError(
        absl::StrCat("join token ", t.id(), " is used up (", t.uses(), " of ", t.uses_allowed(),
                     " joins); create a new one with `fleet token create --uses N`"));
  }
  return absl::OkStatus();
}

absl::Status TokenManager::Admit(absl::string_view id, absl::string_view secret) {
  const absl::Status denied = absl::PermissionDeniedError(
      "the join token was not accepted by this controller; check that it was made by "
      "`fleet token create` on this cluster");
  absl::MutexLock lock(&mu_);
  for (v1::StoredToken& t : tokens_) {
    if (t.id() != id) continue;
    if (!pki::ConstantTimeEquals(pki::Sha256Hex(secret), t.secret_sha256())) return denied;
    if (absl::Status st = Usable(t); !st.ok()) return st;
    v1::StoredToken updated = t;
    updated.set_uses(t.uses() + 1);
    if (absl::Status st = store_->PutToken(updated); !st.ok()) return st;
    t = std::move(updated);
    return absl::OkStatus();
  }
  return denied;
}

std::vector<std::string> TokenManager::DiscoveryKeys() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const v1::StoredToken& t : tokens_) {
    if (Usable(t).ok()) keys.push_back(t.discovery_key());
  }
  return keys;
}

}  // namespace fleet::controller
