// TCP plumbing of the echo engine's rank rendezvous (see net.h).
#include "tests/support/echo_engine/net.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet::echo {
namespace {

struct AddrinfoDeleter {
  void operator()(addrinfo* info) const { freeaddrinfo(info); }
};
using Addrinfo = std::unique_ptr<addrinfo, AddrinfoDeleter>;

absl::StatusOr<Addrinfo> Resolve(const std::string& host, int port, bool passive) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* result = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resolve ", host, ":", port, ": ", gai_strerror(rc)));
  }
  return Addrinfo(result);
}

}  // namespace

int PollTimeoutMs(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  // Rounded up so a poll never wakes just before the deadline and spins.
  return static_cast<int>(absl::ToInt64Milliseconds(left + absl::Milliseconds(1)));
}

absl::StatusOr<UniqueFd> ListenTcp(const std::string& host, int port, int backlog) {
  ASSIGN_OR_RETURN(Addrinfo addresses, Resolve(host, port, /*passive=*/true));
  std::string what = absl::StrCat("listen on ", host, ":", port);
  const addrinfo* ai = addresses.get();
  UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
  RETURN_IF_ERRNO(fd.get(), absl::StrCat("socket for ", what));
  int one = 1;
  RETURN_IF_ERRNO(::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one),
                  absl::StrCat("SO_REUSEADDR for ", what));
  RETURN_IF_ERRNO(::bind(fd.get(), ai->ai_addr, ai->ai_addrlen), what);
  RETURN_IF_ERRNO(::listen(fd.get(), backlog), what);
  return fd;
}

absl::StatusOr<UniqueFd> ConnectTcp(const std::string& host, int port, absl::Time deadline) {
  ASSIGN_OR_RETURN(Addrinfo addresses, Resolve(host, port, /*passive=*/false));
  std::string last_error = "no address";
  for (const addrinfo* ai = addresses.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    RETURN_IF_ERRNO(fd.get(), "socket");
    int err = 0;
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p = {.fd = fd.get(), .events = POLLOUT};
        int ready = ::poll(&p, 1, PollTimeoutMs(deadline));
        socklen_t len = sizeof err;
        if (ready == 1) {
          ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        } else {
          err = ready == 0 ? ETIMEDOUT : errno;
        }
      }
    }
    if (err == 0) {
      // Back to blocking: callers bound their reads with poll().
      int flags = ::fcntl(fd.get(), F_GETFL);
      RETURN_IF_ERRNO(::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK), "fcntl");
      return fd;
    }
    last_error = std::strerror(err);
  }
  return absl::UnavailableError(absl::StrCat("connect to ", host, ":", port, ": ", last_error));
}

absl::Status SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    RETURN_IF_ERRNO(n, "send");
    data.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadLine(int fd, absl::Time deadline, size_t max_bytes) {
  std::string line;
  for (;;) {
    pollfd p = {.fd = fd, .events = POLLIN};
    int ready = ::poll(&p, 1, PollTimeoutMs(deadline));
    if (ready < 0 && errno == EINTR) continue;
    RETURN_IF_ERRNO(ready, "poll");
    if (ready == 0) return absl::DeadlineExceededError("no complete line before the deadline");
    char c;
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    RETURN_IF_ERRNO(n, "recv");
    if (n == 0) return absl::OutOfRangeError("connection closed");
    if (c == '\n') return line;
    if (line.size() == max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("line longer than ", max_bytes, " bytes"));
    }
    line.push_back(c);
  }
}

}  // namespace fleet::echo
