// ControllerClient over gRPC with a per-call deadline.
#pragma once

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "agent/controller_client.h"
#include "common/transport.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::agent {

class GrpcControllerClient final : public ControllerClient {
 public:
  // `own_connection`: see MakeChannel (the heartbeat benchmark simulates many agents).
  GrpcControllerClient(const std::string& address, const TransportCredentials& transport,
                       absl::Duration deadline, bool own_connection = false);

  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request) override;
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request) override;
  absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest& request) override;

 private:
  template <typename Request, typename Response, typename Method>
  absl::StatusOr<Response> Call(Method method, const Request& request);

  std::unique_ptr<v1::Controller::Stub> stub_;
  const absl::Duration deadline_;
};

}  // namespace fleet::agent
