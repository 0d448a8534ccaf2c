// RouterAdmin: the agent's side of the RouterCommand RPC. It turns a typed request into
// HAProxy runtime-API lines (launch/router/router.h) and sends each to the admin socket of the
// router shard this agent runs (STATE_DIR/run/GROUP/admin.sock), which never leaves the node.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "agent/shards/supervisor.h"
#include "fleet/v1/agent.pb.h"

namespace fleet::agent {

class RouterAdmin {
 public:
  // `state_dir` is the supervisor's (SupervisorOptions::state_dir); `supervisor` tells whether
  // the router's shard runs. Both must outlive the admin.
  RouterAdmin(std::string state_dir, Supervisor* supervisor)
      : state_dir_(std::move(state_dir)), supervisor_(supervisor) {}

  // Blocking (a local socket, at most 2 s a line). InvalidArgument for a malformed request,
  // FailedPrecondition when no router shard of the group runs on this node (or HAProxy refused
  // a line, quoted), Unavailable when its socket does not answer (it is still starting).
  absl::StatusOr<v1::RouterCommandResponse> Run(const v1::RouterCommandRequest& request);

 private:
  const std::string state_dir_;
  Supervisor* const supervisor_;
};

// One line sent to the HAProxy admin socket at `path` and its whole answer (HAProxy closes the
// connection after answering a non-interactive client). Unavailable when it cannot connect.
absl::StatusOr<std::string> SendRouterLine(const std::string& path, const std::string& line);

}  // namespace fleet::agent
