// A ControllerClient for unit tests: records calls, answers from queued results.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "agent/session/controller_client.h"

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
    if (without_heartbeat_session) return response;
    response.set_heartbeat_port(7100);
    response.set_heartbeat_session(1000 + registers.size());
    response.set_heartbeat_key(std::string(32, static_cast<char>('a' + registers.size())));
    return response;
  }
  absl::StatusOr<v1::ReportShardsResponse> ReportShards(
      const v1::ReportShardsRequest& request) override {
    reports.push_back(request);
    if (!report_results.empty()) {
      absl::StatusOr<v1::ReportShardsResponse> r = report_results.front();
      report_results.pop_front();
      return r;
    }
    return v1::ReportShardsResponse();
  }
  absl::StatusOr<v1::HeartbeatVerdict> Heartbeat(const v1::HeartbeatDatagram& beat,
                                                 absl::string_view key, uint16_t port) override {
    heartbeats.push_back(beat);
    heartbeat_keys.emplace_back(key);
    heartbeat_ports.push_back(port);
    if (heartbeat_results.empty()) return v1::HEARTBEAT_VERDICT_OK;
    // Status and value apart: copying a StatusOr of an enum trips GCC 12's
    // -Wmaybe-uninitialized.
    absl::Status st = heartbeat_results.front().status();
    v1::HeartbeatVerdict verdict = st.ok() ? *heartbeat_results.front() : v1::HeartbeatVerdict();
    heartbeat_results.pop_front();
    if (!st.ok()) return st;
    return verdict;
  }

  absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest&) override {
    return absl::UnimplementedError("the fake controller issues no certificates");
  }

  // Register answers with port 7100, session 1000 + n and a key of 32 times 'a' + n, for the
  // n-th registration.
  uint32_t heartbeat_period_ms = 1000;
  bool without_heartbeat_session = false;    // answer Register as an older controller would
  std::deque<absl::Status> register_errors;  // consumed one per Register
  std::deque<absl::StatusOr<v1::ReportShardsResponse>> report_results;
  std::deque<absl::StatusOr<v1::HeartbeatVerdict>> heartbeat_results;
  std::vector<v1::RegisterRequest> registers;
  std::vector<v1::ReportShardsRequest> reports;
  std::vector<v1::HeartbeatDatagram> heartbeats;
  std::vector<std::string> heartbeat_keys;
  std::vector<uint16_t> heartbeat_ports;
};

}  // namespace fleet::agent
