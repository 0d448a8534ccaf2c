// The RouterCommand RPC's work on the agent (router_admin.h).
#include "agent/router/router_admin.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"
#include "launch/router/router.h"

namespace fleet::agent {
namespace {

// The admin socket is local and HAProxy answers from memory; a line that takes longer is a
// wedged router.
constexpr int kLineTimeoutMs = 2000;
constexpr size_t kMaxReply = 1 << 20;

}  // namespace

absl::StatusOr<std::string> SendRouterLine(const std::string& path, const std::string& line) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("router socket path ", path, " is longer than ", sizeof(addr.sun_path) - 1,
                     " bytes (a Unix socket's limit); give the agent a shorter --state-dir"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket(AF_UNIX)");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == -1) {
    return absl::UnavailableError(
        absl::StrCat("router socket ", path, " does not answer: ", std::strerror(errno)));
  }
  const std::string out = absl::StrCat(line, "\n");
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t n = ::send(fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n == -1 && errno == EINTR) continue;
    if (n == -1)
      return absl::UnavailableError(absl::StrCat("send to ", path, ": ", std::strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[16384];
  while (reply.size() < kMaxReply) {
    pollfd p = {.fd = fd.get(), .events = POLLIN, .revents = 0};
    int ready = ::poll(&p, 1, kLineTimeoutMs);
    if (ready == -1 && errno == EINTR) continue;
    if (ready == 0) {
      return absl::UnavailableError(
          absl::StrCat("router socket ", path, " did not answer \"", line, "\" within 2 s"));
    }
    ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n == -1 && errno == EINTR) continue;
    if (n == -1)
      return absl::UnavailableError(absl::StrCat("recv from ", path, ": ", std::strerror(errno)));
    if (n == 0) break;
    reply.append(buffer, static_cast<size_t>(n));
  }
  return reply;
}

absl::StatusOr<v1::RouterCommandResponse> RouterAdmin::Run(
    const v1::RouterCommandRequest& request) {
  if (!absl::EndsWith(request.group(), ".router") || absl::StrContains(request.group(), "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("router group must be APPLICATION.router, found \"", request.group(), "\""));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> lines, engine::RouterCommandLines(request));
  bool runs = false;
  for (const v1::ShardStatus& shard : supervisor_->List()) {
    if (shard.group() == request.group() && shard.state() != v1::SHARD_STATE_EXITED &&
        shard.state() != v1::SHARD_STATE_FAILED && shard.state() != v1::SHARD_STATE_STOPPING) {
      runs = true;
    }
  }
  if (!runs) {
    return absl::FailedPreconditionError(
        absl::StrCat("no router ", request.group(), " runs on this node"));
  }
  const std::string path =
      absl::StrCat(state_dir_, "/run/", request.group(), "/", engine::kRouterAdminSocket);
  v1::RouterCommandResponse response;
  for (const std::string& line : lines) {
    ASSIGN_OR_RETURN(std::string reply, SendRouterLine(path, line));
    if (request.has_show()) {
      ASSIGN_OR_RETURN(std::vector<v1::RouterServer> servers, engine::ParseRouterShow(reply));
      for (v1::RouterServer& server : servers) *response.add_servers() = std::move(server);
    } else {
      RETURN_IF_ERROR(engine::CheckRouterReply(line, reply));
    }
  }
  return response;
}

}  // namespace fleet::agent
