// AgentClient over gRPC.
#include "controller/grpc/agent_client_impl.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"

namespace fleet::controller {

v1::Agent::Stub* GrpcAgentClient::StubFor(const std::string& address, const std::string& node_id) {
  absl::MutexLock lock(&mu_);
  // Keyed by both: the channel verifies that the agent at `address` holds `node_id`'s
  // certificate, so a node that moves to a reused address gets a channel of its own.
  auto& stub = stubs_[absl::StrCat(node_id, "@", address)];
  if (!stub) {
    stub = v1::Agent::NewStub(
        MakeChannel(address, *transport_, {.server_name = NodeServerName(node_id)}));
  }
  return stub.get();
}

void GrpcAgentClient::Describe(const std::string& address, const std::string& node_id,
                               DescribeCallback done) {
  // Owns everything the call touches until gRPC calls back.
  struct Call {
    grpc::ClientContext context;
    v1::DescribeRequest request;
    v1::DescribeResponse response;
    DescribeCallback done;
  };
  auto* call = new Call;
  call->done = std::move(done);
  call->request.set_node_id(node_id);
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
  StubFor(address, node_id)
      ->async()
      ->Describe(
          &call->context, &call->request, &call->response, [call, address](grpc::Status status) {
            std::unique_ptr<Call> owned(call);
            if (!status.ok()) {
              absl::Status st = FromGrpc(status);
              std::move(owned->done)(absl::Status(
                  st.code(), absl::StrCat("calling the agent at ", address, ": ", st.message())));
              return;
            }
            std::move(owned->done)(std::move(owned->response));
          });
}

template <typename Request, typename Response>
absl::StatusOr<Response> GrpcAgentClient::Call(
    const std::string& address, const std::string& node_id,
    grpc::Status (v1::Agent::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    const Request& request, absl::Duration deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  Response response;
  grpc::Status status = (StubFor(address, node_id)->*method)(&context, request, &response);
  if (!status.ok()) {
    absl::Status st = FromGrpc(status);
    return absl::Status(st.code(), absl::StrCat("agent at ", address, ": ", st.message()));
  }
  return response;
}

absl::StatusOr<v1::StartShardResponse> GrpcAgentClient::StartShard(
    const std::string& address, const std::string& node_id, const v1::StartShardRequest& request,
    absl::Duration deadline) {
  return Call(address, node_id, &v1::Agent::Stub::StartShard, request, deadline);
}

absl::StatusOr<v1::StopShardsResponse> GrpcAgentClient::StopShards(
    const std::string& address, const std::string& node_id, const v1::StopShardsRequest& request,
    absl::Duration deadline) {
  return Call(address, node_id, &v1::Agent::Stub::StopShards, request, deadline);
}

absl::StatusOr<v1::ReadShardLogResponse> GrpcAgentClient::ReadShardLog(
    const std::string& address, const std::string& node_id, const v1::ReadShardLogRequest& request,
    absl::Duration deadline) {
  return Call(address, node_id, &v1::Agent::Stub::ReadShardLog, request, deadline);
}

absl::StatusOr<v1::NodeProbe> GrpcAgentClient::Probe(const std::string& address,
                                                     const std::string& node_id,
                                                     const v1::ProbeRequest& request,
                                                     absl::Duration deadline) {
  return Call(address, node_id, &v1::Agent::Stub::Probe, request, deadline);
}

absl::StatusOr<v1::NodeHealthSample> GrpcAgentClient::CollectHealth(
    const std::string& address, const std::string& node_id, const v1::CollectHealthRequest& request,
    absl::Duration deadline) {
  return Call(address, node_id, &v1::Agent::Stub::CollectHealth, request, deadline);
}

absl::StatusOr<v1::RouterCommandResponse> GrpcAgentClient::RouterCommand(
    const std::string& address, const std::string& node_id, const v1::RouterCommandRequest& request,
    absl::Duration deadline) {
  return Call(address, node_id, &v1::Agent::Stub::RouterCommand, request, deadline);
}

}  // namespace fleet::controller
