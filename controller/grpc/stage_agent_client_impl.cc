// StageAgentClient over gRPC.
#include "controller/grpc/stage_agent_client_impl.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"

namespace fleet::controller {
namespace {

constexpr absl::Duration kScanCancelPoll = absl::Milliseconds(100);

// A failed call's status, naming the agent's address.
absl::Status AgentError(const grpc::Status& status, const std::string& address) {
  absl::Status st = FromGrpc(status);
  return absl::Status(st.code(), absl::StrCat("agent at ", address, ": ", st.message()));
}

// One unary call with a deadline; errors name the agent's address.
template <typename Request, typename Response, typename Method>
absl::StatusOr<Response> CallAgent(v1::Agent::Stub* stub, Method method, const Request& request,
                                   const std::string& address, absl::Duration deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  Response response;
  grpc::Status status = (stub->*method)(&context, request, &response);
  if (status.ok()) return response;
  return AgentError(status, address);
}

}  // namespace

v1::Agent::Stub* GrpcStageAgentClient::StubFor(const std::string& address,
                                               const std::string& node_id,
                                               absl::Duration deadline) {
  std::shared_ptr<grpc::Channel> channel;
  v1::Agent::Stub* stub = nullptr;
  {
    absl::MutexLock lock(&mu_);
    // The channel checks that the agent at `address` holds `node_id`'s certificate.
    Connection& c = connections_[absl::StrCat(node_id, "@", address)];
    if (!c.stub) {
      c.channel = MakeChannel(address, *transport_, {.server_name = NodeServerName(node_id)});
      c.stub = v1::Agent::NewStub(c.channel);
    }
    channel = c.channel;
    stub = c.stub.get();
  }
  if (channel->GetState(/*try_to_connect=*/true) != GRPC_CHANNEL_READY) {
    channel->WaitForConnected(
        absl::ToChronoTime(absl::Now() + std::min(deadline, absl::Seconds(10))));
  }
  return stub;
}

absl::StatusOr<v1::StageScanResponse> GrpcStageAgentClient::Scan(
    const std::string& address, const std::string& node_id, const v1::StageScanRequest& request,
    absl::Duration deadline, const absl::Notification& cancel) {
  v1::Agent::Stub* stub = StubFor(address, node_id, deadline);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  v1::StageScanResponse response;
  grpc::Status status;
  absl::Notification done;
  stub->async()->StageScan(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  // A cancel ends the call; the agent sees it cancelled and stops hashing.
  bool cancelled = false;
  while (!done.WaitForNotificationWithTimeout(kScanCancelPoll)) {
    if (!cancelled && cancel.HasBeenNotified()) {
      context.TryCancel();
      cancelled = true;
    }
  }
  if (status.ok()) return response;
  return AgentError(status, address);
}

absl::StatusOr<v1::StagePrepareResponse> GrpcStageAgentClient::Prepare(
    const std::string& address, const std::string& node_id, const v1::StagePrepareRequest& request,
    absl::Duration deadline) {
  return CallAgent<v1::StagePrepareRequest, v1::StagePrepareResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StagePrepare, request, address,
      deadline);
}

absl::StatusOr<v1::StageSendResponse> GrpcStageAgentClient::Send(
    const std::string& address, const std::string& node_id, const v1::StageSendRequest& request,
    absl::Duration deadline) {
  return CallAgent<v1::StageSendRequest, v1::StageSendResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StageSend, request, address, deadline);
}

absl::StatusOr<v1::StageFinishResponse> GrpcStageAgentClient::Finish(
    const std::string& address, const std::string& node_id, const v1::StageFinishRequest& request,
    absl::Duration deadline) {
  return CallAgent<v1::StageFinishRequest, v1::StageFinishResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StageFinish, request, address,
      deadline);
}

absl::StatusOr<v1::StageImageInspectResponse> GrpcStageAgentClient::InspectImage(
    const std::string& address, const std::string& node_id,
    const v1::StageImageInspectRequest& request, absl::Duration deadline) {
  return CallAgent<v1::StageImageInspectRequest, v1::StageImageInspectResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StageImageInspect, request, address,
      deadline);
}

absl::StatusOr<v1::StageImageReceiveResponse> GrpcStageAgentClient::ReceiveImage(
    const std::string& address, const std::string& node_id,
    const v1::StageImageReceiveRequest& request, absl::Duration deadline) {
  return CallAgent<v1::StageImageReceiveRequest, v1::StageImageReceiveResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StageImageReceive, request, address,
      deadline);
}

absl::StatusOr<v1::StageSendResponse> GrpcStageAgentClient::SendImage(
    const std::string& address, const std::string& node_id,
    const v1::StageImageSendRequest& request, absl::Duration deadline) {
  return CallAgent<v1::StageImageSendRequest, v1::StageSendResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StageImageSend, request, address,
      deadline);
}

absl::StatusOr<v1::StageImageFinishResponse> GrpcStageAgentClient::FinishImage(
    const std::string& address, const std::string& node_id, const v1::StageFinishRequest& request,
    absl::Duration deadline) {
  return CallAgent<v1::StageFinishRequest, v1::StageImageFinishResponse>(
      StubFor(address, node_id, deadline), &v1::Agent::Stub::StageImageFinish, request, address,
      deadline);
}

}  // namespace fleet::controller
