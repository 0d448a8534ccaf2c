// Fabric test plans and verdicts: which links to test in which order, and how a measured figure
// is judged against the link's rate and against the link's history. Plain functions, no I/O:
// the controller's FabricRunner carries the plans out through the agents.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet::controller {

// One directed test: `from` sends, `to` receives (node names).
struct FabricLink {
  std::string from;
  std::string to;
  bool operator==(const FabricLink&) const = default;
};

enum class FabricTopology {
  kPairs,  // every unordered pair of nodes once
  kRing,   // node i to node i+1, the last back to the first
};

// Tests that run at the same time: no node takes part in two of them, so tests never share a
// NIC and do not disturb each other.
using FabricRound = std::vector<FabricLink>;

// The rounds that test every link of `topology` over `nodes` (in the order given) exactly once.
// Pairs follow the circle method of round-robin tournaments: n-1 rounds (n even) or n rounds
// (n odd) of floor(n/2) tests each, the fewest rounds possible. A ring of n nodes takes 2 rounds
// (n even) or 3 (n odd). InvalidArgument for fewer than 2 nodes or a name given twice.
absl::StatusOr<std::vector<FabricRound>> PlanFabric(const std::vector<std::string>& nodes,
                                                    FabricTopology topology);

// pass at >= 90% of the expected figure, warn from 50%, fail below 50%; "unknown" when the link's
// rate is not known (expected <= 0), so nothing can be judged.
std::string FabricVerdict(double measured_gbps, double expected_gbps);

// "bandwidth 7.1 Gb/s is 18% below the last passing run (8.7 Gb/s)" when `measured` is more than
// 10% below `last_pass`; nullopt otherwise (or when there is no passing run yet).
std::optional<std::string> FabricRegression(double measured_gbps,
                                            std::optional<double> last_pass_gbps);

}  // namespace fleet::controller
