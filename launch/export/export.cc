// The plan a scheduler runs (PlanForExport): PlanGroup over placeholder nodes.
#include "launch/export/export.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "launch/docker_run.h"

namespace fleet::engine {

absl::StatusOr<GroupPlan> PlanForExport(const Recipe& recipe, const ExportOptions& options) {
  ASSIGN_OR_RETURN(const auto values, EffectiveValues(recipe, options.overrides));
  absl::StatusOr<int> recipe_size = GroupSize(recipe, values);
  int size = 0;
  if (options.nodes.has_value()) {
    size = *options.nodes;
  } else {
    ASSIGN_OR_RETURN(size, recipe_size);
  }
  if (recipe.engine == "llamacpp" && size > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        Where(recipe, "engine"), "engine llamacpp across ", size,
        " nodes starts the rpc-servers before the llama-server that connects to them, an order "
        "neither export renders yet; export it with --nodes 1 (llama-server alone)"));
  }
  if (recipe.engine == "native" && size > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        Where(recipe, "engine"), "engine native runs fleet-engine, whose ", size,
        " ranks find each other through the SparkFleet controller's rendezvous store, which a "
        "scheduler does not run; export it with --nodes 1, or serve with an engine that "
        "rendezvouses by itself (vllm, exec)"));
  }
  std::vector<std::string> size_notes;
  if (recipe_size.ok() && *recipe_size != size) {
    size_notes.push_back(absl::StrCat(
        "--nodes ", size, " replaces the recipe's ", *recipe_size,
        " ranks; the engine's own parallelism flags stay as the recipe sets them (override "
        "tensor_parallel and the like with -o key=value)"));
  }
  Recipe sized = recipe;
  sized.nodes = size;
  GroupContext group;
  group.group = options.group;
  group.generation = 1;
  group.master_addr = kHeadAddress;
  group.master_port = options.master_port;
  for (int rank = 0; rank < size; ++rank) {
    NodeView& node = group.nodes.emplace_back();
    // One name for every node: the scheduler picks them, and the planner's notes then read
    // "each node's fabric interface is unknown" once rather than once per rank.
    node.name = "each node";
    node.node_id = absl::StrCat("rank-", rank);
    node.address = kSelfAddress;
    node.fabric_address = kSelfAddress;
    node.fabric_interface = options.fabric_interface;
    node.rdma_devices = options.rdma_devices;
    node.has_gpus = options.gpus_per_node > 0;
    node.has_infiniband = !options.rdma_devices.empty();
  }
  ASSIGN_OR_RETURN(GroupPlan plan, PlanGroup(sized, options.overrides, group));
  plan.notes.insert(plan.notes.begin(), size_notes.begin(), size_notes.end());
  for (v1::ShardSpec& spec : plan.ranks) {
    for (v1::Mount& mount : *spec.mutable_mounts()) {
      mount.set_source(ExpandHome(mount.source(), kHome));
    }
  }
  if (recipe.engine == "native") {
    // A group of one: without FLEET_RANK, fleet-engine serves alone and needs no controller.
    for (v1::ShardSpec& spec : plan.ranks) {
      auto* env = spec.mutable_env();
      env->erase(std::remove_if(
                     env->begin(), env->end(),
                     [](const v1::EnvVar& var) { return absl::StartsWith(var.name(), "FLEET_"); }),
                 env->end());
    }
    plan.notes.push_back(
        "engine native: FLEET_RANK and the other FLEET_* variables are left out, so "
        "fleet-engine serves as a group of one without the SparkFleet controller");
  }
  return plan;
}

}  // namespace fleet::engine
