// RdmaEndpoints: test ends by id, the responder's pong thread, expiry.
#include "agent/fabric/rdma_endpoints.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::agent {

RdmaEndpoints::Test::~Test() {
  stop = true;
  if (pongs.joinable()) pongs.join();
}

RdmaEndpoints::~RdmaEndpoints() {
  std::map<std::string, std::shared_ptr<Test>> tests;
  {
    absl::MutexLock lock(&mu_);
    tests.swap(tests_);
  }
}

absl::StatusOr<v1::RdmaEndpoint> RdmaEndpoints::Prepare(const v1::RdmaPrepareRequest& request) {
  const std::string& id = request.spec().test_id();
  std::vector<std::shared_ptr<Test>> expired;  // freed outside the lock
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto it = tests_.begin(); it != tests_.end();) {
      if (!it->second->busy && it->second->expires <= now) {
        expired.push_back(std::move(it->second));
        it = tests_.erase(it);
      } else {
        ++it;
      }
    }
    if (tests_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat("rdma test ", id, " is prepared here already"));
    }
    if (tests_.size() >= 8) {
      return absl::ResourceExhaustedError(
          "8 rdma test ends are held on this node; wait for them to finish");
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<RdmaTestEnd> end,
                   RdmaTestEnd::Prepare(*devices_, request, clock_, options_));
  auto test = std::make_shared<Test>();
  test->expires = clock_->Now() + absl::Milliseconds(end->spec().duration_ms()) + absl::Seconds(30);
  v1::RdmaEndpoint endpoint = end->endpoint();
  test->end = std::move(end);
  absl::MutexLock lock(&mu_);
  if (!tests_.emplace(id, std::move(test)).second) {
    return absl::AlreadyExistsError(absl::StrCat("rdma test ", id, " is prepared here already"));
  }
  return endpoint;
}

absl::StatusOr<std::shared_ptr<RdmaEndpoints::Test>> RdmaEndpoints::Take(
    const std::string& test_id) {
  absl::MutexLock lock(&mu_);
  auto it = tests_.find(test_id);
  if (it == tests_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "no rdma test ", test_id, " is prepared here (never prepared, finished, or expired)"));
  }
  if (it->second->busy) {
    return absl::FailedPreconditionError(
        absl::StrCat("rdma test ", test_id, " is connecting or running already"));
  }
  it->second->busy = true;
  return it->second;
}

void RdmaEndpoints::Release(const std::shared_ptr<Test>& test) {
  absl::MutexLock lock(&mu_);
  test->busy = false;
}

absl::Status RdmaEndpoints::Connect(const v1::RdmaConnectRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Test> test, Take(request.test_id()));
  absl::Status connected = test->end->Connect(request.peer());
  if (connected.ok() && test->end->spec().latency_iterations() > 0) {
    // The pong loop reads only its own end; Finish (or expiry) stops it before freeing it.
    test->pongs = std::thread([end = test->end.get(), stop = &test->stop, id = request.test_id()] {
      absl::StatusOr<uint32_t> answered = end->ServePongs(*stop);
      if (!answered.ok()) {
        Log(LogLevel::kWarning, "fabric", "rdma pongs ended early",
            {{"test", id}, {"error", answered.status().message()}});
      }
    });
  }
  Release(test);
  return connected;
}

absl::StatusOr<v1::RdmaRunResponse> RdmaEndpoints::Run(const v1::RdmaRunRequest& request) {
  ASSIGN_OR_RETURN(std::shared_ptr<Test> test, Take(request.test_id()));
  absl::StatusOr<v1::RdmaRunResponse> result;
  if (absl::Status connected = test->end->Connect(request.peer()); !connected.ok()) {
    result = connected;
  } else {
    result = test->end->Run();
  }
  Release(test);
  return result;
}

absl::Status RdmaEndpoints::Finish(const v1::RdmaFinishRequest& request) {
  std::shared_ptr<Test> test;
  {
    absl::MutexLock lock(&mu_);
    auto it = tests_.find(request.test_id());
    if (it == tests_.end()) return absl::OkStatus();
    test = std::move(it->second);
    tests_.erase(it);
  }
  // Dropping the last reference stops the pong loop and frees the verbs resources; a Run still
  // holding it frees them when it returns.
  return absl::OkStatus();
}

}  // namespace fleet::agent
