// The agent's seam to the controller: an interface, a gRPC implementation
// (controller_client_impl.h) and a fake for tests (fake_controller_client.h).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::agent {

class ControllerClient {
 public:
  virtual ~ControllerClient() = default;
  // Each blocks for at most the implementation's deadline; Unavailable or DeadlineExceeded
  // mean the controller is away and a retry may work.
  virtual absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request) = 0;
  virtual absl::StatusOr<v1::ReportShardsResponse> ReportShards(
      const v1::ReportShardsRequest& request) = 0;
  // Sends one heartbeat datagram, signed with `key`, to the controller's UDP `port` and waits
  // for its ack: the one with the beat's session and sequence, proven by `key` (a REGISTER
  // verdict is unsigned). DeadlineExceeded when none comes in time, naming the port to open.
  virtual absl::StatusOr<v1::HeartbeatVerdict> Heartbeat(const v1::HeartbeatDatagram& beat,
                                                         absl::string_view key, uint16_t port) = 0;
  virtual absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest& request) = 0;
};

}  // namespace fleet::agent
