// FabricAgentClient: the controller's calls to agents for fabric tests. An interface so the
// runner is tested with FakeFabricAgentClient (fake_fabric_agent_client.h); production uses
// GrpcFabricAgentClient (controller/grpc/fabric_agent_client_impl.h).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::controller {

class FabricAgentClient {
 public:
  virtual ~FabricAgentClient() = default;
  // `address` is the agent's "HOST:PORT", `node_id` the identity its certificate must prove.
  virtual absl::StatusOr<v1::FabricListenResponse> Listen(const std::string& address,
                                                          const std::string& node_id,
                                                          const v1::FabricListenRequest& request,
                                                          absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::FabricSendResponse> Send(const std::string& address,
                                                      const std::string& node_id,
                                                      const v1::FabricSendRequest& request,
                                                      absl::Duration deadline) = 0;
  // The RDMA test's four calls (agent.proto: RdmaPrepare, RdmaConnect, RdmaRun, RdmaFinish).
  virtual absl::StatusOr<v1::RdmaPrepareResponse> RdmaPrepare(const std::string& address,
                                                              const std::string& node_id,
                                                              const v1::RdmaPrepareRequest& request,
                                                              absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::RdmaConnectResponse> RdmaConnect(const std::string& address,
                                                              const std::string& node_id,
                                                              const v1::RdmaConnectRequest& request,
                                                              absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::RdmaRunResponse> RdmaRun(const std::string& address,
                                                      const std::string& node_id,
                                                      const v1::RdmaRunRequest& request,
                                                      absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::RdmaFinishResponse> RdmaFinish(const std::string& address,
                                                            const std::string& node_id,
                                                            const v1::RdmaFinishRequest& request,
                                                            absl::Duration deadline) = 0;
};

}  // namespace fleet::controller
