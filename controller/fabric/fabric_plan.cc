// Fabric test plans (circle method) and verdict rules.
#include "controller/fabric/fabric_plan.h"

#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleet::controller {
namespace {

// Puts each link, in order, into the first round where neither of its nodes is busy yet.
std::vector<FabricRound> Greedy(const std::vector<FabricLink>& links) {
  std::vector<FabricRound> rounds;
  std::vector<absl::flat_hash_set<std::string>> busy;
  for (const FabricLink& link : links) {
    size_t r = 0;
    while (r < rounds.size() && (busy[r].contains(link.from) || busy[r].contains(link.to))) ++r;
    if (r == rounds.size()) {
      rounds.emplace_back();
      busy.emplace_back();
    }
    rounds[r].push_back(link);
    busy[r].insert(link.from);
    busy[r].insert(link.to);
  }
  return rounds;
}

}  // namespace

absl::StatusOr<std::vector<FabricRound>> PlanFabric(const std::vector<std::string>& nodes,
                                                    FabricTopology topology) {
  if (nodes.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a fabric test needs at least 2 nodes; got ", nodes.size(),
                     ": name two or more with --nodes a,b, or wait until more nodes are Ready"));
  }
  absl::flat_hash_set<std::string> seen;
  for (const std::string& n : nodes) {
    if (!seen.insert(n).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("node ", n, " is named twice in --nodes; name each node once"));
    }
  }
  if (topology == FabricTopology::kRing) {
    std::vector<FabricLink> links;
    // Two nodes make one link, not the same pair twice.
    size_t count = nodes.size() == 2 ? 1 : nodes.size();
    for (size_t i = 0; i < count; ++i) links.push_back({nodes[i], nodes[(i + 1) % nodes.size()]});
    return Greedy(links);
  }
  // Circle method: fix the first seat, rotate the others; an odd count gets an empty seat.
  std::vector<std::optional<std::string>> seats(nodes.begin(), nodes.end());
  if (seats.size() % 2 == 1) seats.push_back(std::nullopt);
  const size_t n = seats.size();
  std::vector<FabricRound> rounds;
  for (size_t r = 0; r + 1 < n; ++r) {
    FabricRound round;
    for (size_t i = 0; i < n / 2; ++i) {
      const auto& a = seats[i];
      const auto& b = seats[n - 1 - i];
      if (a && b) round.push_back({*a, *b});
    }
    rounds.push_back(std::move(round));
    // Rotate every seat but the first one step.
    std::optional<std::string> last = seats.back();
    for (size_t i = n - 1; i > 1; --i) seats[i] = seats[i - 1];
    seats[1] = last;
  }
  return rounds;
}

std::string FabricVerdict(double measured_gbps, double expected_gbps) {
  if (expected_gbps <= 0) return "unknown";
  double ratio = measured_gbps / expected_gbps;
  if (ratio >= 0.9) return "pass";
  if (ratio >= 0.5) return "warn";
  return "fail";
}

std::optional<std::string> FabricRegression(double measured_gbps,
                                            std::optional<double> last_pass_gbps) {
  if (!last_pass_gbps || *last_pass_gbps <= 0) return std::nullopt;
  double drop = 1 - measured_gbps / *last_pass_gbps;
  if (drop <= 0.10) return std::nullopt;
  return absl::StrFormat("bandwidth %.1f Gb/s is %.0f%% below the last passing run (%.1f Gb/s)",
                         measured_gbps, drop * 100, *last_pass_gbps);
}

}  // namespace fleet::controller
