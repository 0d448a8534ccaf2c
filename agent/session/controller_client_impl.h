// ControllerClient over gRPC with a per-call deadline, and heartbeats as UDP datagrams to the
// same host.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "agent/session/controller_client.h"
#include "common/transport.h"
#include "common/udp.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::agent {

class GrpcControllerClient final : public ControllerClient {
 public:
  // `own_connection`: see MakeChannel (the heartbeat benchmark simulates many agents).
  GrpcControllerClient(const std::string& address, const TransportCredentials& transport,
                       absl::Duration deadline, bool own_connection = false);

  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request) override;
  absl::StatusOr<v1::ReportShardsResponse> ReportShards(
      const v1::ReportShardsRequest& request) override;
  // Waits up to half a second for the ack.
  absl::StatusOr<v1::HeartbeatVerdict> Heartbeat(const v1::HeartbeatDatagram& beat,
                                                 absl::string_view key, uint16_t port) override;
  absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest& request) override;

 private:
  template <typename Request, typename Response, typename Method>
  absl::StatusOr<Response> Call(Method method, const Request& request);

  // The controller's IPv4 address (its host name resolved once) and a socket on an ephemeral
  // port, made at the first heartbeat.
  absl::Status PrepareHeartbeats();

  const std::string host_;
  std::unique_ptr<v1::Controller::Stub> stub_;
  const absl::Duration deadline_;
  std::string controller_ip_;
  std::optional<UdpSocket> udp_;
};

}  // namespace fleet::agent
