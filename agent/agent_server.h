// AgentServer: the agent's composition root. It owns the node identity, the Agent gRPC
// service and the session thread that registers with the controller and heartbeats.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/backoff.h"
#include "common/transport.h"
#include "fleet/v1/types.pb.h"

namespace grpc {
class Server;
}

namespace fleet::agent {

class AgentService;
class ControllerClient;

struct AgentOptions {
  std::string controller;               // "HOST:PORT" of the controller
  std::string state_dir;                // holds node_id
  std::string name;                     // node name; the hostname when empty
  std::string listen = "0.0.0.0:7101";  // the Agent service; port 0 picks a free port
  // "HOST" or "HOST:PORT" the controller reaches this agent at; without a port, the port
  // actually listened on. Empty: the listen host, which must then not be a wildcard.
  std::string advertise;
  std::string root = "/";  // where probes read /proc, /sys, /etc
  std::shared_ptr<TransportCredentials> transport;
  BackoffPolicy backoff;
};

class AgentServer {
 public:
  // Fails with InvalidArgument for an unusable advertise address, FailedPrecondition for a bad
  // state dir, Unavailable when the listen address cannot be bound. A controller that is not
  // up yet is not an error: the session keeps trying.
  static absl::StatusOr<std::unique_ptr<AgentServer>> Start(AgentOptions options);
  ~AgentServer();

  const v1::NodeIdentity& identity() const { return identity_; }
  const std::string& advertise_address() const { return advertise_; }
  void Shutdown();  // idempotent

 private:
  explicit AgentServer(AgentOptions options);
  absl::Status Init();

  AgentOptions options_;
  v1::NodeIdentity identity_;
  std::string advertise_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ControllerClient> controller_;
  absl::Notification stop_;
  std::thread session_;
  bool shut_down_ = false;
};

}  // namespace fleet::agent
