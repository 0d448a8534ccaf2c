// The native adapter: fleet-engine's command as the recipe writes it, plus the FLEET_* variables
// that tell the rank its place in the group.
#include "launch/adapters/native.h"

#include "launch/adapters/exec.h"

namespace fleet::engine {

absl::StatusOr<RankCommand> NativeAdapter::RenderRank(const Recipe& /*recipe*/,
                                                      const std::vector<std::string>& command,
                                                      const GroupContext& group, int rank,
                                                      std::vector<std::string>* /*notes*/) const {
  return RankCommand{.argv = command, .env = FleetRankEnv(group, rank)};
}

}  // namespace fleet::engine
