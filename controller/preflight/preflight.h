// Preflight: whether a planned group can launch on its nodes, judged from what each node's
// probes saw (v1::NodeProbe) against the recipe and each rank's ShardSpec, one row per node and
// check with the fix. Also the check of the engine's own log after launch. Pure: no I/O.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fleet/v1/probe.pb.h"
#include "fleet/v1/shard.pb.h"
#include "launch/adapters/adapter.h"
#include "launch/recipe.h"

namespace fleet::controller {

enum class Verdict { kPass, kWarn, kFail };

// One judgement. `fix` is one sentence, empty on a pass.
struct CheckRow {
  std::string node;   // node name, e.g. "spark-b"
  std::string check;  // one of the names below; Downgrade() appends " (forced)"
  Verdict verdict = Verdict::kPass;
  std::string observed;
  std::string expected;
  std::string fix;
  int rank = -1;  // the rank on that node; -1 for rows not tied to a rank (engine log)
};

// Check names, in the order RunPreflight's rows come (then by rank, then by device or path).
//   nccl        the version meets requires.nccl; fails when VLLM_NCCL_SO_PATH names nothing
//               loadable, warns when the library's version could not be read
//   nccl-same   the same NCCL on every node
//   nccl-2.28   NCCL 2.28.x with 4 or more ranks (wedges long generations)
//   memlock     the shard's RLIMIT_MEMLOCK is enough for RDMA memory registration
//   shm         /dev/shm is at least requires.shm
//   rdma-device a docker rank on a node with RDMA devices gets --device /dev/infiniband
//   rdma-port   each device of NCCL_IB_HCA exists, its port ACTIVE and LinkUp
//   rdma-gid    each used RoCE port has a RoCE v2 GID with an IPv4 address
//   rdma-rate   paired devices run at the same rate on every node
//   mtu         requires.mtu on every fabric interface
//   subnet      the two ends of each link on one subnet
//   gpu         a GPU of requires.gpu_arch
//   gpu-driver  the same NVIDIA driver on every node
//   gpu-cuda    the same CUDA driver version on every node
//   image       the docker image present with the same Id everywhere
//   model       the model present with the same size and hash everywhere
//   disk        free disk at least requires.min_free_disk at each probed path
//   cache-dirs  the JIT cache directories exist (the agent creates them)
// CheckEngineLog's rows: engine-nccl, engine-transport.

// One rank of the group: the node it is placed on, what its probes saw, and its spec.
struct PreflightNode {
  engine::NodeView view;
  v1::NodeProbe probe;
  v1::ShardSpec spec;
};

// Every check for a group about to launch; `nodes` index = rank. A probe section listed in
// `probe.unavailable` ("gpu: libnvidia-ml.so.1 not found") gives a warn "not probed: REASON",
// or a fail saying how to make it visible when the recipe needs that section.
//
// Example:
//   std::vector<CheckRow> rows = RunPreflight(recipe, nodes);
//   if (AnyFailure(rows) && !force) return absl::FailedPreconditionError(...);
std::vector<CheckRow> RunPreflight(const engine::Recipe& recipe,
                                   const std::vector<PreflightNode>& nodes);

// For --force: every fail becomes a warn whose check name ends in " (forced)"; observed,
// expected and fix are kept so the operator still sees what will go wrong.
void Downgrade(std::vector<CheckRow>* rows);

bool AnyFailure(const std::vector<CheckRow>& rows);

// After launch: one rank's log checked for NCCL's banner ("NCCL version 2.30.4+cuda13.0", or
// vLLM's "vLLM is using nccl==2.30.4") against `expected_nccl`, the version preflight saw ("":
// not compared), and for the transport NCCL chose ("NET/IB : Using [0]rocep1s0f1:1/RoCE ..."
// against "NET/Socket : Using [0]enp1s0f1np1:..."), which must be IB when `rdma_expected`.
// A log without a banner yet gives one warn, and one without a transport line another ("not
// checked yet"): every check has a row. With `nccl_debug_file` (the rank's NCCL_DEBUG_FILE)
// NCCL writes elsewhere, and both rows say "not checked" and why.
std::vector<CheckRow> CheckEngineLog(const std::string& node, const std::string& log,
                                     const std::string& expected_nccl, bool rdma_expected,
                                     const std::string& nccl_debug_file = "");

// "pass", "warn", "fail".
absl::string_view VerdictName(Verdict v);

// Whether NCCL `version` ("2.30.4", "2.30.4+cuda13.0") meets `constraint`: an operator (>=, >,
// ==, =, <=, <; none means ==) and a version, or several joined by commas, all of which must
// hold (">=2.30.4,<3"). Missing components are 0, so "2.28.9" > "2.28". InvalidArgument for a
// version or constraint that does not parse.
//
// Example: NcclSatisfies("2.28.9", ">=2.30.4") == false.
absl::StatusOr<bool> NcclSatisfies(absl::string_view version, absl::string_view constraint);

}  // namespace fleet::controller
