// TCP plumbing of the echo engine's rank rendezvous (test code; the engines' HTTP serving is
// common/http/server.h): an owned file descriptor, listening and connecting with a deadline (host
// names resolved, IPv4 or IPv6), and whole writes and line reads on sockets.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace fleet::echo {

// A listening TCP socket on `host` ("0.0.0.0", "::", an address or a name) and `port`, with
// SO_REUSEADDR so a restarted rank can listen again while old connections linger in TIME_WAIT.
absl::StatusOr<UniqueFd> ListenTcp(const std::string& host, int port, int backlog);

// Connects to `host`:`port`, giving up at `deadline` (a peer that drops SYNs would otherwise
// hold a blocking connect for minutes). Unavailable when no address answered.
absl::StatusOr<UniqueFd> ConnectTcp(const std::string& host, int port, absl::Time deadline);

// Writes all of `data`; a closed peer is an error, never SIGPIPE.
absl::Status SendAll(int fd, absl::string_view data);

// Reads one '\n'-terminated line (returned without the '\n') by `deadline`. OutOfRange when the
// peer closed first, DeadlineExceeded when the deadline passed, InvalidArgument past
// `max_bytes`. Reads byte by byte so nothing after the line is consumed.
absl::StatusOr<std::string> ReadLine(int fd, absl::Time deadline, size_t max_bytes);

// Milliseconds until `deadline` for poll(), at least 0.
int PollTimeoutMs(absl::Time deadline);

}  // namespace fleet::echo
