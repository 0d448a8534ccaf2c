// FabricEndpoints: receivers by test id, reaped once done.
#include "agent/fabric/fabric_endpoints.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet::agent {

absl::StatusOr<uint16_t> FabricEndpoints::Listen(const v1::FabricListenRequest& request) {
  absl::MutexLock lock(&mu_);
  std::erase_if(receivers_, [](const auto& entry) { return entry.second->done(); });
  if (receivers_.contains(request.spec().test_id())) {
    return absl::AlreadyExistsError(
        absl::StrCat("fabric test ", request.spec().test_id(), " already listens here"));
  }
  if (receivers_.size() >= 4) {
    return absl::ResourceExhaustedError(
        "4 fabric tests already receive on this node; wait for them to end");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TcpReceiver> receiver,
                   TcpReceiver::Open(request.bind_ip(), request.peer_ip(), request.spec()));
  uint16_t port = receiver->port();
  receivers_[request.spec().test_id()] = std::move(receiver);
  return port;
}

absl::StatusOr<v1::FabricSendResponse> FabricEndpoints::Send(const v1::FabricSendRequest& request) {
  return RunTcpSender(request.source_ip(), request.target(), request.spec());
}

}  // namespace fleet::agent
