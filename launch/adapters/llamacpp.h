// The llama.cpp adapter: `llama-server` on one node, or across nodes through llama.cpp's RPC
// backend (`rpc-server` on every other node, `llama-server --rpc` on the head).
#pragma once

#include <string>
#include <vector>

#include "launch/adapters/adapter.h"

namespace fleet::engine {

class LlamaCppAdapter final : public EngineAdapter {
 public:
  absl::string_view name() const override { return "llamacpp"; }
  // llama-server connects to every rpc-server when it starts and fails if one is missing.
  LaunchOrder launch_order() const override { return LaunchOrder::kWorkersFirst; }
  // Rank 0 runs the recipe's command, which must run llama-server, with `--metrics` added when
  // absent (vLLM-style monitoring reads /metrics) and, in a group of several nodes, `--rpc
  // ADDR1:P,ADDR2:P` naming every other rank's fabric address and the group's master port
  // (a `--rpc` already in the command is replaced). Every other rank runs `rpc-server --host
  // FABRIC_ADDR --port P`: rpc-server has no authentication, so it is bound to the fabric
  // address only, and a node without a known fabric address is refused rather than bound to
  // every interface.
  absl::StatusOr<RankCommand> RenderRank(const Recipe& recipe,
                                         const std::vector<std::string>& command,
                                         const GroupContext& group, int rank,
                                         std::vector<std::string>* notes) const override;
};

}  // namespace fleet::engine
