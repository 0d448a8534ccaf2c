// The `native` adapter: SparkFleet's own engine, `fleet-engine`, whose flags the recipe's
// command already names; every rank joins the group through the controller's rendezvous store.
#pragma once

#include <string>
#include <vector>

#include "launch/adapters/adapter.h"

namespace fleet::engine {

class NativeAdapter final : public EngineAdapter {
 public:
  absl::string_view name() const override { return "native"; }
  // fleet-engine ranks wait for each other in the controller's rendezvous store, so no rank
  // needs another to be up first.
  LaunchOrder launch_order() const override { return LaunchOrder::kAllAtOnce; }
  absl::StatusOr<RankCommand> RenderRank(const Recipe& recipe,
                                         const std::vector<std::string>& command,
                                         const GroupContext& group, int rank,
                                         std::vector<std::string>* notes) const override;
};

}  // namespace fleet::engine
