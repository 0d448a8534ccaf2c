// Planning a group: recipe + overrides + the placed nodes → one ShardSpec per rank, with the
// per-node environment (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, VLLM_HOST_IP, ...), the launch order
// and the endpoint. Used by the controller at apply and by `fleet plan` without a controller.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fleet/v1/shard.pb.h"
#include "launch/adapters/adapter.h"
#include "launch/recipe.h"

namespace fleet::engine {

struct GroupPlan {
  std::string group;
  uint64_t generation = 1;
  LaunchOrder launch_order = LaunchOrder::kHeadFirst;
  std::vector<v1::ShardSpec> ranks;  // index = rank; rank 0 is the head
  std::string endpoint;              // "http://HEAD_ADDR:PORT", "" when the head serves none
  // What the adapter or the planner changed or assumed, one sentence each.
  std::vector<std::string> notes;
};

// Renders every rank of one group placed on `group.nodes` (size = GroupSize()).
// The environment of each rank is, in order: fabric variables derived from its node
// (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME, NCCL_IB_HCA="=dev1,dev2",
// NCCL_IB_DISABLE=0, VLLM_HOST_IP, MASTER_ADDR, MASTER_PORT), the adapter's variables, then
// the recipe's `env` (which overrides the others), one entry per name; then, for a group over
// several nodes of the vllm engine, NCCL_DEBUG=INFO and NCCL_DEBUG_SUBSYS=INIT,NET unless
// the recipe logs at INFO already or sets NCCL_DEBUG_SUBSYS or NCCL_DEBUG_FILE (the launch
// checks read NCCL's banner and transport line). Other defaults, each reported in `notes`: a
// version-1 docker recipe mounts ~/.cache/huggingface at /root/.cache/huggingface (as
// spark-vllm-docker does); a vLLM docker recipe without `cache_dirs` keeps /root/.cache/vllm,
// /root/.triton/cache, /root/.cache/flashinfer and /root/.cache/torch. Mount sources must be
// absolute or start with "~/", which the agent expands with its own HOME (RenderDockerRunOn in
// docker_run.h). VLLM_HOST_IP is set for the vllm engine only. Errors: InvalidArgument for a group
// size that differs from the nodes, an empty command, docker without `container`, a relative mount;
// NotFound for an unknown engine; FailedPrecondition for Ray asked for by a version-2 recipe on
// several nodes.
absl::StatusOr<GroupPlan> PlanGroup(const Recipe& recipe, const std::vector<Override>& overrides,
                                    const GroupContext& group);

}  // namespace fleet::engine
