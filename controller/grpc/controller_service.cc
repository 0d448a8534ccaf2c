// The Controller gRPC service.
#include "controller/grpc/controller_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/peer.h"
#include "common/pki.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "controller/groups/health_gather.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::controller {
namespace {

using google::protobuf::util::TimeUtil;

// A health look runs the node's probes (NVML, sysfs, statvfs): well under a second on a node
// that works; an agent that takes longer is listed as not answering.
constexpr absl::Duration kHealthDeadline = absl::Seconds(5);

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& st) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(st));
  return reactor;
}

absl::Status RequireAdmin(grpc::CallbackServerContext* context) {
  return RequireRole(PeerFromAuthContext(*context->auth_context()), Peer::Role::kAdmin);
}

// Runs `work` (returning an absl::Status) on `executor` and finishes the call with it. The
// request and response stay valid until Finish.
template <typename Work>
grpc::ServerUnaryReactor* FinishOn(grpc::CallbackServerContext* context, Executor* executor,
                                   Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  executor->Post(
      [reactor, work = std::move(work)]() mutable { reactor->Finish(ToGrpc(std::move(work)())); });
  return reactor;
}

}  // namespace

v1::TokenInfo TokenView(const v1::StoredToken& t, absl::Time now) {
  v1::TokenInfo info;
  info.set_id(t.id());
  *info.mutable_created_at() = t.created_at();
  if (t.has_expires_at()) *info.mutable_expires_at() = t.expires_at();
  info.set_uses_allowed(t.uses_allowed());
  info.set_uses(t.uses());
  info.set_revoked(t.revoked());
  info.set_description(t.description());
  if (t.revoked()) {
    info.set_status("revoked");
  } else if (t.has_expires_at() && ToProtoTime(now).seconds() >= t.expires_at().seconds()) {
    info.set_status("expired");
  } else if (t.uses_allowed() > 0 && t.uses() >= t.uses_allowed()) {
    info.set_status("used up");
  } else {
    info.set_status("usable");
  }
  return info;
}

