// UTF-8 checks for text that crosses into protobuf strings, JSON and YAML, which must be UTF-8:
// recipes, log lines and whatever an engine prints.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace fleet {

// The offset of the first byte that does not start a valid UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing past U+10FFFF), or absl::string_view::npos when
// `text` is valid UTF-8.
size_t FirstInvalidUtf8(absl::string_view text);

// `text` with every invalid sequence replaced by U+FFFD, for printing bytes as text.
std::string SanitizeUtf8(absl::string_view text);

}  // namespace fleet
