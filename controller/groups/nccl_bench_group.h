// `fleet fabric --tests nccl` on the controller: fleet-engine's collective benchmark run as a
// group named "fabric-nccl" (controller/fabric/nccl_fabric.h renders its recipe), so its ranks
// start, rendezvous and are stopped exactly as a served recipe's: applied, waited for until
// every rank has ended, rank 0's output read back, the group stopped. Its exits and its stop
// show in `fleet events fabric-nccl`.
//
// Example:
//   FabricRunner runner(..., [&](const std::vector<std::string>& nodes) {
//     return RunNcclBenchGroup(groups, nodes, absl::Minutes(5));
//   });
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/groups/group_manager.h"

namespace fleet::controller {

inline constexpr char kNcclBenchGroup[] = "fabric-nccl";

// Rank 0's output. FailedPrecondition with the apply's reason (preflight, a node refusing its
// rank), Aborted with the end of rank 0's output when a rank did not exit 0, DeadlineExceeded
// when the ranks are still running after `timeout` (they are stopped).
absl::StatusOr<std::string> RunNcclBenchGroup(GroupManager& groups,
                                              const std::vector<std::string>& nodes,
                                              absl::Duration timeout);

}  // namespace fleet::controller
