// "HOST:PORT" text as operators type it ("10.0.0.2:7100", "[fe80::1]:7100", "spark-1:7100",
// ":7100"), split and joined in one place so every flag and address agrees about IPv6 brackets.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

struct HostPort {
  std::string host;   // without brackets; empty for ":PORT" (every interface)
  uint16_t port = 0;  // 0 only from ParseHostOptionalPort: none given, or 0 (the kernel picks)
};

// Splits "HOST:PORT" or "[V6]:PORT"; the port must be 1 to 65535. InvalidArgument naming the text,
// what was expected and the fix (an IPv6 address without brackets, a missing or bad port).
//
// Example:
//   ASSIGN_OR_RETURN(HostPort hp, ParseHostPort("[fe80::1]:7100"));  // {"fe80::1", 7100}
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);

// As ParseHostPort for an address to listen on: the port may be left out ("HOST", "[V6]", a bare
// IPv6 address "::1" and "" are hosts with port 0) or be 0, which lets the kernel pick one.
absl::StatusOr<HostPort> ParseHostOptionalPort(absl::string_view text);

// "10.0.0.2:7100"; "[fe80::1]:7100" for a host that holds ':' (IPv6).
std::string JoinHostPort(absl::string_view host, uint16_t port);

// The host of "HOST:PORT" without brackets ("[fe80::1]:7100" → "fe80::1"); `address` itself
// when it has no port.
std::string HostOf(absl::string_view address);

}  // namespace fleet
