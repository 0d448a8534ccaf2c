// The controller's seam to node agents: one interface, a gRPC implementation
// (agent_client_impl.h) and a fake for tests (fake_agent_client.h).
#pragma once

#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
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
};

}  // namespace fleet::controller
