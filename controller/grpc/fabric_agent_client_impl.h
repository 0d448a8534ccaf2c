// FabricAgentClient over gRPC: the Agent service's FabricListen, FabricSend and Rdma* calls,
// mutual TLS.
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/transport.h"
#include "controller/fabric/fabric_agent_client.h"
#include "fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {

class GrpcFabricAgentClient final : public FabricAgentClient {
 public:
  explicit GrpcFabricAgentClient(std::shared_ptr<TransportCredentials> transport)
      : transport_(std::move(transport)) {}
  absl::StatusOr<v1::FabricListenResponse> Listen(const std::string& address,
                                                  const std::string& node_id,
                                                  const v1::FabricListenRequest& request,
                                                  absl::Duration deadline) override;
  absl::StatusOr<v1::FabricSendResponse> Send(const std::string& address,
                                              const std::string& node_id,
                                              const v1::FabricSendRequest& request,
                                              absl::Duration deadline) override;
  absl::StatusOr<v1::RdmaPrepareResponse> RdmaPrepare(const std::string& address,
                                                      const std::string& node_id,
                                                      const v1::RdmaPrepareRequest& request,
                                                      absl::Duration deadline) override;
  absl::StatusOr<v1::RdmaConnectResponse> RdmaConnect(const std::string& address,
                                                      const std::string& node_id,
                                                      const v1::RdmaConnectRequest& request,
                                                      absl::Duration deadline) override;
  absl::StatusOr<v1::RdmaRunResponse> RdmaRun(const std::string& address,
                                              const std::string& node_id,
                                              const v1::RdmaRunRequest& request,
                                              absl::Duration deadline) override;
  absl::StatusOr<v1::RdmaFinishResponse> RdmaFinish(const std::string& address,
                                                    const std::string& node_id,
                                                    const v1::RdmaFinishRequest& request,
                                                    absl::Duration deadline) override;

 private:
  // One unary call with `deadline` through the stub's `method`.
  template <typename Request, typename Response, typename Method>
  absl::StatusOr<Response> Call(const std::string& address, const std::string& node_id,
                                const Request& request, absl::Duration deadline, Method method);

  v1::Agent::Stub* StubFor(const std::string& address, const std::string& node_id);

  const std::shared_ptr<TransportCredentials> transport_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<v1::Agent::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller
