// ControllerClient over gRPC.
#include "agent/controller_client_impl.h"

#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"

namespace fleet::agent {

GrpcControllerClient::GrpcControllerClient(const std::string& address,
                                           const TransportCredentials& transport,
                                           absl::Duration deadline, bool own_connection)
    : stub_(v1::Controller::NewStub(
          MakeChannel(address, transport,
                      {.server_name = kControllerServerName, .own_connection = own_connection}))),
      deadline_(deadline) {}

absl::StatusOr<v1::RegisterResponse> GrpcControllerClient::Register(
    const v1::RegisterRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
  v1::RegisterResponse response;
  grpc::Status st = stub_->Register(&context, request, &response);
  if (!st.ok()) return FromGrpc(st);
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> GrpcControllerClient::Heartbeat(
    const v1::HeartbeatRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
  v1::HeartbeatResponse response;
  grpc::Status st = stub_->Heartbeat(&context, request, &response);
  if (!st.ok()) return FromGrpc(st);
  return response;
}

absl::StatusOr<v1::RenewCertificateResponse> GrpcControllerClient::RenewCertificate(
    const v1::RenewCertificateRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
  v1::RenewCertificateResponse response;
  grpc::Status st = stub_->RenewCertificate(&context, request, &response);
  if (!st.ok()) return FromGrpc(st);
  return response;
}

}  // namespace fleet::agent
