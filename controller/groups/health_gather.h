// `fleet health` on the controller: every Ready or Suspect node's agent is asked for a look
// (CollectHealth) at once, each with the disk paths its ranks use, and the answers are
// gathered in node order. A Lost node is not asked; a node that does not answer in time is
// listed with the error.
//
// Example:
//   v1::HealthResponse r = GatherHealth(agents, registry.List(), groups.List(), absl::Seconds(5));
#pragma once

#include <vector>

#include "absl/time/time.h"
#include "controller/groups/agent_client.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::controller {

// The paths whose free disk a node's look reports: every host path its ranks mount (the model
// directory, the Hugging Face cache), sorted and once each.
std::vector<std::string> DiskPathsOf(const std::string& node_id,
                                     const std::vector<v1::Group>& groups);

v1::HealthResponse GatherHealth(AgentClient& agents, const std::vector<v1::Node>& nodes,
                                const std::vector<v1::Group>& groups, absl::Duration deadline);

}  // namespace fleet::controller
