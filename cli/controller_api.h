// The CLI's calls to the controller, over mutual TLS with the admin credential, each with a
// deadline and errors that say what to check.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/config.h"
#include "common/transport.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::cli {

// Example:
//   ASSIGN_OR_RETURN(AdminClient client, AdminClient::Create(config));
//   ASSIGN_OR_RETURN(v1::ListNodesResponse nodes, client.ListNodes());
class AdminClient {
 public:
  static absl::StatusOr<AdminClient> Create(const CliConfig& config,
                                            absl::Duration deadline = absl::Seconds(5));

  // Each returns Unavailable with "cannot reach the controller at ADDR (from SOURCE) ..." when
  // nothing answers in time, and otherwise the controller's error prefixed with its address.
  absl::StatusOr<v1::ListNodesResponse> ListNodes();
  absl::StatusOr<v1::CreateTokenResponse> CreateToken(const v1::CreateTokenRequest& request);
  absl::StatusOr<v1::ListTokensResponse> ListTokens();
  absl::Status RevokeToken(const std::string& id);
  absl::StatusOr<v1::RemoveNodeResponse> RemoveNode(const std::string& name);
  absl::StatusOr<v1::DiscoverResponse> Discover(const v1::DiscoverRequest& request);
  // Apply and stop wait for agents (a stop waits for each rank's grace period): they get up to
  // `extra` more than the usual deadline.
  absl::StatusOr<v1::ApplyResponse> Apply(const v1::ApplyRequest& request, absl::Duration extra);
  absl::StatusOr<v1::ListGroupsResponse> ListGroups();
  absl::StatusOr<v1::GetGroupResponse> GetGroup(const std::string& name);
  absl::StatusOr<v1::StopGroupResponse> StopGroup(const std::string& name, absl::Duration extra);
  absl::StatusOr<v1::GroupLogsResponse> GroupLogs(const v1::GroupLogsRequest& request);
  // Probes may hash a model the first time: they get up to `extra` more.
  absl::StatusOr<v1::ProbeNodeResponse> ProbeNode(const std::string& name, absl::Duration extra,
                                                  const v1::ProbeRequest& what = {});
  absl::StatusOr<v1::PreflightResponse> Preflight(const v1::ApplyRequest& request,
                                                  absl::Duration extra);
  // A fabric run takes its tests' durations: it gets up to `extra` more.
  absl::StatusOr<v1::RunFabricResponse> RunFabric(const v1::RunFabricRequest& request,
                                                  absl::Duration extra);
  absl::StatusOr<v1::FabricHistoryResponse> FabricHistory(const v1::FabricHistoryRequest& request);
  // Every agent's look at its node (`fleet health`); each agent has 5 s to answer.
  absl::StatusOr<v1::HealthResponse> Health();
  // A restart waits for every rank's stop and the new start orders: up to `extra` more.
  absl::StatusOr<v1::RestartGroupResponse> RestartGroup(const std::string& name,
                                                        absl::Duration extra);
  absl::StatusOr<v1::ListEventsResponse> ListEvents(const v1::ListEventsRequest& request);
  absl::StatusOr<v1::RecordBenchResponse> RecordBench(const v1::RecordBenchRequest& request);
  absl::StatusOr<v1::BenchHistoryResponse> BenchHistory(const v1::BenchHistoryRequest& request);
  // A staging run lasts as long as its copy: up to `extra` more.
  absl::StatusOr<v1::StageModelResponse> StageModel(const v1::StageModelRequest& request,
                                                    absl::Duration extra);
  absl::StatusOr<v1::StageStatusResponse> StageStatus();
  // `fleet stage image`: up to `extra` more, like a model copy.
  absl::StatusOr<v1::StageImageResponse> StageImage(const v1::StageImageRequest& request,
                                                    absl::Duration extra);
  // `fleet stage cancel`: waits up to a minute for the run to end.
  absl::StatusOr<v1::StageCancelResponse> StageCancel();
  absl::StatusOr<v1::ListServicesResponse> ListServices(const std::string& name);
  // A roll restarts every replica in turn: up to `extra` more.
  absl::StatusOr<v1::RollGroupResponse> RollGroup(const std::string& name, absl::Duration extra);

 private:
  AdminClient(CliConfig config, std::unique_ptr<v1::Controller::Stub> stub, absl::Duration d)
      : config_(std::move(config)), stub_(std::move(stub)), deadline_(d) {}
  template <typename Request, typename Response, typename Method>
  absl::StatusOr<Response> Call(Method method, const Request& request, absl::Duration extra);

  CliConfig config_;
  std::unique_ptr<v1::Controller::Stub> stub_;
  absl::Duration deadline_;
};

}  // namespace fleet::cli
