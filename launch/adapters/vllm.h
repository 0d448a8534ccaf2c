// The vLLM adapter: `vllm serve` spread over the nodes of a group with vLLM's multiprocessing
// backend (vLLM >= 0.10: --nnodes/--node-rank/--master-addr/--master-port, --headless workers).
#pragma once

#include <string>
#include <vector>

#include "launch/adapters/adapter.h"

namespace fleet::engine {

class VllmAdapter final : public EngineAdapter {
 public:
  absl::string_view name() const override { return "vllm"; }
  LaunchOrder launch_order() const override;
  // Every rank runs the recipe's command with the rank flags of this placement appended
  // (`--nnodes N --node-rank K --master-addr A --master-port P`, `--headless` on ranks > 0);
  // copies of those flags already in the command are removed, whichever form they take
  // (`--flag value`, `--flag=value`, `--flag_name`, `-n`/`-r`). Headless ranks also lose
  // `--api-server-count`, which vLLM refuses with `--headless`. `--distributed-executor-backend
  // ray` in a multi-node group is rewritten to `mp` for a version-1 recipe and refused
  // (FailedPrecondition) for a version-2 one. A group of one node keeps the command as is,
  // minus any multi-node flags.
  // A command that is a shell script (`bash -lc '...'`) gets nothing appended: every rank gets
  // NODE_RANK, NNODES, MASTER_ADDR, MASTER_PORT and HEADLESS in its environment instead
  // (shell_script.h), and a multi-node script that reads none of NODE_RANK, MASTER_ADDR or
  // HEADLESS is refused with the line to write.
  absl::StatusOr<RankCommand> RenderRank(const Recipe& recipe,
                                         const std::vector<std::string>& command,
                                         const GroupContext& group, int rank,
                                         std::vector<std::string>* notes) const override;
  // A shell script's own `--master-port N`.
  absl::StatusOr<std::optional<int>> FixedMasterPort(
      const std::vector<std::string>& command) const override;
};

}  // namespace fleet::engine
