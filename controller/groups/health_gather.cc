// GatherHealth (see health_gather.h).
#include "controller/groups/health_gather.h"

#include <set>
#include <thread>

#include "absl/strings/str_cat.h"

namespace fleet::controller {

std::vector<std::string> DiskPathsOf(const std::string& node_id,
                                     const std::vector<v1::Group>& groups) {
  std::set<std::string> paths;
  for (const v1::Group& group : groups) {
    for (const v1::GroupRank& rank : group.ranks()) {
      if (rank.node_id() != node_id) continue;
      for (const v1::Mount& mount : rank.spec().mounts()) paths.insert(mount.source());
    }
  }
  return {paths.begin(), paths.end()};
}

v1::HealthResponse GatherHealth(AgentClient& agents, const std::vector<v1::Node>& nodes,
                                const std::vector<v1::Group>& groups, absl::Duration deadline) {
  v1::HealthResponse response;
  for (const v1::Node& node : nodes) response.add_nodes()->set_node(node.identity().name());
  // One thread per node: the looks take up to `deadline` each and must not add up.
  std::vector<std::thread> looks;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const v1::Node& node = nodes[i];
    v1::NodeHealthReport& report = *response.mutable_nodes(static_cast<int>(i));
    if (node.state() == v1::NODE_STATE_LOST) {
      report.set_error("not asked: the node is Lost");
      continue;
    }
    looks.emplace_back([&agents, &node, &report, &groups, deadline] {
      v1::CollectHealthRequest request;
      for (std::string& path : DiskPathsOf(node.identity().node_id(), groups)) {
        request.add_disk_paths(std::move(path));
      }
      absl::StatusOr<v1::NodeHealthSample> sample =
          agents.CollectHealth(node.address(), node.identity().node_id(), request, deadline);
      if (sample.ok()) {
        *report.mutable_sample() = *std::move(sample);
      } else {
        report.set_error(absl::StrCat("no answer from its agent: ", sample.status().message()));
      }
    });
  }
  for (std::thread& t : looks) t.join();
  return response;
}

}  // namespace fleet::controller
