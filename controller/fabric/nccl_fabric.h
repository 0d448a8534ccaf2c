// The NCCL test of `fleet fabric --tests nccl`: fleet-engine's collective benchmark
// (`fleet-engine bench-collectives`, nccl-tests' formulas and layout, every size checked) run
// as one group across the chosen nodes, one rank per node, and its tables turned into results:
// one per collective, at the sweep's largest size, judged against the bus bandwidth expected
// between the nodes (175 Gb/s between DGX Sparks, what NVIDIA's own cluster check demands).
//
// Example:
//   ASSIGN_OR_RETURN(std::vector<NcclRow> rows, ParseBenchTables(rank0_output));
//   for (v1::FabricResult& r : NcclResults(rows, endpoints)) ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controller/fabric/fabric_runner.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::controller {

// The sweep every NCCL test runs: 1 MiB to 256 MiB, times 4, as fleet-engine's flags.
inline constexpr const char* kNcclSweepFlags = "-b 1M -e 256M -f 4 -w 5 -n 20";
// What NVIDIA's DGX Spark cluster check demands of NCCL between two Sparks.
inline constexpr double kSparkNcclBusGbps = 175;

// One row of bench-collectives' output (nccl-tests' columns).
struct NcclRow {
  std::string op;  // "all_reduce", "all_gather"
  int ranks = 0;
  uint64_t bytes = 0;
  double time_us = 0;
  double algbw_gbs = 0;  // GB/s, as nccl-tests prints
  double busbw_gbs = 0;
  int64_t wrong = 0;
};

// Every row of every table in `text` (rank 0's output; other lines are ignored).
// InvalidArgument naming the line when a row is garbled, NotFound when there is no table.
absl::StatusOr<std::vector<NcclRow>> ParseBenchTables(absl::string_view text);

// One result per collective at its largest size: test "nccl", from the first node, to the
// others (comma-separated), device the collective and its size, bandwidth the bus bandwidth in
// Gb/s. Expected 175 Gb/s when every node's GPU is a GB10 (unknown otherwise); any wrong element
// fails the result. One rank has no bus: not measured, with the sums' check in the reason.
std::vector<v1::FabricResult> NcclResults(const std::vector<NcclRow>& rows,
                                          const std::vector<FabricEndpoint>& nodes);

// The recipe of that group: fleet-engine's native engine as plain processes, one rank per node
// in `nodes`' order, never restarted.
std::string NcclBenchRecipe(const std::vector<std::string>& nodes);

}  // namespace fleet::controller
