// StageAgentClient: the controller's staging calls to agents. An interface so the runner is
// tested with FakeStageAgentClient (fake_stage_agent_client.h); production uses
// GrpcStageAgentClient (controller/grpc/stage_agent_client_impl.h).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "fleet/v1/stage.pb.h"

namespace fleet::controller {

class StageAgentClient {
 public:
  virtual ~StageAgentClient() = default;
  // `address` is the agent's "HOST:PORT", `node_id` the identity its certificate must prove.
  // Once `cancel` is notified the scan ends: the agent stops hashing (a first scan of a large
  // tree takes minutes) and the answer is Cancelled.
  virtual absl::StatusOr<v1::StageScanResponse> Scan(const std::string& address,
                                                     const std::string& node_id,
                                                     const v1::StageScanRequest& request,
                                                     absl::Duration deadline,
                                                     const absl::Notification& cancel) = 0;
  virtual absl::StatusOr<v1::StagePrepareResponse> Prepare(const std::string& address,
                                                           const std::string& node_id,
                                                           const v1::StagePrepareRequest& request,
                                                           absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StageSendResponse> Send(const std::string& address,
                                                     const std::string& node_id,
                                                     const v1::StageSendRequest& request,
                                                     absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StageFinishResponse> Finish(const std::string& address,
                                                         const std::string& node_id,
                                                         const v1::StageFinishRequest& request,
                                                         absl::Duration deadline) = 0;
  // `fleet stage image`: the agent's ImageStager (agent/stage/image_stager.h).
  virtual absl::StatusOr<v1::StageImageInspectResponse> InspectImage(
      const std::string& address, const std::string& node_id,
      const v1::StageImageInspectRequest& request, absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StageImageReceiveResponse> ReceiveImage(
      const std::string& address, const std::string& node_id,
      const v1::StageImageReceiveRequest& request, absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StageSendResponse> SendImage(const std::string& address,
                                                          const std::string& node_id,
                                                          const v1::StageImageSendRequest& request,
                                                          absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StageImageFinishResponse> FinishImage(
      const std::string& address, const std::string& node_id, const v1::StageFinishRequest& request,
      absl::Duration deadline) = 0;
};

}  // namespace fleet::controller
