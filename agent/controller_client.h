// The agent's seam to the controller: an interface, a gRPC implementation
// (controller_client_impl.h) and a fake for tests (fake_controller_client.h).
#pragma once

#include "absl/status/statusor.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::agent {

class ControllerClient {
 public:
  virtual ~ControllerClient() = default;
  // Both block for at most the implementation's deadline; Unavailable or DeadlineExceeded
  // mean the controller is away and a retry may work.
  virtual absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request) = 0;
  virtual absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request) = 0;
  virtual absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest& request) = 0;
};

}  // namespace fleet::agent
