// Small file helpers that report failures as absl::Status naming the path.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `content` to a temporary file beside `path`, fsyncs it and renames it over `path`,
// so readers see the old file or the new one, never half of one.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view content,
                                 mode_t mode = 0644);

// mkdir -p with `mode` for the directories it creates.
absl::Status MakeDirectories(const std::string& path, mode_t mode = 0755);

// This process's home directory: $HOME, else the password database's entry for its user; ""
// when neither names one.
std::string HomeDirectory();

}  // namespace fleet
