// RdmaEndpoints: the agent's side of RDMA fabric tests. It keeps the test ends in flight by test
// id between the controller's four calls (prepare, connect, run, finish) and runs the
// responder's pong loop on a thread of its own. Plain class: the Agent gRPC service calls it on
// its fabric executor.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/fabric/rdma_bandwidth.h"
#include "agent/fabric/verbs_device.h"
#include "common/clock.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::agent {

// Example:
//   RdmaEndpoints rdma(&verbs_devices, RealClock::Get());
//   ASSIGN_OR_RETURN(v1::RdmaEndpoint mine, rdma.Prepare(request));
class RdmaEndpoints {
 public:
  // `devices` and `clock` must outlive this object.
  RdmaEndpoints(VerbsDevices* devices, const Clock* clock, RdmaEngineOptions options = {})
      : devices_(devices), clock_(clock), options_(options) {}
  ~RdmaEndpoints();  // stops every pong loop and frees every test

  // Prepares one end. AlreadyExists for a test id in flight; ResourceExhausted when 8 test ends
  // are held here (a port of two devices takes two; the controller runs one test per node at a
  // time). Ends older than their duration plus 30 s are freed first.
  absl::StatusOr<v1::RdmaEndpoint> Prepare(const v1::RdmaPrepareRequest& request);
  // The responder: connects and starts answering pings. NotFound for an unknown test id.
  absl::Status Connect(const v1::RdmaConnectRequest& request);
  // The requester: connects and runs; blocking for the test's duration and its pings.
  absl::StatusOr<v1::RdmaRunResponse> Run(const v1::RdmaRunRequest& request);
  // Frees a test (stopping its pong loop). OK for an unknown id: a retried finish is harmless.
  absl::Status Finish(const v1::RdmaFinishRequest& request);

  int in_flight() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(tests_.size());
  }

 private:
  struct Test {
    ~Test();  // stops and joins the pong loop before the end is freed
    std::unique_ptr<RdmaTestEnd> end;
    absl::Time expires;
    std::atomic<bool> stop{false};
    std::thread pongs;
    bool busy = false;  // a Connect or Run holds it
  };
  // The test, marked busy; NotFound or FailedPrecondition (busy) otherwise.
  absl::StatusOr<std::shared_ptr<Test>> Take(const std::string& test_id);
  void Release(const std::shared_ptr<Test>& test);

  VerbsDevices* const devices_;
  const Clock* const clock_;
  const RdmaEngineOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Test>> tests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
