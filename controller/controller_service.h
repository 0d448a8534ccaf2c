// The Controller gRPC service: translates RPCs into NodeRegistry calls and nothing more.
#pragma once

#include <string>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "controller/agent_client.h"
#include "controller/node_registry.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::controller {

class ControllerService final : public v1::Controller::CallbackService {
 public:
  ControllerService(const Clock* clock, NodeRegistry* registry, AgentClient* agents,
                    std::string controller_id)
      : clock_(clock),
        registry_(registry),
        agents_(agents),
        controller_id_(std::move(controller_id)) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* context,
                                      const v1::ListNodesRequest* request,
                                      v1::ListNodesResponse* response) override;

  // Blocks until every call-back to an agent started by Register has finished (each has a
  // deadline), so the registry can be destroyed safely.
  void WaitForAgentCalls();

 private:
  const Clock* const clock_;
  NodeRegistry* const registry_;
  AgentClient* const agents_;
  const std::string controller_id_;
  absl::Mutex mu_;
  int agent_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fleet::controller