absl::Status ControllerService::AuthorizeNode(grpc::CallbackServerContext* context,
                                              absl::string_view node_id) {
  Peer peer = PeerFromAuthContext(*context->auth_context());
  if (absl::Status st = RequireRole(peer, Peer::Role::kNode, node_id); !st.ok()) return st;
  if (d_.registry->IsRevoked(peer.name)) {
    return absl::UnauthenticatedError(
        absl::StrCat("node ", peer.name,
                     "'s certificate was revoked by `fleet node remove`; to join again, "
                     "delete the agent's state directory and give it a new join token"));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ControllerService::Register(grpc::CallbackServerContext* context,
                                                      const v1::RegisterRequest* request,
                                                      v1::RegisterResponse* response) {
  const std::string node_id = request->identity().node_id();
  if (absl::Status st = AuthorizeNode(context, node_id); !st.ok()) return Finish(context, st);
  const uint16_t heartbeat_port = heartbeat_port_.load();
  if (heartbeat_port == 0) {
    return Finish(context, absl::UnavailableError("the controller is starting; retry"));
  }
  // Registering writes the store; the shards it reports may too.
  return FinishOn(context, d_.rpc_executor, [this, request, response, node_id, heartbeat_port] {
    RETURN_IF_ERROR(d_.registry->Register(*request));
    const HeartbeatSession session = d_.heartbeats->Open(node_id, request->shards_version());
    d_.groups->ReportShards(node_id, request->shards());
    response->set_heartbeat_period_ms(
        static_cast<uint32_t>(absl::ToInt64Milliseconds(d_.registry->config().heartbeat_period)));
    response->set_controller_id(d_.controller_id);
    response->set_heartbeat_port(heartbeat_port);
    response->set_heartbeat_session(session.id);
    response->set_heartbeat_key(session.key);
    {
      absl::MutexLock lock(&mu_);
      ++agent_calls_;
    }
    // The answer arrives on a gRPC thread; recording it may write the store.
    d_.agents->Describe(request->advertise_address(), node_id,
                        [this, node_id](absl::StatusOr<v1::DescribeResponse> result) {
                          d_.rpc_executor->Post([this, node_id, status = result.status()] {
                            d_.registry->SetReachability(node_id, status);
                            absl::MutexLock lock(&mu_);
                            --agent_calls_;
                          });
                        });
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::ReportShards(grpc::CallbackServerContext* context,
                                                          const v1::ReportShardsRequest* request,
                                                          v1::ReportShardsResponse* response) {
  if (absl::Status st = AuthorizeNode(context, request->node_id()); !st.ok()) {
    return Finish(context, st);
  }
  // Folding the shards into groups may persist them.
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    absl::Status st = d_.registry->Heartbeat(request->node_id()).status();
    if (absl::IsNotFound(st)) {
      response->set_reregister(true);
      return absl::OkStatus();
    }
    if (st.ok()) {
      d_.groups->ReportShards(request->node_id(), request->shards());
      d_.heartbeats->Reported(request->node_id(), request->shards_version());
    }
    return st;
  });
}

grpc::ServerUnaryReactor* ControllerService::ListNodes(grpc::CallbackServerContext* context,
                                                       const v1::ListNodesRequest*,
                                                       v1::ListNodesResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  std::vector<v1::Node> nodes = d_.registry->List();
  std::sort(nodes.begin(), nodes.end(), [](const v1::Node& a, const v1::Node& b) {
    return a.identity().name() < b.identity().name();
  });
  for (v1::Node& node : nodes) *response->add_nodes() = std::move(node);
  *response->mutable_now() = ToProtoTime(d_.clock->Now());
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::GetClusterInfo(grpc::CallbackServerContext* context,
                                                            const v1::GetClusterInfoRequest*,
                                                            v1::GetClusterInfoResponse* response) {
  // Public by design: a CA certificate is not secret, and the caller pins it by hash.
  response->set_ca_pem(d_.ca->ca_pem());
  response->set_controller_id(d_.controller_id);
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::Join(grpc::CallbackServerContext* context,
                                                  const v1::JoinRequest* request,
                                                  v1::JoinResponse* response) {
  const std::string& node_id = request->identity().node_id();
  if (node_id.empty() || request->identity().name().empty() || request->csr_pem().empty()) {
    return Finish(context, absl::InvalidArgumentError(
                               "a join needs the node's id, name and a certificate request"));
  }
  if (d_.registry->IsRevoked(node_id)) {
    return Finish(context, absl::PermissionDeniedError(
                               absl::StrCat("node ", node_id,
                                            " was removed from this cluster; delete the agent's "
                                            "state directory so it joins as a new node")));
  }
  // Admitting the token writes its use count; then a certificate is signed.
  return FinishOn(context, d_.rpc_executor, [this, request, response, node_id] {
    RETURN_IF_ERROR(d_.tokens->Admit(request->token_id(), request->token_secret()));
    ASSIGN_OR_RETURN(std::string cert, d_.ca->IssueNodeCertificate(request->csr_pem(), node_id));
    response->set_certificate_pem(std::move(cert));
    response->set_ca_pem(d_.ca->ca_pem());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::RenewCertificate(
    grpc::CallbackServerContext* context, const v1::RenewCertificateRequest* request,
    v1::RenewCertificateResponse* response) {
  Peer peer = PeerFromAuthContext(*context->auth_context());
  if (absl::Status st = AuthorizeNode(context, peer.name); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor, [this, request, response, node = peer.name] {
    ASSIGN_OR_RETURN(std::string cert, d_.ca->IssueNodeCertificate(request->csr_pem(), node));
    response->set_certificate_pem(std::move(cert));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::CreateToken(grpc::CallbackServerContext* context,
                                                         const v1::CreateTokenRequest* request,
                                                         v1::CreateTokenResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  absl::Duration ttl = request->has_ttl()
                           ? absl::Nanoseconds(TimeUtil::DurationToNanoseconds(request->ttl()))
                           : absl::InfiniteDuration();
  return FinishOn(context, d_.rpc_executor, [this, request, response, ttl] {
    ASSIGN_OR_RETURN(JoinToken token,
                     d_.tokens->Create(ttl, request->uses(), request->description()));
    response->set_token(token.ToString());
    for (const v1::StoredToken& t : d_.tokens->List()) {
      if (t.id() == token.id) *response->mutable_info() = TokenView(t, d_.clock->Now());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::ListTokens(grpc::CallbackServerContext* context,
                                                        const v1::ListTokensRequest*,
                                                        v1::ListTokensResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  for (const v1::StoredToken& t : d_.tokens->List()) {
    *response->add_tokens() = TokenView(t, d_.clock->Now());
  }
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::RevokeToken(grpc::CallbackServerContext* context,
                                                         const v1::RevokeTokenRequest* request,
                                                         v1::RevokeTokenResponse*) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor,
                  [this, request] { return d_.tokens->Revoke(request->id()); });
}

grpc::ServerUnaryReactor* ControllerService::RemoveNode(grpc::CallbackServerContext* context,
                                                        const v1::RemoveNodeRequest* request,
                                                        v1::RemoveNodeResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(std::string id, d_.registry->Remove(request->name()));
    response->set_node_id(std::move(id));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::Discover(grpc::CallbackServerContext* context,
                                                      const v1::DiscoverRequest* request,
                                                      v1::DiscoverResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // A probe listens for seconds.
  return FinishOn(context, d_.probe_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.prober->Run(*request));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::Apply(grpc::CallbackServerContext* context,
                                                   const v1::ApplyRequest* request,
                                                   v1::ApplyResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  d_.groups->ApplyAsync(
      *request, [this, reactor, response](absl::StatusOr<v1::ApplyResponse> result) {
        if (!result.ok() || result->action() != "rolling") {
          if (result.ok()) *response = *std::move(result);
          reactor->Finish(ToGrpc(result.status()));
          return;
        }
        // A changed recipe over serving replicas: rolled behind their router, on the routers'
        // executor, outside the application's queue that runs the restarts it orders.
        *response = *std::move(result);
        d_.routers->RollAsync(
            response->groups(0).application(),
            [reactor, response](absl::StatusOr<v1::RollGroupResponse> rolled) {
              if (!rolled.ok()) {
                reactor->Finish(ToGrpc(absl::Status(
                    rolled.status().code(),
                    absl::StrCat(
                        "the recipe is applied but its roll stopped: ", rolled.status().message(),
                        ". Replicas not rolled keep the previous revision until their next "
                        "restart; `fleet roll` goes on"))));
                return;
              }
              response->set_action("rolled");
              for (const std::string& step : rolled->steps()) response->add_notes("roll: " + step);
              *response->mutable_groups() = rolled->groups();
              reactor->Finish(grpc::Status::OK);
            });
      });
  return reactor;
}

grpc::ServerUnaryReactor* ControllerService::ListGroups(grpc::CallbackServerContext* context,
                                                        const v1::ListGroupsRequest*,
                                                        v1::ListGroupsResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  for (v1::Group& group : d_.groups->List()) *response->add_groups() = std::move(group);
  *response->mutable_now() = ToProtoTime(d_.clock->Now());
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::GetGroup(grpc::CallbackServerContext* context,
                                                      const v1::GetGroupRequest* request,
                                                      v1::GetGroupResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // The group's events are read back from the store.
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.groups->Get(request->name()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::StopGroup(grpc::CallbackServerContext* context,
                                                       const v1::StopGroupRequest* request,
                                                       v1::StopGroupResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  d_.groups->StopAsync(request->name(),
                       [reactor, response](absl::StatusOr<std::vector<v1::Group>> result) {
                         if (result.ok() && !result->empty()) {
                           *response->mutable_group() = result->front();
                         }
                         reactor->Finish(ToGrpc(result.status()));
                       });
  return reactor;
}

grpc::ServerUnaryReactor* ControllerService::GroupLogs(grpc::CallbackServerContext* context,
                                                       const v1::GroupLogsRequest* request,
                                                       v1::GroupLogsResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.groups->Logs(*request));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::ProbeNode(grpc::CallbackServerContext* context,
                                                       const v1::ProbeNodeRequest* request,
                                                       v1::ProbeNodeResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.probe_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.groups->ProbeNode(request->name(), request->request()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::Preflight(grpc::CallbackServerContext* context,
                                                       const v1::ApplyRequest* request,
                                                       v1::PreflightResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.probe_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.groups->Preflight(*request));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::RunFabric(grpc::CallbackServerContext* context,
                                                       const v1::RunFabricRequest* request,
                                                       v1::RunFabricResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // Tests take their duration per round: a probe thread, never a reactor.
  return FinishOn(context, d_.probe_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.fabric->Run(*request, d_.registry->List()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::FabricHistory(grpc::CallbackServerContext* context,
                                                           const v1::FabricHistoryRequest* request,
                                                           v1::FabricHistoryResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.fabric->History(*request));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::StageModel(grpc::CallbackServerContext* context,
                                                        const v1::StageModelRequest* request,
                                                        v1::StageModelResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // A copy takes minutes to hours: the stage thread, never a reactor or a probe thread.
  return FinishOn(context, d_.stage_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.stage->Run(*request, d_.registry->List()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::StageStatus(grpc::CallbackServerContext* context,
                                                         const v1::StageStatusRequest* request,
                                                         v1::StageStatusResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  (void)request;
  *response = d_.stage->Status();
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControllerService::StageImage(grpc::CallbackServerContext* context,
                                                        const v1::StageImageRequest* request,
                                                        v1::StageImageResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // A save and loads take minutes: the stage thread, like a model copy.
  return FinishOn(context, d_.stage_executor, [this, request, response] {
    ASSIGN_OR_RETURN(*response, d_.stage->RunImage(*request, d_.registry->List()));
    return absl::OkStatus();
  });
}

void ControllerService::WaitForAgentCalls() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* calls) { return *calls == 0; }, &agent_calls_));
}

grpc::ServerUnaryReactor* ControllerService::RestartGroup(grpc::CallbackServerContext* context,
                                                          const v1::RestartGroupRequest* request,
                                                          v1::RestartGroupResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  d_.groups->RestartAsync(request->name(),
                          [reactor, response](absl::StatusOr<std::vector<v1::Group>> result) {
                            if (result.ok()) {
                              for (v1::Group& g : *result) *response->add_groups() = std::move(g);
                            }
                            reactor->Finish(ToGrpc(result.status()));
                          });
  return reactor;
}

grpc::ServerUnaryReactor* ControllerService::ListEvents(grpc::CallbackServerContext* context,
                                                        const v1::ListEventsRequest* request,
                                                        v1::ListEventsResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // Read from the store, off the reactor.
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(std::vector<v1::GroupEventRecord> events,
                     d_.groups->Events(request->name(), request->after_id(),
                                       static_cast<int>(request->limit())));
    for (v1::GroupEventRecord& e : events) *response->add_events() = std::move(e);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::RecordBench(grpc::CallbackServerContext* context,
                                                         const v1::RecordBenchRequest* request,
                                                         v1::RecordBenchResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    absl::StatusOr<v1::GetGroupResponse> group = d_.groups->Get(request->group());
    if (group.ok()) {
      ASSIGN_OR_RETURN(*response->mutable_run(), d_.bench->Record(group->group(), request->run()));
      return absl::OkStatus();
    }
    // A service: the application behind its router, stored under its name with the recipe
    // revision its replicas share.
    for (const v1::Group& g : d_.groups->List()) {
      if (g.application() != request->group()) continue;
      v1::Group service;
      service.set_name(g.application());
      service.set_application(g.application());
      service.set_recipe_name(g.recipe_name());
      service.set_fingerprint(g.fingerprint());
      ASSIGN_OR_RETURN(*response->mutable_run(), d_.bench->Record(service, request->run()));
      return absl::OkStatus();
    }
    return group.status();
  });
}

grpc::ServerUnaryReactor* ControllerService::BenchHistory(grpc::CallbackServerContext* context,
                                                          const v1::BenchHistoryRequest* request,
                                                          v1::BenchHistoryResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(
        std::vector<v1::BenchRun> runs,
        d_.bench->History(request->name(),
                          request->limit() == 0 ? 20 : static_cast<int>(request->limit())));
    for (v1::BenchRun& r : runs) *response->add_runs() = std::move(r);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::ListServices(grpc::CallbackServerContext* context,
                                                          const v1::ListServicesRequest* request,
                                                          v1::ListServicesResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  // It lists the groups, which takes the group manager's lock: off the reactor.
  return FinishOn(context, d_.rpc_executor, [this, request, response] {
    ASSIGN_OR_RETURN(std::vector<v1::Service> services, d_.routers->List(request->name()));
    for (v1::Service& s : services) *response->add_services() = std::move(s);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::RollGroup(grpc::CallbackServerContext* context,
                                                       const v1::RollGroupRequest* request,
                                                       v1::RollGroupResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  d_.routers->RollAsync(request->name(),
                        [reactor, response](absl::StatusOr<v1::RollGroupResponse> result) {
                          if (result.ok()) *response = *std::move(result);
                          reactor->Finish(ToGrpc(result.status()));
                        });
  return reactor;
}

// Every agent is asked at once, each call bounded by kHealthDeadline: a probe thread, never a
// reactor.
grpc::ServerUnaryReactor* ControllerService::Health(grpc::CallbackServerContext* context,
                                                    const v1::HealthRequest* request,
                                                    v1::HealthResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  (void)request;
  return FinishOn(context, d_.probe_executor, [this, response] {
    *response = GatherHealth(*d_.agents, d_.registry->List(), d_.groups->List(), kHealthDeadline);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ControllerService::StageCancel(grpc::CallbackServerContext* context,
                                                         const v1::StageCancelRequest* request,
                                                         v1::StageCancelResponse* response) {
  if (absl::Status st = RequireAdmin(context); !st.ok()) return Finish(context, st);
  (void)request;
  // Not the stage thread: the run being cancelled holds it. The aborts and the wait for the
  // run's end take seconds, so off the reactor.
  return FinishOn(context, d_.rpc_executor, [this, response] {
    ASSIGN_OR_RETURN(*response, d_.stage->Cancel());
    return absl::OkStatus();
  });
}

}  // namespace fleet::controller
