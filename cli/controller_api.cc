// The CLI's calls to the controller.
#include "cli/controller_api.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::cli {

absl::StatusOr<AdminClient> AdminClient::Create(const CliConfig& config, absl::Duration deadline) {
  ASSIGN_OR_RETURN(std::shared_ptr<TransportCredentials> transport, AdminTransport(config));
  auto stub = v1::Controller::NewStub(
      MakeChannel(config.controller, *transport, {.server_name = kControllerServerName}));
  return AdminClient(config, std::move(stub), deadline);
}

template <typename Request, typename Response, typename Method>
absl::StatusOr<Response> AdminClient::Call(Method method, const Request& request,
                                           absl::Duration extra) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_ + extra));
  Response response;
  grpc::Status st = (stub_.get()->*method)(&context, request, &response);
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::UnavailableError(absl::StrCat(
        "cannot reach the controller at ", config_.controller, " (from ", config_.source,
        "): ", st.error_message(),
        "; check that `fleet controller` runs there, or point --controller / FLEET_CONFIG at it"));
  }
  if (!st.ok()) {
    absl::Status status = FromGrpc(st);
    // gRPC itself answers some failures (a message it could not encode or decode) without a
    // text; the user still gets the code and where to look.
    const std::string message =
        status.message().empty()
            ? absl::StrCat(absl::StatusCodeToString(status.code()),
                           " with no message; the controller's log (journalctl -u "
                           "fleet-controller, or fleet up's log directory) has the cause")
            : std::string(status.message());
    return absl::Status(status.code(), absl::StrCat("the controller at ", config_.controller,
                                                    " answered: ", message));
  }
  return response;
}

absl::StatusOr<v1::ListNodesResponse> AdminClient::ListNodes() {
  return Call<v1::ListNodesRequest, v1::ListNodesResponse>(
      &v1::Controller::Stub::ListNodes, v1::ListNodesRequest(), absl::ZeroDuration());
}

absl::StatusOr<v1::CreateTokenResponse> AdminClient::CreateToken(
    const v1::CreateTokenRequest& request) {
  return Call<v1::CreateTokenRequest, v1::CreateTokenResponse>(&v1::Controller::Stub::CreateToken,
                                                               request, absl::ZeroDuration());
}

absl::StatusOr<v1::ListTokensResponse> AdminClient::ListTokens() {
  return Call<v1::ListTokensRequest, v1::ListTokensResponse>(
      &v1::Controller::Stub::ListTokens, v1::ListTokensRequest(), absl::ZeroDuration());
}

absl::Status AdminClient::RevokeToken(const std::string& id) {
  v1::RevokeTokenRequest request;
  request.set_id(id);
  return Call<v1::RevokeTokenRequest, v1::RevokeTokenResponse>(&v1::Controller::Stub::RevokeToken,
                                                               request, absl::ZeroDuration())
      .status();
}

absl::StatusOr<v1::RemoveNodeResponse> AdminClient::RemoveNode(const std::string& name) {
  v1::RemoveNodeRequest request;
  request.set_name(name);
  return Call<v1::RemoveNodeRequest, v1::RemoveNodeResponse>(&v1::Controller::Stub::RemoveNode,
                                                             request, absl::ZeroDuration());
}

absl::StatusOr<v1::DiscoverResponse> AdminClient::Discover(const v1::DiscoverRequest& request) {
  // The controller listens for answers for `listen_for` before it replies.
  absl::Duration listen = absl::Nanoseconds(
      google::protobuf::util::TimeUtil::DurationToNanoseconds(request.listen_for()));
  return Call<v1::DiscoverRequest, v1::DiscoverResponse>(&v1::Controller::Stub::Discover, request,
                                                         listen);
}

absl::StatusOr<v1::ApplyResponse> AdminClient::Apply(const v1::ApplyRequest& request,
                                                     absl::Duration extra) {
  return Call<v1::ApplyRequest, v1::ApplyResponse>(&v1::Controller::Stub::Apply, request, extra);
}

absl::StatusOr<v1::ListGroupsResponse> AdminClient::ListGroups() {
  return Call<v1::ListGroupsRequest, v1::ListGroupsResponse>(
      &v1::Controller::Stub::ListGroups, v1::ListGroupsRequest(), absl::ZeroDuration());
}

absl::StatusOr<v1::GetGroupResponse> AdminClient::GetGroup(const std::string& name) {
  v1::GetGroupRequest request;
  request.set_name(name);
  return Call<v1::GetGroupRequest, v1::GetGroupResponse>(&v1::Controller::Stub::GetGroup, request,
                                                         absl::ZeroDuration());
}

absl::StatusOr<v1::StopGroupResponse> AdminClient::StopGroup(const std::string& name,
                                                             absl::Duration extra) {
  v1::StopGroupRequest request;
  request.set_name(name);
  return Call<v1::StopGroupRequest, v1::StopGroupResponse>(&v1::Controller::Stub::StopGroup,
                                                           request, extra);
}

