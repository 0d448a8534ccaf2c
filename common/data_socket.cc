// Data connections: tokens, timeouts, admission.
#include "common/data_socket.h"

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet {

absl::StatusOr<sockaddr_in> Ipv4Address(const std::string& ip, uint16_t port,
                                        absl::string_view what) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", ip,
        " is not an IPv4 address; data connections run between IPv4 fabric addresses"));
  }
  return addr;
}

bool SameToken(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::Status SetSocketTimeouts(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(timeout);
  RETURN_IF_ERRNO(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), "SO_SNDTIMEO");
  RETURN_IF_ERRNO(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), "SO_RCVTIMEO");
  return absl::OkStatus();
}

absl::StatusOr<DataListener> ListenForData(const std::string& bind_ip) {
  ASSIGN_OR_RETURN(sockaddr_in addr, Ipv4Address(bind_ip, 0, "fabric address"));
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot open a data port on ", bind_ip, ": ",
                                               std::strerror(errno),
                                               "; is it this node's fabric address?"));
  }
  RETURN_IF_ERRNO(::listen(fd.get(), 64), "listen");
  socklen_t len = sizeof addr;
  RETURN_IF_ERRNO(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
  return DataListener{.fd = std::move(fd), .port = ntohs(addr.sin_port)};
}

absl::StatusOr<UniqueFd> ConnectWithToken(const std::string& source_ip, const sockaddr_in& target,
                                          absl::string_view token, absl::Duration timeout) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket");
  RETURN_IF_ERROR(SetSocketTimeouts(fd.get(), timeout));
  if (!source_ip.empty()) {
    ASSIGN_OR_RETURN(sockaddr_in source, Ipv4Address(source_ip, 0, "source address"));
    RETURN_IF_ERRNO(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&source), sizeof source),
                    absl::StrCat("bind ", source_ip));
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0) {
    return absl::UnavailableError(absl::StrCat("connect to the receiver: ", std::strerror(errno),
                                               "; is a firewall closing the fabric address?"));
  }
  RETURN_IF_ERROR(SendAll(fd.get(), token.data(), token.size()));
  return fd;
}

absl::StatusOr<UniqueFd> AcceptWithToken(int listener, const std::string& peer_ip,
                                         absl::string_view token, absl::Duration timeout,
                                         int* rejected) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    pollfd p{listener, POLLIN, 0};
    int wait_ms =
        static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now())));
    if (::poll(&p, 1, std::min(wait_ms, 100)) <= 0) continue;
    sockaddr_in from{};
    socklen_t len = sizeof from;
    UniqueFd fd(::accept4(listener, reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC));
    if (!fd.valid()) {
      // The port was shut down to stop the wait.
      if (errno == EINVAL) return absl::CancelledError("the data port was closed");
      continue;
    }
    char ip[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    if (peer_ip != ip) {
      ++*rejected;
      continue;
    }
    // Only the planned peer's address gets here, so a short wait for its token is safe.
    RETURN_IF_ERROR(SetSocketTimeouts(fd.get(), absl::Seconds(5)));
    std::string got(token.size(), '\0');
    if (!RecvAll(fd.get(), got.data(), got.size()).ok() || !SameToken(got, token)) {
      ++*rejected;
      continue;
    }
    return fd;
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "no connection from ", peer_ip, " with the token in ", absl::FormatDuration(timeout)));
}

absl::Status SendAll(int fd, const char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::send(fd, data + done, size - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("the peer stopped taking data: ", n < 0 ? std::strerror(errno) : "closed"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

namespace {

absl::Status SendFileRangeBlocked(int fd, int file, uint64_t offset, size_t size) {
  off_t at = static_cast<off_t>(offset);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::sendfile(fd, file, &at, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      return absl::OutOfRangeError(
          absl::StrCat("the file ends at byte ", at, ", before byte ", offset + size));
    }
    if (n < 0 && errno == EIO) return ErrnoStatus("reading the file");
    if (n < 0) {
      return absl::UnavailableError(absl::StrCat(
          "the peer stopped taking data: ", errno == EAGAIN ? "timed out" : std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SendFileRange(int fd, int file, uint64_t offset, size_t size) {
  // sendfile has no MSG_NOSIGNAL: a closed peer raises SIGPIPE, which would end the process.
  // Blocked in this thread while it runs, the call fails with EPIPE instead, and a SIGPIPE left
  // pending is taken before the mask is restored.
  sigset_t pipe_signal;
  sigset_t old_mask;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &old_mask);
  absl::Status st = SendFileRangeBlocked(fd, file, offset, size);
  sigset_t pending;
  sigpending(&pending);
  if (sigismember(&pending, SIGPIPE) == 1) {
    const timespec none{};
    sigtimedwait(&pipe_signal, nullptr, &none);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return st;
}

absl::Status RecvAll(int fd, char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::recv(fd, data + done, size - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && done == 0) return absl::OutOfRangeError("the peer ended the stream");
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("the peer stopped sending mid-way: ",
                       n < 0 ? (errno == EAGAIN ? "timed out" : std::strerror(errno)) : "closed"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace fleet
