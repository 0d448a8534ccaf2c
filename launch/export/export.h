// `fleet export`: the launch SparkFleet would run for a recipe, rendered for a scheduler a
// cluster moves to when it outgrows SparkFleet: a Kubernetes LeaderWorkerSet or a Slurm batch
// script. Both are built from the same per-rank plan as `fleet plan` and `fleet apply`
// (PlanGroup), so the adapter's rank flags, the NCCL environment, memlock, shm, caches and the
// readiness probe are the ones SparkFleet itself would use.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/plan.h"
#include "launch/recipe.h"

namespace fleet::engine {

// How LWS pods reach the RDMA NICs.
enum class RdmaAccess {
  // hostNetwork: true, /dev/infiniband mounted from the host, the container privileged: the
  // pods see the nodes' RoCE interfaces as SparkFleet's agents do.
  kHostNetwork,
  // A resource of the RDMA device plugin (k8s-rdma-shared-dev-plugin) per pod, on the pod
  // network; `rdma_resource` names it.
  kDevicePlugin,
};

struct ExportOptions {
  std::string group;                // the group (and object) name
  std::vector<Override> overrides;  // -o key=value
  std::optional<int> nodes;         // --nodes: replaces the recipe's group size
  // What SparkFleet's probes would tell per node; a scheduler's nodes are unknown when the
  // export is written, so the operator names them (empty: NCCL chooses, with a note).
  std::string fabric_interface;           // e.g. "enp1s0f1np1"
  std::vector<std::string> rdma_devices;  // e.g. {"rocep1s0f1", "roceP2p1s0f1"}
  int gpus_per_node = 1;                  // one rank per node, each on the node's GPU(s)
  // Rank 0's rendezvous port: each rank has its own node (Slurm) or pod (LWS), so a fixed port
  // is free; 29500 is PyTorch's default.
  int master_port = 29500;

  // LeaderWorkerSet only.
  RdmaAccess rdma = RdmaAccess::kHostNetwork;
  std::string rdma_resource = "rdma/rdma_shared_device_a";
  std::string image;  // for runtime: process, the image holding the engine binary
  std::string k8s_namespace;
  std::string max_unavailable = "1";  // rolloutStrategy: an integer or a percentage
  // The image of the init container that holds workers until the head's master port answers.
  std::string wait_image = "busybox:1.36";

  // Slurm only.
  std::string partition;   // #SBATCH --partition; empty: the cluster's default
  std::string time_limit;  // #SBATCH --time; empty: the partition's default
};

struct Export {
  std::string text;                // the manifest or script
  std::vector<std::string> notes;  // what changed, was assumed or cannot be expressed
};

// The plan of one group as a scheduler will run it: rank addresses are unknown until the job
// runs, so rank 0's address is kHeadAddress and each rank's own address kSelfAddress, both
// replaced by each renderer with the scheduler's variables; "~/" in mount sources is kHome.
// The group has `options.nodes` ranks, else the recipe's GroupSize. Errors: those of
// PlanGroup; FailedPrecondition for a `native` group of more than one rank (fleet-engine's
// ranks rendezvous through the SparkFleet controller, which the schedulers do not run) and for
// a `llamacpp` group of more than one (its workers-first order is not rendered).
absl::StatusOr<GroupPlan> PlanForExport(const Recipe& recipe, const ExportOptions& options);

inline constexpr char kHeadAddress[] = "fleet-head-address.invalid";
inline constexpr char kSelfAddress[] = "fleet-self-address.invalid";
inline constexpr char kHome[] = "fleet-home.invalid";

// A LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) and a Service for its leaders, as one YAML
// stream. size = ranks; the leader runs rank 0 with the readiness probe; workers run one
// template with the rank from LWS_WORKER_INDEX and the head from LWS_LEADER_ADDRESS; a failed
// pod recreates its whole group (RecreateGroupOnPodRestart), as SparkFleet restarts a group.
// Errors: FailedPrecondition for runtime: process without `image`, and for a rank-specific
// value the worker template cannot derive from LWS_WORKER_INDEX.
absl::StatusOr<Export> ExportLeaderWorkerSet(const Recipe& recipe, const ExportOptions& options);

// An sbatch script: --nodes=N --ntasks-per-node=1; rank = SLURM_NODEID, the head = the first
// host of SLURM_JOB_NODELIST; ranks run as the recipe says (`docker run` with the flags the
// agent would use, or the process); with a head-first engine the workers start once the head's
// master port answers; any rank ending ends the job.
absl::StatusOr<Export> ExportSlurm(const Recipe& recipe, const ExportOptions& options);

}  // namespace fleet::engine
