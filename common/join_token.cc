// Join tokens' text form.
#include "common/join_token.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fleet {
namespace {

bool IsHex(absl::string_view s, size_t length) {
  if (s.size() != length) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return false;
  }
  return true;
}

}  // namespace

std::string JoinToken::ToString() const {
  return absl::StrCat("fleet1.", id, ".", secret, ".", ca_sha256);
}

absl::StatusOr<JoinToken> ParseJoinToken(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(absl::StripAsciiWhitespace(text), '.');
  if (parts.size() != 4 || parts[0] != "fleet1") {
    return absl::InvalidArgumentError(
        "not a join token: expected fleet1.<id>.<secret>.<ca-sha256>, as printed by "
        "`fleet token create`");
  }
  if (!IsHex(parts[1], 16)) return absl::InvalidArgumentError("join token: malformed id part");
  if (!IsHex(parts[2], 32)) {
    return absl::InvalidArgumentError("join token: malformed secret part");
  }
  if (!IsHex(parts[3], 64)) {
    return absl::InvalidArgumentError("join token: malformed CA hash part");
  }
  return JoinToken{std::string(parts[1]), std::string(parts[2]), std::string(parts[3])};
}

}  // namespace fleet
