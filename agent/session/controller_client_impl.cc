// ControllerClient over gRPC, with heartbeats over UDP.
#include "agent/session/controller_client_impl.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/host_port.h"
#include "common/identity_names.h"
#include "common/wire/heartbeat_wire.h"

namespace fleet::agent {

GrpcControllerClient::GrpcControllerClient(const std::string& address,
                                           const TransportCredentials& transport,
                                           absl::Duration deadline, bool own_connection)
    : host_(HostOf(address)),
      stub_(v1::Controller::NewStub(
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

absl::StatusOr<v1::ReportShardsResponse> GrpcControllerClient::ReportShards(
    const v1::ReportShardsRequest& request) {
  return Call<v1::ReportShardsRequest, v1::ReportShardsResponse>(
      &v1::Controller::Stub::ReportShards, request);
}

absl::Status GrpcControllerClient::PrepareHeartbeats() {
  if (controller_ip_.empty()) {
    if (host_.empty() || absl::StrContains(host_, ':')) {
      return absl::InvalidArgumentError(
          absl::StrCat("heartbeats are IPv4 datagrams, and the controller address has no IPv4 "
                       "host (\"",
                       host_, "\"); give the agent --controller IPV4:PORT"));
    }
    absl::StatusOr<std::string> ip = ResolveIpv4(host_);
    if (!ip.ok()) {
      return absl::Status(ip.status().code(),
                          absl::StrCat("the controller host: ", ip.status().message()));
    }
    controller_ip_ = *std::move(ip);
  }
  if (!udp_) {
    absl::StatusOr<UdpSocket> socket = UdpSocket::Bind("0.0.0.0", 0);
    if (!socket.ok()) return socket.status();
    udp_.emplace(*std::move(socket));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::HeartbeatVerdict> GrpcControllerClient::Heartbeat(
    const v1::HeartbeatDatagram& beat, absl::string_view key, uint16_t port) {
  constexpr absl::Duration kAckTimeout = absl::Milliseconds(500);
  if (absl::Status st = PrepareHeartbeats(); !st.ok()) return st;
  absl::StatusOr<std::string> datagram = heartbeat::EncodeBeat(beat, key);
  if (!datagram.ok()) return datagram.status();
  if (absl::Status st = udp_->SendTo(controller_ip_, port, *datagram); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("heartbeat not sent: ", st.message()));
  }
  const absl::Time deadline = absl::Now() + kAckTimeout;
  for (absl::Duration left = kAckTimeout; left > absl::ZeroDuration();
       left = deadline - absl::Now()) {
    absl::StatusOr<std::optional<Datagram>> reply = udp_->Receive(left);
    if (!reply.ok()) return reply.status();
    if (!reply->has_value()) continue;
    // Anything else on the port (a late ack of an earlier beat, a forgery) is skipped.
    absl::StatusOr<v1::HeartbeatAck> ack = heartbeat::ParseAck((*reply)->bytes);
    if (!ack.ok() || ack->session() != beat.session() || ack->sequence() != beat.sequence()) {
      continue;
    }
    if (ack->verdict() == v1::HEARTBEAT_VERDICT_REGISTER ||
        heartbeat::Verify((*reply)->bytes, key)) {
      return ack->verdict();
    }
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "no answer to the heartbeat datagram sent to ", controller_ip_, ":", port, "/udp within ",
      absl::FormatDuration(kAckTimeout),
      "; if the controller's gRPC calls work, a firewall drops UDP to that port: open it"));
}

absl::StatusOr<v1::RenewCertificateResponse> GrpcControllerClient::RenewCertificate(
    const v1::RenewCertificateRequest& request) {
  return Call<v1::RenewCertificateRequest, v1::RenewCertificateResponse>(
      &v1::Controller::Stub::RenewCertificate, request);
}

}  // namespace fleet::agent
