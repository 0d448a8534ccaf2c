// Raw TCP data connections between agents on their fabric addresses, shared by fabric tests and
// staging: a data port admits only the planned peer's address, and a connection counts only
// after it sent the one-time token (which travelled to both ends over mutual TLS). Every wait is
// bounded by a socket timeout.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace fleet {

inline constexpr size_t kDataTokenBytes = 32;

// `ip`:`port` as a socket address. InvalidArgument naming `what` when `ip` is not IPv4.
absl::StatusOr<sockaddr_in> Ipv4Address(const std::string& ip, uint16_t port,
                                        absl::string_view what);

// Compared in constant time: a peer learns nothing from how fast it is refused.
bool SameToken(absl::string_view a, absl::string_view b);

// SO_SNDTIMEO and SO_RCVTIMEO, so no blocking send or recv waits longer than `timeout`.
absl::Status SetSocketTimeouts(int fd, absl::Duration timeout);

// A listening socket on `bind_ip`:0 (non-blocking, for poll) and the port it got. Unavailable,
// naming the address, when it cannot be bound.
struct DataListener {
  UniqueFd fd;
  uint16_t port = 0;
};
absl::StatusOr<DataListener> ListenForData(const std::string& bind_ip);

// A blocking connection from `source_ip` (empty: any) to `target` that has sent `token`, with
// `timeout` on every later send and recv. Unavailable when the peer cannot be reached.
absl::StatusOr<UniqueFd> ConnectWithToken(const std::string& source_ip, const sockaddr_in& target,
                                          absl::string_view token, absl::Duration timeout);

// Accepts one connection on `listener` within `timeout` that comes from `peer_ip` and sends
// `token` first; refuses (closes) others and counts them in `*rejected`. The connection is
// blocking. DeadlineExceeded when none came in time.
absl::StatusOr<UniqueFd> AcceptWithToken(int listener, const std::string& peer_ip,
                                         absl::string_view token, absl::Duration timeout,
                                         int* rejected);

// send()/recv() of exactly `size` bytes. RecvAll: OutOfRange when the peer closed before the
// first byte (a clean end), Unavailable for a close or error mid-way.
absl::Status SendAll(int fd, const char* data, size_t size);
absl::Status RecvAll(int fd, char* data, size_t size);

// sendfile() of `size` bytes of `file` from `offset` to socket `fd`: the kernel moves them from
// the page cache, with no copy through this process. OutOfRange when the file ends first,
// Unavailable when the peer stops taking data.
absl::Status SendFileRange(int fd, int file, uint64_t offset, size_t size);

}  // namespace fleet
