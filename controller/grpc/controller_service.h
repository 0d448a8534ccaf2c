// The Controller gRPC service: checks who is calling, then translates RPCs into calls on
// NodeRegistry, HeartbeatSessions, TokenManager, ClusterCa and the discovery prober, and
// nothing more.
//
// A reactor thread only reads memory: whatever writes the store, signs, reads files or waits for
// an agent runs on an executor the composition root owns (`rpc_executor` for short work,
// `probe_executor` for probes that take seconds to minutes), and GroupManager runs applies and
// stops on its own.
//
// Who may call what:
//   GetClusterInfo, Join        anyone (Join proves a join token)
//   Register, ReportShards,     a node certificate, for its own node id, not revoked
//   RenewCertificate
//   everything else             an admin certificate
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/executor.h"
#include "controller/bench/bench_records.h"
#include "controller/discovery/discovery_prober.h"
#include "controller/fabric/fabric_runner.h"
#include "controller/groups/agent_client.h"
#include "controller/groups/group_manager.h"
#include "controller/registry/heartbeat_sessions.h"
#include "controller/registry/node_registry.h"
#include "controller/router/router_manager.h"
#include "controller/stage/stage_runner.h"
#include "controller/trust/cluster_ca.h"
#include "controller/trust/tokens.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::controller {

class ControllerService final : public v1::Controller::CallbackService {
 public:
  struct Deps {
    const Clock* clock;
    NodeRegistry* registry;
    HeartbeatSessions* heartbeats;
    TokenManager* tokens;
    const ClusterCa* ca;
    AgentClient* agents;
    DiscoveryProber* prober;
    // Store writes, certificate signing, events read back, logs fetched from an agent.
    Executor* rpc_executor;
    // Discovery (listens for seconds), node probes and preflights (may hash a model).
    Executor* probe_executor;
    GroupManager* groups;
    std::string controller_id;
    FabricRunner* fabric = nullptr;  // `fleet fabric`
    BenchRecords* bench = nullptr;   // `fleet bench` results
    StageRunner* stage = nullptr;    // `fleet stage`
    // Staging runs, one at a time: each blocks its thread for the whole copy.
    Executor* stage_executor = nullptr;
    RouterManager* routers = nullptr;  // `fleet get services`, `fleet roll`
  };
  explicit ControllerService(Deps deps) : d_(std::move(deps)) {}

  // The UDP port that takes heartbeat datagrams, told to agents when they register. Known only
  // once the gRPC port is bound (the same number); until then Register answers Unavailable and
  // the agent retries.
  void SetHeartbeatPort(uint16_t port) { heartbeat_port_.store(port); }

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* ReportShards(grpc::CallbackServerContext* context,
                                         const v1::ReportShardsRequest* request,
                                         v1::ReportShardsResponse* response) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* context,
                                      const v1::ListNodesRequest* request,
                                      v1::ListNodesResponse* response) override;
  grpc::ServerUnaryReactor* GetClusterInfo(grpc::CallbackServerContext* context,
                                           const v1::GetClusterInfoRequest* request,
                                           v1::GetClusterInfoResponse* response) override;
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const v1::JoinRequest* request,
                                 v1::JoinResponse* response) override;
  grpc::ServerUnaryReactor* RenewCertificate(grpc::CallbackServerContext* context,
                                             const v1::RenewCertificateRequest* request,
                                             v1::RenewCertificateResponse* response) override;
  grpc::ServerUnaryReactor* CreateToken(grpc::CallbackServerContext* context,
                                        const v1::CreateTokenRequest* request,
                                        v1::CreateTokenResponse* response) override;
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* context,
                                       const v1::ListTokensRequest* request,
                                       v1::ListTokensResponse* response) override;
  grpc::ServerUnaryReactor* RevokeToken(grpc::CallbackServerContext* context,
                                        const v1::RevokeTokenRequest* request,
                                        v1::RevokeTokenResponse* response) override;
  grpc::ServerUnaryReactor* RemoveNode(grpc::CallbackServerContext* context,
                                       const v1::RemoveNodeRequest* request,
                                       v1::RemoveNodeResponse* response) override;
  grpc::ServerUnaryReactor* Discover(grpc::CallbackServerContext* context,
                                     const v1::DiscoverRequest* request,
                                     v1::DiscoverResponse* response) override;
  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* context,
                                  const v1::ApplyRequest* request,
                                  v1::ApplyResponse* response) override;
  grpc::ServerUnaryReactor* ListGroups(grpc::CallbackServerContext* context,
                                       const v1::ListGroupsRequest* request,
                                       v1::ListGroupsResponse* response) override;
  grpc::ServerUnaryReactor* GetGroup(grpc::CallbackServerContext* context,
                                     const v1::GetGroupRequest* request,
                                     v1::GetGroupResponse* response) override;
  grpc::ServerUnaryReactor* StopGroup(grpc::CallbackServerContext* context,
                                      const v1::StopGroupRequest* request,
                                      v1::StopGroupResponse* response) override;
  grpc::ServerUnaryReactor* GroupLogs(grpc::CallbackServerContext* context,
                                      const v1::GroupLogsRequest* request,
                                      v1::GroupLogsResponse* response) override;
  grpc::ServerUnaryReactor* RestartGroup(grpc::CallbackServerContext* context,
                                         const v1::RestartGroupRequest* request,
                                         v1::RestartGroupResponse* response) override;
  grpc::ServerUnaryReactor* ListEvents(grpc::CallbackServerContext* context,
                                       const v1::ListEventsRequest* request,
                                       v1::ListEventsResponse* response) override;
  grpc::ServerUnaryReactor* RecordBench(grpc::CallbackServerContext* context,
                                        const v1::RecordBenchRequest* request,
                                        v1::RecordBenchResponse* response) override;
  grpc::ServerUnaryReactor* BenchHistory(grpc::CallbackServerContext* context,
                                         const v1::BenchHistoryRequest* request,
                                         v1::BenchHistoryResponse* response) override;
  grpc::ServerUnaryReactor* ListServices(grpc::CallbackServerContext* context,
                                         const v1::ListServicesRequest* request,
                                         v1::ListServicesResponse* response) override;
  grpc::ServerUnaryReactor* RollGroup(grpc::CallbackServerContext* context,
                                      const v1::RollGroupRequest* request,
                                      v1::RollGroupResponse* response) override;
  grpc::ServerUnaryReactor* ProbeNode(grpc::CallbackServerContext* context,
                                      const v1::ProbeNodeRequest* request,
                                      v1::ProbeNodeResponse* response) override;
  grpc::ServerUnaryReactor* Preflight(grpc::CallbackServerContext* context,
                                      const v1::ApplyRequest* request,
                                      v1::PreflightResponse* response) override;
  grpc::ServerUnaryReactor* RunFabric(grpc::CallbackServerContext* context,
                                      const v1::RunFabricRequest* request,
                                      v1::RunFabricResponse* response) override;
  grpc::ServerUnaryReactor* FabricHistory(grpc::CallbackServerContext* context,
                                          const v1::FabricHistoryRequest* request,
                                          v1::FabricHistoryResponse* response) override;
  grpc::ServerUnaryReactor* StageModel(grpc::CallbackServerContext* context,
                                       const v1::StageModelRequest* request,
                                       v1::StageModelResponse* response) override;
  grpc::ServerUnaryReactor* StageStatus(grpc::CallbackServerContext* context,
                                        const v1::StageStatusRequest* request,
                                        v1::StageStatusResponse* response) override;
  grpc::ServerUnaryReactor* StageImage(grpc::CallbackServerContext* context,
                                       const v1::StageImageRequest* request,
                                       v1::StageImageResponse* response) override;
  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* context,
                                   const v1::HealthRequest* request,
                                   v1::HealthResponse* response) override;
  grpc::ServerUnaryReactor* StageCancel(grpc::CallbackServerContext* context,
                                        const v1::StageCancelRequest* request,
                                        v1::StageCancelResponse* response) override;

  // Blocks until every call-back to an agent started by Register has finished (each has a
  // deadline), so the registry can be destroyed safely.
  void WaitForAgentCalls();

 private:
  // OK when the caller holds an unrevoked node certificate for `node_id`; else the Status to
  // answer with (Unauthenticated, PermissionDenied).
  absl::Status AuthorizeNode(grpc::CallbackServerContext* context, absl::string_view node_id);

  const Deps d_;
  std::atomic<uint16_t> heartbeat_port_{0};
  absl::Mutex mu_;
  int agent_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// The operator's view of a stored token: never its secret or hashes.
v1::TokenInfo TokenView(const v1::StoredToken& token, absl::Time now);

}  // namespace fleet::controller
