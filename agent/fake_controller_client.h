// A ControllerClient for unit tests: records calls, answers from queued results.
#pragma once

#include <deque>
#include <vector>

#include "agent/controller_client.h"

namespace fleet::agent {

class FakeControllerClient final : public ControllerClient {
 public:
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request) override {
    registers.push_back(request);
    if (!register_errors.empty()) {
      absl::Status st = register_errors.front();
      register_errors.pop_front();
      return st;
    }
    v1::RegisterResponse response;
    response.set_heartbeat_period_ms(heartbeat_period_ms);
    return response;
  }
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request) override {
    heartbeats.push_back(request);
    if (!heartbeat_results.empty()) {
      absl::StatusOr<v1::HeartbeatResponse> r = heartbeat_results.front();
      heartbeat_results.pop_front();
      return r;
    }
    return v1::HeartbeatResponse();
  }

  absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest&) override {
    return absl::UnimplementedError("the fake controller issues no certificates");
  }

  uint32_t heartbeat_period_ms = 1000;
  std::deque<absl::Status> register_errors;  // consumed one per Register
  std::deque<absl::StatusOr<v1::HeartbeatResponse>> heartbeat_results;
  std::vector<v1::RegisterRequest> registers;
  std::vector<v1::HeartbeatRequest> heartbeats;
};

}  // namespace fleet::agent
