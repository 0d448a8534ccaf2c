// Small file helpers that report failures as absl::Status naming the path.
#pragma once

#include <sys/types.h>

#include <cstdint>
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

// pread() of up to `size` bytes of `fd` from `offset` into `data`, retried until that many came
// or the file ended: the count read (fewer than `size` only at the end of the file). The errno
// status (naming `what`) on a read error.
absl::StatusOr<size_t> ReadAt(int fd, char* data, size_t size, uint64_t offset,
                              const std::string& what);

// mkdir -p with `mode` for the directories it creates.
absl::Status MakeDirectories(const std::string& path, mode_t mode = 0755);

// This process's home directory: $HOME, else the password database's entry for its user; ""
// when neither names one.
std::string HomeDirectory();

}  // namespace fleet
