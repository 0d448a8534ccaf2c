// pidfds: a file descriptor that names one process for good (Linux 5.3+), readable once it ends.
#pragma once

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace fleet {

// pidfd_open(2). NotFound when `pid` no longer exists; another error (naming the kernel it
// needs) when the call itself is missing or refused.
absl::StatusOr<UniqueFd> PidfdOpen(pid_t pid);

// True once `fd` (a pidfd, or any descriptor) is readable within `timeout`: for a pidfd, the
// process has ended. Retries poll() interrupted by a signal.
bool WaitReadable(int fd, absl::Duration timeout);

}  // namespace fleet
