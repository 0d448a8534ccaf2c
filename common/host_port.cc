// HOST:PORT splitting and joining (host_port.h).
#include "common/host_port.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fleet {
namespace {

absl::Status Invalid(absl::string_view text, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not HOST:PORT (", problem,
                   "); write it as 10.0.0.2:7100, spark-1:7100 or [fe80::1]:7100"));
}

absl::StatusOr<uint16_t> ParsePort(absl::string_view text, absl::string_view port,
                                   bool allow_zero) {
  uint32_t number = 0;
  if (!absl::SimpleAtoi(port, &number) || (number == 0 && !allow_zero) || number > 65535 ||
      !absl::ascii_isdigit(static_cast<unsigned char>(port.front()))) {
    return Invalid(text, absl::StrCat("port '", port, "' is not a number from ", allow_zero ? 0 : 1,
                                      " to 65535"));
  }
  return static_cast<uint16_t>(number);
}

absl::StatusOr<HostPort> Parse(absl::string_view text, bool port_required) {
  HostPort result;
  absl::string_view rest;
  if (absl::StartsWith(text, "[")) {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) return Invalid(text, "'[' without ']'");
    result.host = std::string(text.substr(1, close - 1));
    rest = text.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') {
      return Invalid(text, absl::StrCat("'", rest, "' after ']'"));
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon != absl::string_view::npos && text.find(':') != colon) {
      if (port_required) return Invalid(text, "an IPv6 address needs brackets");
      result.host = std::string(text);
      return result;
    }
    result.host = std::string(text.substr(0, colon));
    if (colon != absl::string_view::npos) rest = text.substr(colon);
  }
  if (rest.empty()) {
    if (port_required) return Invalid(text, "no port");
    return result;
  }
  absl::string_view port = rest.substr(1);
  if (port.empty()) return Invalid(text, "no port after ':'");
  absl::StatusOr<uint16_t> number = ParsePort(text, port, /*allow_zero=*/!port_required);
  if (!number.ok()) return number.status();
  result.port = *number;
  return result;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  return Parse(text, /*port_required=*/true);
}

absl::StatusOr<HostPort> ParseHostOptionalPort(absl::string_view text) {
  return Parse(text, /*port_required=*/false);
}

std::string JoinHostPort(absl::string_view host, uint16_t port) {
  if (absl::StrContains(host, ':')) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

std::string HostOf(absl::string_view address) {
  absl::StatusOr<HostPort> parsed = ParseHostOptionalPort(address);
  return parsed.ok() ? parsed->host : std::string(address);
}

}  // namespace fleet
