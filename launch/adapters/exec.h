// The `exec` adapter: the recipe's command run as is on every rank, told its place in the group
// through FLEET_* variables. For engines SparkFleet has no adapter for yet.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "launch/adapters/adapter.h"

namespace fleet::engine {

// FLEET_RANK, FLEET_WORLD_SIZE, FLEET_MASTER_ADDR, FLEET_MASTER_PORT, FLEET_GROUP,
// FLEET_GENERATION of `rank`, in that order (shared by the exec and native adapters).
std::vector<std::pair<std::string, std::string>> FleetRankEnv(const GroupContext& group, int rank);

class ExecAdapter final : public EngineAdapter {
 public:
  absl::string_view name() const override { return "exec"; }
  LaunchOrder launch_order() const override { return LaunchOrder::kHeadFirst; }
  absl::StatusOr<RankCommand> RenderRank(const Recipe& recipe,
                                         const std::vector<std::string>& command,
                                         const GroupContext& group, int rank,
                                         std::vector<std::string>* notes) const override;
};

}  // namespace fleet::engine
