// AgentClient over gRPC, one channel per agent address, every call with a deadline.
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/transport.h"
#include "controller/groups/agent_client.h"
#include "fleet/v1/agent.grpc.pb.h"

namespace fleet::controller {

class GrpcAgentClient final : public AgentClient {
 public:
  GrpcAgentClient(std::shared_ptr<TransportCredentials> transport, absl::Duration deadline)
      : transport_(std::move(transport)), deadline_(deadline) {}

  void Describe(const std::string& address, const std::string& node_id,
                DescribeCallback done) override;
  absl::StatusOr<v1::StartShardResponse> StartShard(const std::string& address,
                                                    const std::string& node_id,
                                                    const v1::StartShardRequest& request,
                                                    absl::Duration deadline) override;
  absl::StatusOr<v1::StopShardsResponse> StopShards(const std::string& address,
                                                    const std::string& node_id,
                                                    const v1::StopShardsRequest& request,
                                                    absl::Duration deadline) override;
  absl::StatusOr<v1::ReadShardLogResponse> ReadShardLog(const std::string& address,
                                                        const std::string& node_id,
                                                        const v1::ReadShardLogRequest& request,
                                                        absl::Duration deadline) override;
  absl::StatusOr<v1::NodeProbe> Probe(const std::string& address, const std::string& node_id,
                                      const v1::ProbeRequest& request,
                                      absl::Duration deadline) override;
  absl::StatusOr<v1::RouterCommandResponse> RouterCommand(const std::string& address,
                                                          const std::string& node_id,
                                                          const v1::RouterCommandRequest& request,
                                                          absl::Duration deadline) override;
  absl::StatusOr<v1::NodeHealthSample> CollectHealth(const std::string& address,
                                                     const std::string& node_id,
                                                     const v1::CollectHealthRequest& request,
                                                     absl::Duration deadline) override;

 private:
  // One blocking call of `method` with a deadline; errors name the address.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(const std::string& address, const std::string& node_id,
                                grpc::Status (v1::Agent::Stub::*method)(grpc::ClientContext*,
                                                                        const Request&, Response*),
                                const Request& request, absl::Duration deadline);

  v1::Agent::Stub* StubFor(const std::string& address, const std::string& node_id);

  const std::shared_ptr<TransportCredentials> transport_;
  const absl::Duration deadline_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<v1::Agent::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller
