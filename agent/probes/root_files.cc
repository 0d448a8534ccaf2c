// Reading a node's files under a probe root.
#include "agent/probes/root_files.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace fleet::agent {

std::string Under(const std::string& root, absl::string_view path) {
  std::string base = root;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return absl::StrCat(base, path);
}

absl::StatusOr<std::string> ReadTrimmed(const std::string& path) {
  absl::StatusOr<std::string> s = ReadFileToString(path);
  if (!s.ok()) return s.status();
  return std::string(absl::StripAsciiWhitespace(*s));
}

}  // namespace fleet::agent
