// StageAgentClient over gRPC: the Agent service's staging calls, mutual TLS.
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/transport.h"
#include "controller/stage/stage_agent_client.h"
#include "fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {

class GrpcStageAgentClient final : public StageAgentClient {
 public:
  explicit GrpcStageAgentClient(std::shared_ptr<TransportCredentials> transport)
      : transport_(std::move(transport)) {}
  absl::StatusOr<v1::StageScanResponse> Scan(const std::string& address, const std::string& node_id,
                                             const v1::StageScanRequest& request,
                                             absl::Duration deadline,
                                             const absl::Notification& cancel) override;
  absl::StatusOr<v1::StagePrepareResponse> Prepare(const std::string& address,
                                                   const std::string& node_id,
                                                   const v1::StagePrepareRequest& request,
                                                   absl::Duration deadline) override;
  absl::StatusOr<v1::StageSendResponse> Send(const std::string& address, const std::string& node_id,
                                             const v1::StageSendRequest& request,
                                             absl::Duration deadline) override;
  absl::StatusOr<v1::StageFinishResponse> Finish(const std::string& address,
                                                 const std::string& node_id,
                                                 const v1::StageFinishRequest& request,
                                                 absl::Duration deadline) override;
  absl::StatusOr<v1::StageImageInspectResponse> InspectImage(
      const std::string& address, const std::string& node_id,
      const v1::StageImageInspectRequest& request, absl::Duration deadline) override;
  absl::StatusOr<v1::StageImageReceiveResponse> ReceiveImage(
      const std::string& address, const std::string& node_id,
      const v1::StageImageReceiveRequest& request, absl::Duration deadline) override;
  absl::StatusOr<v1::StageSendResponse> SendImage(const std::string& address,
                                                  const std::string& node_id,
                                                  const v1::StageImageSendRequest& request,
                                                  absl::Duration deadline) override;
  absl::StatusOr<v1::StageImageFinishResponse> FinishImage(const std::string& address,
                                                           const std::string& node_id,
                                                           const v1::StageFinishRequest& request,
                                                           absl::Duration deadline) override;

 private:
  // The agent's stub once its channel is connected (at most 10 s, less within `deadline`): a
  // channel still backing off after the agent restarted would fail the call at once.
  v1::Agent::Stub* StubFor(const std::string& address, const std::string& node_id,
                           absl::Duration deadline);

  const std::shared_ptr<TransportCredentials> transport_;
  absl::Mutex mu_;
  struct Connection {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Agent::Stub> stub;
  };
  absl::flat_hash_map<std::string, Connection> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller
