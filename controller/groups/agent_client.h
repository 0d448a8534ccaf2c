// The controller's seam to node agents: one interface, a gRPC implementation
// (agent_client_impl.h) and a fake for tests (fake_agent_client.h).
#pragma once

#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleet/v1/agent.pb.h"

namespace fleet::controller {

class AgentClient {
 public:
  using DescribeCallback = absl::AnyInvocable<void(absl::StatusOr<v1::DescribeResponse>) &&>;
  virtual ~AgentClient() = default;
  // Asks the agent at `address` to describe itself, expecting node id `node_id`. `done` runs
  // exactly once, on a gRPC thread, with Unavailable when the address does not answer.
  virtual void Describe(const std::string& address, const std::string& node_id,
                        DescribeCallback done) = 0;

  // Shard orders. They block for at most `deadline`: the GroupManager calls them from its own
  // executor, never from a gRPC reactor. Errors name the agent's address.
  virtual absl::StatusOr<v1::StartShardResponse> StartShard(const std::string& address,
                                                            const std::string& node_id,
                                                            const v1::StartShardRequest& request,
                                                            absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::StopShardsResponse> StopShards(const std::string& address,
                                                            const std::string& node_id,
                                                            const v1::StopShardsRequest& request,
                                                            absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::ReadShardLogResponse> ReadShardLog(
      const std::string& address, const std::string& node_id,
      const v1::ReadShardLogRequest& request, absl::Duration deadline) = 0;
  virtual absl::StatusOr<v1::NodeProbe> Probe(const std::string& address,
                                              const std::string& node_id,
                                              const v1::ProbeRequest& request,
                                              absl::Duration deadline) = 0;
  // One of the router commands (agent.proto) for the router shard that agent runs.
  virtual absl::StatusOr<v1::RouterCommandResponse> RouterCommand(
      const std::string& address, const std::string& node_id,
      const v1::RouterCommandRequest& request, absl::Duration deadline) = 0;
  // `fleet health`: the agent's look at its node (agent.proto CollectHealth).
  virtual absl::StatusOr<v1::NodeHealthSample> CollectHealth(
      const std::string& address, const std::string& node_id,
      const v1::CollectHealthRequest& request, absl::Duration deadline) = 0;
};

}  // namespace fleet::controller
