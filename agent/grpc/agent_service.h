// The Agent gRPC service: what the controller may ask of this node.
#pragma once

#include <string>

#include "agent/fabric/fabric_endpoints.h"
#include "agent/fabric/rdma_endpoints.h"
#include "agent/health/health_collector.h"
#include "agent/router/router_admin.h"
#include "agent/shards/supervisor.h"
#include "agent/stage/image_stager.h"
#include "agent/stage/stage_endpoints.h"
#include "common/executor.h"
#include "common/serial_queue.h"
#include "fleet/v1/agent.grpc.pb.h"

namespace fleet::agent {

// Where the service's blocking work runs; a reactor thread only reads memory.
struct AgentExecutors {
  // Shard orders (a stop waits for grace periods), one group's in order, groups in parallel.
  Executor* shards;
  // Probes (a first model hash takes minutes).
  Executor* probes;
  // Files: node facts from /proc and /sys on Describe, shard logs (up to 4 MiB a call).
  Executor* reads;
  // Fabric tests (a sender runs for the test's duration).
  Executor* fabric = nullptr;
  // Staging: scans (hashing), prepares, a send and a finish block for a whole transfer.
  Executor* stage = nullptr;
};

// Every call needs the controller's certificate.
class AgentService final : public v1::Agent::CallbackService {
 public:
  // `facts` are re-read on every Describe from `root`. Shard orders go to `supervisor`.
  // Probes read model hashes from (and add them to) the stage manifest cache `probe_cache_dir`
  // and report `paths`. Every shard started gets `controller` in its environment
  // (WithControllerAccess), so fleet-engine ranks can reach the rendezvous store. Router
  // commands go to `router` (it must outlive the service); staging orders go to `stage`, image
  // staging orders to `images`, RDMA fabric tests to `rdma` (null: answered UNIMPLEMENTED),
  // health looks to `health` (null: UNIMPLEMENTED).
  AgentService(v1::NodeIdentity identity, std::string root, Supervisor* supervisor,
               AgentExecutors executors, std::string probe_cache_dir, v1::AgentPaths paths,
               ControllerAccess controller, RouterAdmin* router, StageEndpoints* stage = nullptr,
               ImageStager* images = nullptr, RdmaEndpoints* rdma = nullptr,
               HealthCollector* health = nullptr)
      : identity_(std::move(identity)),
        root_(std::move(root)),
        supervisor_(supervisor),
        executors_(executors),
        shard_orders_(executors.shards),
        probe_cache_dir_(std::move(probe_cache_dir)),
        paths_(std::move(paths)),
        controller_(std::move(controller)),
        router_(router),
        stage_(stage),
        images_(images),
        rdma_(rdma),
        health_(health) {}

  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* context,
                                     const v1::DescribeRequest* request,
                                     v1::DescribeResponse* response) override;
  grpc::ServerUnaryReactor* StartShard(grpc::CallbackServerContext* context,
                                       const v1::StartShardRequest* request,
                                       v1::StartShardResponse* response) override;
  grpc::ServerUnaryReactor* StopShards(grpc::CallbackServerContext* context,
                                       const v1::StopShardsRequest* request,
                                       v1::StopShardsResponse* response) override;
  grpc::ServerUnaryReactor* ListShards(grpc::CallbackServerContext* context,
                                       const v1::ListShardsRequest* request,
                                       v1::ListShardsResponse* response) override;
  grpc::ServerUnaryReactor* ReadShardLog(grpc::CallbackServerContext* context,
                                         const v1::ReadShardLogRequest* request,
                                         v1::ReadShardLogResponse* response) override;
  grpc::ServerUnaryReactor* Probe(grpc::CallbackServerContext* context,
                                  const v1::ProbeRequest* request,
                                  v1::NodeProbe* response) override;
  grpc::ServerUnaryReactor* FabricListen(grpc::CallbackServerContext* context,
                                         const v1::FabricListenRequest* request,
                                         v1::FabricListenResponse* response) override;
  grpc::ServerUnaryReactor* FabricSend(grpc::CallbackServerContext* context,
                                       const v1::FabricSendRequest* request,
                                       v1::FabricSendResponse* response) override;
  grpc::ServerUnaryReactor* StageScan(grpc::CallbackServerContext* context,
                                      const v1::StageScanRequest* request,
                                      v1::StageScanResponse* response) override;
  grpc::ServerUnaryReactor* StagePrepare(grpc::CallbackServerContext* context,
                                         const v1::StagePrepareRequest* request,
                                         v1::StagePrepareResponse* response) override;
  grpc::ServerUnaryReactor* StageSend(grpc::CallbackServerContext* context,
                                      const v1::StageSendRequest* request,
                                      v1::StageSendResponse* response) override;
  grpc::ServerUnaryReactor* StageFinish(grpc::CallbackServerContext* context,
                                        const v1::StageFinishRequest* request,
                                        v1::StageFinishResponse* response) override;
  grpc::ServerUnaryReactor* RouterCommand(grpc::CallbackServerContext* context,
                                          const v1::RouterCommandRequest* request,
                                          v1::RouterCommandResponse* response) override;
  grpc::ServerUnaryReactor* StageImageInspect(grpc::CallbackServerContext* context,
                                              const v1::StageImageInspectRequest* request,
                                              v1::StageImageInspectResponse* response) override;
  grpc::ServerUnaryReactor* StageImageReceive(grpc::CallbackServerContext* context,
                                              const v1::StageImageReceiveRequest* request,
                                              v1::StageImageReceiveResponse* response) override;
  grpc::ServerUnaryReactor* StageImageSend(grpc::CallbackServerContext* context,
                                           const v1::StageImageSendRequest* request,
                                           v1::StageSendResponse* response) override;
  grpc::ServerUnaryReactor* StageImageFinish(grpc::CallbackServerContext* context,
                                             const v1::StageFinishRequest* request,
                                             v1::StageImageFinishResponse* response) override;
  grpc::ServerUnaryReactor* RdmaPrepare(grpc::CallbackServerContext* context,
                                        const v1::RdmaPrepareRequest* request,
                                        v1::RdmaPrepareResponse* response) override;
  grpc::ServerUnaryReactor* RdmaConnect(grpc::CallbackServerContext* context,
                                        const v1::RdmaConnectRequest* request,
                                        v1::RdmaConnectResponse* response) override;
  grpc::ServerUnaryReactor* RdmaRun(grpc::CallbackServerContext* context,
                                    const v1::RdmaRunRequest* request,
                                    v1::RdmaRunResponse* response) override;
  grpc::ServerUnaryReactor* RdmaFinish(grpc::CallbackServerContext* context,
                                       const v1::RdmaFinishRequest* request,
                                       v1::RdmaFinishResponse* response) override;
  grpc::ServerUnaryReactor* CollectHealth(grpc::CallbackServerContext* context,
                                          const v1::CollectHealthRequest* request,
                                          v1::NodeHealthSample* response) override;

 private:
  template <typename Response, typename Call>
  grpc::ServerUnaryReactor* OnStage(grpc::CallbackServerContext* context, Executor* executor,
                                    Response* response, Call call);
  template <typename Response, typename Call>
  grpc::ServerUnaryReactor* OnRdma(grpc::CallbackServerContext* context, Response* response,
                                   Call call);

  const v1::NodeIdentity identity_;
  const std::string root_;
  Supervisor* const supervisor_;
  const AgentExecutors executors_;
  SerialQueue shard_orders_;  // keyed by group
  const std::string probe_cache_dir_;
  const v1::AgentPaths paths_;  // reported with every probe
  const ControllerAccess controller_;
  RouterAdmin* const router_;
  FabricEndpoints fabric_;
  StageEndpoints* const stage_;
  ImageStager* const images_;
  RdmaEndpoints* const rdma_;
  HealthCollector* const health_;
};

}  // namespace fleet::agent
