// FakeFabricAgentClient: answers fabric calls from a table of bandwidths per (from, to) and
// records the order of calls, so tests can check who was tested with whom and when.
#pragma once

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

  std::map<std::pair<std::string, std::string>, double> bandwidth;  // {from ip, to ip} → Gb/s
  std::vector<std::pair<std::string, v1::FabricListenRequest>> listens;
  std::vector<std::pair<std::string, v1::FabricSendRequest>> sends;

 private:
  absl::Mutex mu_;
};

}  // namespace fleet::controller
