// pidfd_open and waiting on it (pidfd.h).
#include "common/process/pidfd.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace fleet {

absl::StatusOr<UniqueFd> PidfdOpen(pid_t pid) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (fd.valid()) return fd;
  if (errno == ESRCH) return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone"));
  return ErrnoStatus(absl::StrCat("pidfd_open ", pid, " (needs Linux 5.3 or later)"));
}

bool WaitReadable(int fd, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    int ms = static_cast<int>(
        absl::ToInt64Milliseconds(std::max(absl::ZeroDuration(), deadline - absl::Now())));
    int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r == 0 || errno != EINTR) return false;
  }
}

}  // namespace fleet
