// The exec adapter and the FLEET_* variables it shares with the native one.
#include "launch/adapters/exec.h"

#include "absl/strings/str_cat.h"

namespace fleet::engine {

std::vector<std::pair<std::string, std::string>> FleetRankEnv(const GroupContext& group, int rank) {
  return {
      {"FLEET_RANK", absl::StrCat(rank)},
      {"FLEET_WORLD_SIZE", absl::StrCat(group.nodes.size())},
      {"FLEET_MASTER_ADDR", group.master_addr},
      {"FLEET_MASTER_PORT", absl::StrCat(group.master_port)},
      {"FLEET_GROUP", group.group},
      {"FLEET_GENERATION", absl::StrCat(group.generation)},
  };
}

absl::StatusOr<RankCommand> ExecAdapter::RenderRank(const Recipe& /*recipe*/,
                                                    const std::vector<std::string>& command,
                                                    const GroupContext& group, int rank,
                                                    std::vector<std::string>* /*notes*/) const {
  return RankCommand{.argv = command, .env = FleetRankEnv(group, rank)};
}

}  // namespace fleet::engine
