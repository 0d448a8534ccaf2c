// The Controller gRPC service.
#include "controller/controller_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::controller {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& st) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(st));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* ControllerService::Register(grpc::CallbackServerContext* context,
                                                      const v1::RegisterRequest* request,
                                                      v1::RegisterResponse* response) {
  absl::Status st = registry_->Register(*request);
  if (!st.ok()) return Finish(context, st);
  response->set_heartbeat_period_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(registry_->config().heartbeat_period)));
  response->set_controller_id(controller_id_);
  {
    absl::MutexLock lock(&mu_);
    ++agent_calls_;
  }
  const std::string node_id = request->identity().node_id();
  agents_->Describe(request->advertise_address(), node_id,
                    [this, node_id](absl::StatusOr<v1::DescribeResponse> result) {
                      registry_->SetReachability(node_id, result.status());
                      absl::MutexLock lock(&mu_);
                      --agent_calls_;
                    });
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::Heartbeat(grpc::CallbackServerContext* context,
                                                       const v1::HeartbeatRequest* request,
                                                       v1::HeartbeatResponse* response) {
  absl::Status st = registry_->Heartbeat(request->node_id());
  if (absl::IsNotFound(st)) {
    response->set_reregister(true);
    st = absl::OkStatus();
  }
  return Finish(context, st);
}

grpc::ServerUnaryReactor* ControllerService::ListNodes(grpc::CallbackServerContext* context,
                                                       const v1::ListNodesRequest*,
                                                       v1::ListNodesResponse* response) {
  std::vector<v1::Node> nodes = registry_->List();
  std::sort(nodes.begin(), nodes.end(), [](const v1::Node& a, const v1::Node& b) {
    return a.identity().name() < b.identity().name();
  });
  for (v1::Node& node : nodes) *response->add_nodes() = std::move(node);
  *response->mutable_now() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(clock_->Now()));
  return Finish(context, absl::OkStatus());
}

void ControllerService::WaitForAgentCalls() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* calls) { return *calls == 0; }, &agent_calls_));
}

}  // namespace fleet::controller
