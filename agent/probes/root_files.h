// Reading a node's files under a probe root: "/" on a node, a recorded tree in tests.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet::agent {

// `path` (absolute, e.g. "/sys/class/net") under `root`: Under("/tmp/tree/", "/proc") is
// "/tmp/tree/proc"; Under("/", "/proc") is "/proc".
std::string Under(const std::string& root, absl::string_view path);

// A file's contents without leading and trailing whitespace (sysfs values end in "\n").
absl::StatusOr<std::string> ReadTrimmed(const std::string& path);

}  // namespace fleet::agent
