// FakeFabricAgentClient: answers TCP fabric calls from a table of bandwidths per (from, to) and
// records the order of calls, so tests can check who was tested with whom and when. RDMA calls
// go to the handlers a test sets (e.g. agent::RdmaEndpoints on a fake verbs device, one per
// agent address); unset, they answer Unimplemented.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "controller/fabric/fabric_agent_client.h"

namespace fleet::controller {

class FakeFabricAgentClient final : public FabricAgentClient {
 public:
  absl::StatusOr<v1::FabricListenResponse> Listen(const std::string& address, const std::string&,
                                                  const v1::FabricListenRequest& request,
                                                  absl::Duration) override {
    absl::MutexLock lock(&mu_);
    listens.push_back({address, request});
    v1::FabricListenResponse response;
    response.set_port(40000 + static_cast<uint32_t>(listens.size()));
    return response;
  }
  // Answers with bandwidth[{from agent address, target ip}], or Unavailable when not listed.
  absl::StatusOr<v1::FabricSendResponse> Send(const std::string& address, const std::string&,
                                              const v1::FabricSendRequest& request,
                                              absl::Duration) override {
    absl::MutexLock lock(&mu_);
    sends.push_back({address, request});
    std::string target_ip = request.target().substr(0, request.target().rfind(':'));
    auto it = bandwidth.find({request.source_ip(), target_ip});
    if (it == bandwidth.end()) {
      return absl::UnavailableError(
          absl::StrCat("connect to the receiver at ", request.target(), ": Connection refused"));
    }
    v1::FabricSendResponse response;
    response.set_bandwidth_gbps(it->second);
    response.set_seconds(request.spec().duration_ms() / 1000.0);
    response.set_streams(request.spec().streams());
    return response;
  }

  template <typename Request, typename Response>
  using Handler =
      std::function<absl::StatusOr<Response>(const std::string& address, const Request& request)>;
  absl::StatusOr<v1::RdmaPrepareResponse> RdmaPrepare(const std::string& address,
                                                      const std::string&,
                                                      const v1::RdmaPrepareRequest& request,
                                                      absl::Duration) override {
    Record(address, "prepare", request.device());
    return Dispatch(rdma_prepare, address, request);
  }
  absl::StatusOr<v1::RdmaConnectResponse> RdmaConnect(const std::string& address,
                                                      const std::string&,
                                                      const v1::RdmaConnectRequest& request,
                                                      absl::Duration) override {
    Record(address, "connect", request.peer().device());
    return Dispatch(rdma_connect, address, request);
  }
  absl::StatusOr<v1::RdmaRunResponse> RdmaRun(const std::string& address, const std::string&,
                                              const v1::RdmaRunRequest& request,
                                              absl::Duration) override {
    Record(address, "run", request.peer().device());
    return Dispatch(rdma_run, address, request);
  }
  absl::StatusOr<v1::RdmaFinishResponse> RdmaFinish(const std::string& address, const std::string&,
                                                    const v1::RdmaFinishRequest& request,
                                                    absl::Duration) override {
    Record(address, "finish", request.test_id());
    return Dispatch(rdma_finish, address, request);
  }

  Handler<v1::RdmaPrepareRequest, v1::RdmaPrepareResponse> rdma_prepare;
  Handler<v1::RdmaConnectRequest, v1::RdmaConnectResponse> rdma_connect;
  Handler<v1::RdmaRunRequest, v1::RdmaRunResponse> rdma_run;
  Handler<v1::RdmaFinishRequest, v1::RdmaFinishResponse> rdma_finish;
  // "ADDRESS CALL DETAIL" for every RDMA call, in order.
  std::vector<std::string> rdma_calls;

  std::map<std::pair<std::string, std::string>, double> bandwidth;  // {from ip, to ip} → Gb/s
  std::vector<std::pair<std::string, v1::FabricListenRequest>> listens;
  std::vector<std::pair<std::string, v1::FabricSendRequest>> sends;

 private:
  void Record(const std::string& address, const char* call, const std::string& detail) {
    absl::MutexLock lock(&mu_);
    rdma_calls.push_back(absl::StrCat(address, " ", call, " ", detail));
  }
  template <typename Request, typename Response>
  static absl::StatusOr<Response> Dispatch(const Handler<Request, Response>& handler,
                                           const std::string& address, const Request& request) {
    if (!handler) return absl::UnimplementedError("this fake agent runs no RDMA tests");
    return handler(address, request);
  }

  absl::Mutex mu_;
};

}  // namespace fleet::controller
