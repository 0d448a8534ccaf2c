// `fleet-engine bench-collectives`: all-reduce and all-gather over a sweep of sizes on any
// Collectives (NCCL on GPUs, Gloo on CPUs), with nccl-tests' definitions and column layout, and
// a correctness check of every size. Every rank of the group runs it; rank 0 prints the table.
//
// Definitions (nccl-tests, doc/PERFORMANCE.md), for n ranks and `size` bytes:
//   time   average over ranks of the mean time of one call, in microseconds
//   algbw  size / time
//   busbw  all_reduce: algbw * 2(n-1)/n; all_gather: algbw * (n-1)/n, where all_gather's size
//          is the gathered result (n blocks), as in nccl-tests
//   #wrong elements that differ from the expected result, summed over ranks (0 means right)
//
// Example: ASSIGN_OR_RETURN(auto rows, RunCollectiveBench(comm, {.max_bytes = 1 << 24}));
//          if (comm.rank() == 0) std::cout << FormatBenchTable("all_reduce", rows, comm);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/collectives/collectives.h"

namespace fleet::native {

struct BenchOptions {
  size_t min_bytes = 8;
  size_t max_bytes = size_t{32} << 20;
  int factor = 2;  // each size is the previous one times this
  int warmup = 5;
  int iters = 20;
  std::vector<std::string> ops = {"all_reduce", "all_gather"};
};

struct BenchRow {
  std::string op;  // "all_reduce" or "all_gather"
  size_t bytes = 0;
  size_t count = 0;  // elements (float32)
  double time_us = 0;
  double algbw_gbps = 0;
  double busbw_gbps = 0;
  int64_t wrong = 0;
};

// Runs the sweep on every rank (all ranks must call it with the same options).
// InvalidArgument for an unknown op or an empty sweep; a collective's error otherwise.
absl::StatusOr<std::vector<BenchRow>> RunCollectiveBench(Collectives& collectives,
                                                         const BenchOptions& options);

// nccl-tests' table for the rows of `op`, with a header naming the group and the average bus
// bandwidth at the end.
std::string FormatBenchTable(const std::string& op, const std::vector<BenchRow>& rows,
                             const Collectives& collectives);

}  // namespace fleet::native