absl::StatusOr<v1::GroupLogsResponse> AdminClient::GroupLogs(const v1::GroupLogsRequest& request) {
  return Call<v1::GroupLogsRequest, v1::GroupLogsResponse>(&v1::Controller::Stub::GroupLogs,
                                                           request, absl::ZeroDuration());
}

absl::StatusOr<v1::ProbeNodeResponse> AdminClient::ProbeNode(const std::string& name,
                                                             absl::Duration extra,
                                                             const v1::ProbeRequest& what) {
  v1::ProbeNodeRequest request;
  request.set_name(name);
  *request.mutable_request() = what;
  return Call<v1::ProbeNodeRequest, v1::ProbeNodeResponse>(&v1::Controller::Stub::ProbeNode,
                                                           request, extra);
}

absl::StatusOr<v1::PreflightResponse> AdminClient::Preflight(const v1::ApplyRequest& request,
                                                             absl::Duration extra) {
  return Call<v1::ApplyRequest, v1::PreflightResponse>(&v1::Controller::Stub::Preflight, request,
                                                       extra);
}

absl::StatusOr<v1::RunFabricResponse> AdminClient::RunFabric(const v1::RunFabricRequest& request,
                                                             absl::Duration extra) {
  return Call<v1::RunFabricRequest, v1::RunFabricResponse>(&v1::Controller::Stub::RunFabric,
                                                           request, extra);
}

absl::StatusOr<v1::FabricHistoryResponse> AdminClient::FabricHistory(
    const v1::FabricHistoryRequest& request) {
  return Call<v1::FabricHistoryRequest, v1::FabricHistoryResponse>(
      &v1::Controller::Stub::FabricHistory, request, absl::ZeroDuration());
}

absl::StatusOr<v1::HealthResponse> AdminClient::Health() {
  return Call<v1::HealthRequest, v1::HealthResponse>(&v1::Controller::Stub::Health, {},
                                                     absl::Seconds(5));
}

absl::StatusOr<v1::RestartGroupResponse> AdminClient::RestartGroup(const std::string& name,
                                                                   absl::Duration extra) {
  v1::RestartGroupRequest request;
  request.set_name(name);
  return Call<v1::RestartGroupRequest, v1::RestartGroupResponse>(
      &v1::Controller::Stub::RestartGroup, request, extra);
}

absl::StatusOr<v1::ListEventsResponse> AdminClient::ListEvents(
    const v1::ListEventsRequest& request) {
  return Call<v1::ListEventsRequest, v1::ListEventsResponse>(&v1::Controller::Stub::ListEvents,
                                                             request, absl::ZeroDuration());
}

absl::StatusOr<v1::RecordBenchResponse> AdminClient::RecordBench(
    const v1::RecordBenchRequest& request) {
  return Call<v1::RecordBenchRequest, v1::RecordBenchResponse>(&v1::Controller::Stub::RecordBench,
                                                               request, absl::ZeroDuration());
}

absl::StatusOr<v1::BenchHistoryResponse> AdminClient::BenchHistory(
    const v1::BenchHistoryRequest& request) {
  return Call<v1::BenchHistoryRequest, v1::BenchHistoryResponse>(
      &v1::Controller::Stub::BenchHistory, request, absl::ZeroDuration());
}

absl::StatusOr<v1::StageModelResponse> AdminClient::StageModel(const v1::StageModelRequest& request,
                                                               absl::Duration extra) {
  return Call<v1::StageModelRequest, v1::StageModelResponse>(&v1::Controller::Stub::StageModel,
                                                             request, extra);
}

absl::StatusOr<v1::StageImageResponse> AdminClient::StageImage(const v1::StageImageRequest& request,
                                                               absl::Duration extra) {
  return Call<v1::StageImageRequest, v1::StageImageResponse>(&v1::Controller::Stub::StageImage,
                                                             request, extra);
}

absl::StatusOr<v1::StageStatusResponse> AdminClient::StageStatus() {
  return Call<v1::StageStatusRequest, v1::StageStatusResponse>(
      &v1::Controller::Stub::StageStatus, v1::StageStatusRequest(), absl::ZeroDuration());
}

absl::StatusOr<v1::StageCancelResponse> AdminClient::StageCancel() {
  return Call<v1::StageCancelRequest, v1::StageCancelResponse>(
      &v1::Controller::Stub::StageCancel, v1::StageCancelRequest(), absl::Minutes(2));
}

absl::StatusOr<v1::ListServicesResponse> AdminClient::ListServices(const std::string& name) {
  v1::ListServicesRequest request;
  request.set_name(name);
  return Call<v1::ListServicesRequest, v1::ListServicesResponse>(
      &v1::Controller::Stub::ListServices, request, absl::ZeroDuration());
}

absl::StatusOr<v1::RollGroupResponse> AdminClient::RollGroup(const std::string& name,
                                                             absl::Duration extra) {
  v1::RollGroupRequest request;
  request.set_name(name);
  return Call<v1::RollGroupRequest, v1::RollGroupResponse>(&v1::Controller::Stub::RollGroup,
                                                           request, extra);
}

}  // namespace fleet::cli
