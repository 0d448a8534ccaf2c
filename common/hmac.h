// HMAC-SHA256 and random bytes from OpenSSL's libcrypto, for the signed UDP datagrams
// (discovery_wire.h, heartbeat_wire.h).
//
// Example:
//   ASSIGN_OR_RETURN(std::string key, RandomBytes(32));
//   Mac mac = HmacSha256(key, datagram);
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

inline constexpr size_t kMacSize = 32;
using Mac = std::array<uint8_t, kMacSize>;

// HMAC-SHA256 of `data` under `key` (any length, empty included).
Mac HmacSha256(absl::string_view key, absl::string_view data);

// Whether `mac` (any length) equals `expected`, in time that does not depend on where they
// differ.
bool MacEquals(const Mac& expected, absl::string_view mac);

// `size` bytes from OpenSSL's CSPRNG; Unavailable when it fails.
absl::StatusOr<std::string> RandomBytes(size_t size);

}  // namespace fleet
