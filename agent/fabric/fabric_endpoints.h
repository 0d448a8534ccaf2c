// FabricEndpoints: the agent's side of fabric tests. It keeps the receivers of tests in flight
// (each closes by itself when its test ends) and runs senders. Plain class: the Agent gRPC
// service calls it on its fabric executor.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/fabric/tcp_bandwidth.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::agent {

class FabricEndpoints {
 public:
  // Opens a receiver for one test; its port. ResourceExhausted when 4 tests are already
  // receiving here (the controller runs one per node at a time), AlreadyExists for a test id
  // in flight.
  absl::StatusOr<uint16_t> Listen(const v1::FabricListenRequest& request);
  // Blocking for the test's duration (plus at most 10 s).
  absl::StatusOr<v1::FabricSendResponse> Send(const v1::FabricSendRequest& request);

 private:
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<TcpReceiver>> receivers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
