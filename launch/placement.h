// Placement: which Ready nodes a group runs on, and how each looks to the engine adapters
// (fabric interface and address, RDMA devices, device files). Pure functions over the
// registry's records, shared by the controller's apply and by `fleet plan`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fleet/v1/controller.pb.h"
#include "launch/adapters/adapter.h"
#include "launch/recipe.h"

namespace fleet::controller {

// The adapters' view of a registered node. Until the probes issue lands, the fabric is the
// interface holding the node's advertised address, and every RDMA device the node lists is
// taken as active.
engine::NodeView ToNodeView(const v1::Node& node);

// Picks `replicas` disjoint sets of `size` nodes from `candidates` (already filtered to Ready,
// reachable and free nodes). With `recipe.placement` set, exactly those nodes in that order
// (first = head), each of which must be a candidate. Without, candidates sorted by name,
// preferring `preferred` (the nodes the group ran on before, so a re-apply stays put).
// FailedPrecondition names the numbers and the nodes when there are too few, with the recipe
// line that asked for them.
absl::StatusOr<std::vector<std::vector<engine::NodeView>>> PlaceReplicas(
    const engine::Recipe& recipe, int size, const std::vector<engine::NodeView>& candidates,
    const std::vector<std::string>& preferred, const std::vector<std::string>& busy);

}  // namespace fleet::controller
