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

template <typename Request, typename Response, typename Method>
absl::StatusOr<Response> GrpcControllerClient::Call(Method method, const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
  Response response;
  grpc::Status st = (stub_.get()->*method)(&context, request, &response);
  if (!st.ok()) return FromGrpc(st);
  return response;
}

absl::StatusOr<v1::RegisterResponse> GrpcControllerClient::Register(
    const v1::RegisterRequest& request) {
  return Call<v1::RegisterRequest, v1::RegisterResponse>(&v1::Controller::Stub::Register, request);
}

absl::StatusOr<v1::HeartbeatResponse> GrpcControllerClient::Heartbeat(
    const v1::HeartbeatRequest& request) {
  return Call<v1::HeartbeatRequest, v1::HeartbeatResponse>(&v1::Controller::Stub::Heartbeat,
                                                           request);
}

absl::StatusOr<v1::RenewCertificateResponse> GrpcControllerClient::RenewCertificate(
    const v1::RenewCertificateRequest& request) {
  return Call<v1::RenewCertificateRequest, v1::RenewCertificateResponse>(
      &v1::Controller::Stub::RenewCertificate, request);
}

}  // namespace fleet::agent
