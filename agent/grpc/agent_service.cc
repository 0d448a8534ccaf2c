// The Agent gRPC service.
#include "agent/grpc/agent_service.h"

#include "absl/strings/str_cat.h"
#include "agent/probes/node_facts.h"
#include "agent/probes/probe_all.h"
#include "common/grpc_status.h"
#include "common/peer.h"
#include "common/status_macros.h"
#include "common/version.h"

namespace fleet::agent {

namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& st) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(st));
  return reactor;
}

// Only the controller may ask anything of an agent: engine processes start on its orders only.
absl::Status RequireController(grpc::CallbackServerContext* context) {
  return RequireRole(PeerFromAuthContext(*context->auth_context()), Peer::Role::kController);
}

}  // namespace

grpc::ServerUnaryReactor* AgentService::Describe(grpc::CallbackServerContext* context,
                                                 const v1::DescribeRequest* request,
                                                 v1::DescribeResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!request->node_id().empty() && request->node_id() != identity_.node_id()) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("this address is node ", identity_.name(), " (", identity_.node_id(),
                     "), not ", request->node_id(), "; check the agents' --advertise addresses")));
    return reactor;
  }
  // The facts are read from /proc and /sys.
  executors_.reads->Post([this, reactor, response] {
    *response->mutable_identity() = identity_;
    response->set_agent_version(kVersion);
    *response->mutable_facts() = ReadNodeFacts(root_);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::StartShard(grpc::CallbackServerContext* context,
                                                   const v1::StartShardRequest* request,
                                                   v1::StartShardResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // A start first stops older generations of the group, which waits for their grace period.
  shard_orders_.Post(request->spec().group(), [this, reactor, request, response] {
    absl::StatusOr<v1::ShardStatus> status =
        supervisor_->Start(WithControllerAccess(request->spec(), controller_));
    if (status.ok()) *response->mutable_status() = *std::move(status);
    reactor->Finish(ToGrpc(status.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::StopShards(grpc::CallbackServerContext* context,
                                                   const v1::StopShardsRequest* request,
                                                   v1::StopShardsResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  if (request->group().empty()) {
    return Finish(context, absl::InvalidArgumentError("StopShards needs a group name"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  shard_orders_.Post(request->group(), [this, reactor, request, response] {
    absl::StatusOr<std::vector<v1::ShardStatus>> stopped =
        supervisor_->Stop(request->group(), request->up_to_generation());
    if (stopped.ok()) {
      for (v1::ShardStatus& s : *stopped) *response->add_stopped() = std::move(s);
    }
    reactor->Finish(ToGrpc(stopped.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::ListShards(grpc::CallbackServerContext* context,
                                                   const v1::ListShardsRequest*,
                                                   v1::ListShardsResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  for (v1::ShardStatus& s : supervisor_->List()) *response->add_shards() = std::move(s);
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* AgentService::ReadShardLog(grpc::CallbackServerContext* context,
                                                     const v1::ReadShardLogRequest* request,
                                                     v1::ReadShardLogResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executors_.reads->Post([this, reactor, request, response] {
    constexpr uint32_t kDefaultMaxBytes = 1 << 20;
    absl::StatusOr<LogChunk> chunk = supervisor_->ReadLog(
        request->group(), request->rank(),
        request->has_offset() ? std::optional<uint64_t>(request->offset()) : std::nullopt,
        static_cast<int>(request->tail_lines()),
        request->max_bytes() == 0 ? kDefaultMaxBytes : std::min(request->max_bytes(), 4u << 20));
    if (chunk.ok()) {
      response->set_data(std::move(chunk->data));
      response->set_start_offset(chunk->start_offset);
      response->set_next_offset(chunk->next_offset);
      response->set_truncated(chunk->truncated);
    }
    reactor->Finish(ToGrpc(chunk.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::Probe(grpc::CallbackServerContext* context,
                                              const v1::ProbeRequest* request,
                                              v1::NodeProbe* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executors_.probes->Post([this, reactor, request, response] {
    *response = RunProbes({.root = root_,
                           .live = root_ == "/",
                           .node_name = identity_.name(),
                           .cache_dir = probe_cache_dir_,
                           .request = *request,
                           .agent = paths_});
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::FabricListen(grpc::CallbackServerContext* context,
                                                     const v1::FabricListenRequest* request,
                                                     v1::FabricListenResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executors_.fabric->Post([this, reactor, request, response] {
    absl::StatusOr<uint16_t> port = fabric_.Listen(*request);
    if (port.ok()) response->set_port(*port);
    reactor->Finish(ToGrpc(port.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::FabricSend(grpc::CallbackServerContext* context,
                                                   const v1::FabricSendRequest* request,
                                                   v1::FabricSendResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executors_.fabric->Post([this, reactor, request, response] {
    absl::StatusOr<v1::FabricSendResponse> sent = fabric_.Send(*request);
    if (sent.ok()) *response = *std::move(sent);
    reactor->Finish(ToGrpc(sent.status()));
  });
  return reactor;
}

// RDMA fabric tests run on the fabric executor: a Run blocks for the test's duration.
grpc::ServerUnaryReactor* AgentService::RdmaPrepare(grpc::CallbackServerContext* context,
                                                    const v1::RdmaPrepareRequest* request,
                                                    v1::RdmaPrepareResponse* response) {
  return OnRdma(context, response, [this, request]() -> absl::StatusOr<v1::RdmaPrepareResponse> {
    ASSIGN_OR_RETURN(v1::RdmaEndpoint endpoint, rdma_->Prepare(*request));
    v1::RdmaPrepareResponse prepared;
    *prepared.mutable_endpoint() = std::move(endpoint);
    return prepared;
  });
}

grpc::ServerUnaryReactor* AgentService::RdmaConnect(grpc::CallbackServerContext* context,
                                                    const v1::RdmaConnectRequest* request,
                                                    v1::RdmaConnectResponse* response) {
  return OnRdma(context, response, [this, request]() -> absl::StatusOr<v1::RdmaConnectResponse> {
    RETURN_IF_ERROR(rdma_->Connect(*request));
    return v1::RdmaConnectResponse();
  });
}

grpc::ServerUnaryReactor* AgentService::RdmaRun(grpc::CallbackServerContext* context,
                                                const v1::RdmaRunRequest* request,
                                                v1::RdmaRunResponse* response) {
  return OnRdma(context, response, [this, request] { return rdma_->Run(*request); });
}

grpc::ServerUnaryReactor* AgentService::RdmaFinish(grpc::CallbackServerContext* context,
                                                   const v1::RdmaFinishRequest* request,
                                                   v1::RdmaFinishResponse* response) {
  return OnRdma(context, response, [this, request]() -> absl::StatusOr<v1::RdmaFinishResponse> {
    RETURN_IF_ERROR(rdma_->Finish(*request));
    return v1::RdmaFinishResponse();
  });
}

template <typename Response, typename Call>
grpc::ServerUnaryReactor* AgentService::OnRdma(grpc::CallbackServerContext* context,
                                               Response* response, Call call) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  if (rdma_ == nullptr || executors_.fabric == nullptr) {
    return Finish(context, absl::UnimplementedError("this agent does not run RDMA tests"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executors_.fabric->Post([reactor, response, call = std::move(call)] {
    absl::StatusOr<Response> result = call();
    if (result.ok()) *response = *std::move(result);
    reactor->Finish(ToGrpc(result.status()));
  });
  return reactor;
}

// Staging calls run on the stage executor (a send or a finish blocks for a whole transfer);
// progress polls only read counters, on the reads executor.
template <typename Response, typename Call>
grpc::ServerUnaryReactor* AgentService::OnStage(grpc::CallbackServerContext* context,
                                                Executor* executor, Response* response, Call call) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  if (stage_ == nullptr || executor == nullptr) {
    return Finish(context, absl::UnimplementedError("this agent does not stage"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executor->Post([reactor, response, call = std::move(call)] {
    absl::StatusOr<Response> result = call();
    if (result.ok()) *response = *std::move(result);
    reactor->Finish(ToGrpc(result.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::RouterCommand(grpc::CallbackServerContext* context,
                                                      const v1::RouterCommandRequest* request,
                                                      v1::RouterCommandResponse* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // A socket round trip per line: off the reactor, behind the router's own start order.
  shard_orders_.Post(request->group(), [this, reactor, request, response] {
    absl::StatusOr<v1::RouterCommandResponse> answer = router_->Run(*request);
    if (answer.ok()) *response = *std::move(answer);
    reactor->Finish(ToGrpc(answer.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* AgentService::StageScan(grpc::CallbackServerContext* context,
                                                  const v1::StageScanRequest* request,
                                                  v1::StageScanResponse* response) {
  // A controller that cancels the run cancels this call: the hashing stops there.
  return OnStage(context, executors_.stage, response, [this, context, request] {
    return stage_->Scan(*request, [context] { return context->IsCancelled(); });
  });
}

grpc::ServerUnaryReactor* AgentService::StagePrepare(grpc::CallbackServerContext* context,
                                                     const v1::StagePrepareRequest* request,
                                                     v1::StagePrepareResponse* response) {
  return OnStage(context, executors_.stage, response,
                 [this, request] { return stage_->Prepare(*request); });
}

grpc::ServerUnaryReactor* AgentService::StageSend(grpc::CallbackServerContext* context,
                                                  const v1::StageSendRequest* request,
                                                  v1::StageSendResponse* response) {
  return OnStage(context, executors_.stage, response,
                 [this, request] { return stage_->Send(*request); });
}

grpc::ServerUnaryReactor* AgentService::StageFinish(grpc::CallbackServerContext* context,
                                                    const v1::StageFinishRequest* request,
                                                    v1::StageFinishResponse* response) {
  // An abort must not queue behind the transfer it ends: the reads executor, like a poll.
  return OnStage(context,
                 request->wait() && !request->abort() ? executors_.stage : executors_.reads,
                 response, [this, request] { return stage_->Finish(*request); });
}

// Image staging: an inspect or a receive's set-up is short, a send or a finish that waits lasts
// the whole transfer; all on the stage executor but progress polls, which read counters.
grpc::ServerUnaryReactor* AgentService::StageImageInspect(
    grpc::CallbackServerContext* context, const v1::StageImageInspectRequest* request,
    v1::StageImageInspectResponse* response) {
  if (images_ == nullptr) return Finish(context, absl::UnimplementedError("no image staging here"));
  return OnStage(context, executors_.stage, response,
                 [this, request] { return images_->Inspect(*request); });
}

grpc::ServerUnaryReactor* AgentService::StageImageReceive(
    grpc::CallbackServerContext* context, const v1::StageImageReceiveRequest* request,
    v1::StageImageReceiveResponse* response) {
  if (images_ == nullptr) return Finish(context, absl::UnimplementedError("no image staging here"));
  return OnStage(context, executors_.stage, response,
                 [this, request] { return images_->Receive(*request); });
}

grpc::ServerUnaryReactor* AgentService::StageImageSend(grpc::CallbackServerContext* context,
                                                       const v1::StageImageSendRequest* request,
                                                       v1::StageSendResponse* response) {
  if (images_ == nullptr) return Finish(context, absl::UnimplementedError("no image staging here"));
  return OnStage(context, executors_.stage, response,
                 [this, request] { return images_->Send(*request); });
}

grpc::ServerUnaryReactor* AgentService::StageImageFinish(grpc::CallbackServerContext* context,
                                                         const v1::StageFinishRequest* request,
                                                         v1::StageImageFinishResponse* response) {
  if (images_ == nullptr) return Finish(context, absl::UnimplementedError("no image staging here"));
  return OnStage(context,
                 request->wait() && !request->abort() ? executors_.stage : executors_.reads,
                 response, [this, request] { return images_->Finish(*request); });
}

// On the reads executor, not the probes one: a health look must not wait behind a model hash.
grpc::ServerUnaryReactor* AgentService::CollectHealth(grpc::CallbackServerContext* context,
                                                      const v1::CollectHealthRequest* request,
                                                      v1::NodeHealthSample* response) {
  if (absl::Status st = RequireController(context); !st.ok()) return Finish(context, st);
  if (health_ == nullptr) {
    return Finish(context, absl::UnimplementedError("this agent does not collect health"));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executors_.reads->Post([this, reactor, request, response] {
    *response = health_->Collect(*request);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace fleet::agent
