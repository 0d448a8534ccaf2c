// FabricAgentClient over gRPC.
#include "controller/grpc/fabric_agent_client_impl.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"

namespace fleet::controller {
namespace {

template <typename Response>
absl::StatusOr<Response> Result(const grpc::Status& status, Response response,
                                const std::string& address) {
  if (status.ok()) return response;
  absl::Status st = FromGrpc(status);
  return absl::Status(st.code(), absl::StrCat("agent at ", address, ": ", st.message()));
}

}  // namespace

v1::Agent::Stub* GrpcFabricAgentClient::StubFor(const std::string& address,
                                                const std::string& node_id) {
  absl::MutexLock lock(&mu_);
  // The channel checks that the agent at `address` holds `node_id`'s certificate.
  auto& stub = stubs_[absl::StrCat(node_id, "@", address)];
  if (!stub) {
    stub = v1::Agent::NewStub(
        MakeChannel(address, *transport_, {.server_name = NodeServerName(node_id)}));
  }
  return stub.get();
}

absl::StatusOr<v1::FabricListenResponse> GrpcFabricAgentClient::Listen(
    const std::string& address, const std::string& node_id, const v1::FabricListenRequest& request,
    absl::Duration deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  v1::FabricListenResponse response;
  grpc::Status status = StubFor(address, node_id)->FabricListen(&context, request, &response);
  return Result(status, std::move(response), address);
}

absl::StatusOr<v1::FabricSendResponse> GrpcFabricAgentClient::Send(
    const std::string& address, const std::string& node_id, const v1::FabricSendRequest& request,
    absl::Duration deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  v1::FabricSendResponse response;
  grpc::Status status = StubFor(address, node_id)->FabricSend(&context, request, &response);
  return Result(status, std::move(response), address);
}

template <typename Request, typename Response, typename Method>
absl::StatusOr<Response> GrpcFabricAgentClient::Call(const std::string& address,
                                                     const std::string& node_id,
                                                     const Request& request,
                                                     absl::Duration deadline, Method method) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  Response response;
  grpc::Status status = (StubFor(address, node_id)->*method)(&context, request, &response);
  return Result(status, std::move(response), address);
}

absl::StatusOr<v1::RdmaPrepareResponse> GrpcFabricAgentClient::RdmaPrepare(
    const std::string& address, const std::string& node_id, const v1::RdmaPrepareRequest& request,
    absl::Duration deadline) {
  return Call<v1::RdmaPrepareRequest, v1::RdmaPrepareResponse>(address, node_id, request, deadline,
                                                               &v1::Agent::Stub::RdmaPrepare);
}

absl::StatusOr<v1::RdmaConnectResponse> GrpcFabricAgentClient::RdmaConnect(
    const std::string& address, const std::string& node_id, const v1::RdmaConnectRequest& request,
    absl::Duration deadline) {
  return Call<v1::RdmaConnectRequest, v1::RdmaConnectResponse>(address, node_id, request, deadline,
                                                               &v1::Agent::Stub::RdmaConnect);
}

absl::StatusOr<v1::RdmaRunResponse> GrpcFabricAgentClient::RdmaRun(
    const std::string& address, const std::string& node_id, const v1::RdmaRunRequest& request,
    absl::Duration deadline) {
  return Call<v1::RdmaRunRequest, v1::RdmaRunResponse>(address, node_id, request, deadline,
                                                       &v1::Agent::Stub::RdmaRun);
}

absl::StatusOr<v1::RdmaFinishResponse> GrpcFabricAgentClient::RdmaFinish(
    const std::string& address, const std::string& node_id, const v1::RdmaFinishRequest& request,
    absl::Duration deadline) {
  return Call<v1::RdmaFinishRequest, v1::RdmaFinishResponse>(address, node_id, request, deadline,
                                                             &v1::Agent::Stub::RdmaFinish);
}

}  // namespace fleet::controller
