// fleet-engine bench-collectives (see bench_collectives.h).
#include "engine/server/bench_collectives.h"

#include <chrono>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace fleet::native {
namespace {

// Small integers, so sums over ranks are exact in float32.
float Fill(int rank, size_t i) {
  return static_cast<float>((rank + 1) * static_cast<int>(i % 7 + 1));
}

double BusFactor(const std::string& op, int n) {
  if (n <= 1) return 0;
  return op == "all_reduce" ? 2.0 * (n - 1) / n : static_cast<double>(n - 1) / n;
}

// One op at one size: warm-up, timed calls, then one checked call.
absl::StatusOr<BenchRow> RunOne(Collectives& comm, const std::string& op, size_t count,
                                const BenchOptions& options) {
  const int n = comm.size();
  const size_t send_count = count;
  const size_t recv_count = op == "all_reduce" ? count : count * n;
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> send, comm.Allocate(send_count * sizeof(float)));
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> recv,
                   comm.Allocate(std::max<size_t>(recv_count, 1) * sizeof(float)));
  std::vector<float> host(std::max(send_count, recv_count));
  for (size_t i = 0; i < send_count; ++i) host[i] = Fill(comm.rank(), i);
  auto fill = [&]() { return comm.Upload(*send, host.data(), send_count * sizeof(float)); };
  auto call = [&]() -> absl::Status {
    if (op == "all_reduce") return comm.AllReduceSum(send->data(), count, DType::kFloat32);
    return comm.AllGather(send->data(), recv->data(), count, DType::kFloat32);
  };

  RETURN_IF_ERROR(fill());
  for (int i = 0; i < options.warmup; ++i) RETURN_IF_ERROR(call());
  RETURN_IF_ERROR(comm.Barrier());
  RETURN_IF_ERROR(comm.Synchronize());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < options.iters; ++i) RETURN_IF_ERROR(call());
  RETURN_IF_ERROR(comm.Synchronize());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
      options.iters;

  // Correctness: a fresh input, one call, every element compared with the expected value.
  RETURN_IF_ERROR(fill());
  RETURN_IF_ERROR(call());
  RETURN_IF_ERROR(comm.Synchronize());
  Buffer& result = op == "all_reduce" ? *send : *recv;
  RETURN_IF_ERROR(comm.Download(host.data(), result, recv_count * sizeof(float)));
  int32_t wrong = 0;
  for (size_t i = 0; i < recv_count; ++i) {
    float expected;
    if (op == "all_reduce") {
      expected = static_cast<float>(static_cast<int>(i % 7 + 1) * n * (n + 1) / 2);
    } else {
      expected = Fill(static_cast<int>(i / count), i % count);
    }
    if (host[i] != expected) ++wrong;
  }

  // Average time and total wrong elements over ranks, through the collectives themselves.
  std::vector<float> totals = {static_cast<float>(seconds), static_cast<float>(wrong)};
  ASSIGN_OR_RETURN(std::unique_ptr<Buffer> reduce, comm.Allocate(sizeof(float) * totals.size()));
  RETURN_IF_ERROR(comm.Upload(*reduce, totals.data(), sizeof(float) * totals.size()));
  RETURN_IF_ERROR(comm.AllReduceSum(reduce->data(), totals.size(), DType::kFloat32));
  RETURN_IF_ERROR(comm.Synchronize());
  RETURN_IF_ERROR(comm.Download(totals.data(), *reduce, sizeof(float) * totals.size()));

  BenchRow row{.op = op, .count = recv_count};
  row.bytes = recv_count * sizeof(float);
  const double mean_seconds = totals[0] / n;
  row.time_us = mean_seconds * 1e6;
  row.algbw_gbps = static_cast<double>(row.bytes) / mean_seconds / 1e9;
  row.busbw_gbps = row.algbw_gbps * BusFactor(op, n);
  row.wrong = static_cast<int64_t>(std::llround(totals[1]));
  return row;
}

}  // namespace

absl::StatusOr<std::vector<BenchRow>> RunCollectiveBench(Collectives& collectives,
                                                         const BenchOptions& options) {
  if (options.min_bytes < sizeof(float) || options.max_bytes < options.min_bytes ||
      options.factor < 2 || options.iters < 1 || options.warmup < 0) {
    return absl::InvalidArgumentError(
        "the sweep needs 4 <= min bytes <= max bytes, a factor of at least 2 and at least one "
        "iteration");
  }
  std::vector<BenchRow> rows;
  for (const std::string& op : options.ops) {
    if (op != "all_reduce" && op != "all_gather") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown collective '", op, "': use all_reduce or all_gather"));
    }
    for (size_t bytes = options.min_bytes; bytes <= options.max_bytes; bytes *= options.factor) {
      // all_gather's size is the gathered result, as in nccl-tests: each rank sends size / n.
      size_t count = bytes / sizeof(float);
      if (op == "all_gather") count = std::max<size_t>(count / collectives.size(), 1);
      ASSIGN_OR_RETURN(BenchRow row, RunOne(collectives, op, count, options));
      rows.push_back(row);
    }
  }
  return rows;
}

std::string FormatBenchTable(const std::string& op, const std::vector<BenchRow>& rows,
                             const Collectives& collectives) {
  std::string out = absl::StrFormat(
      "# fleet-engine bench-collectives: %s, %d ranks, %s\n#\n"
      "# %10s  %12s  %8s  %6s  %6s  %9s  %7s  %7s  %6s\n"
      "# %10s  %12s  %8s  %6s  %6s  %9s  %7s  %7s  %6s\n",
      op, collectives.size(), collectives.Describe(), "size", "count", "type", "redop", "root",
      "time", "algbw", "busbw", "#wrong", "(B)", "(elements)", "", "", "", "(us)", "(GB/s)",
      "(GB/s)", "");
  double busbw_sum = 0;
  int n = 0;
  int64_t wrong = 0;
  for (const BenchRow& row : rows) {
    if (row.op != op) continue;
    absl::StrAppendFormat(&out, "  %10d  %12d  %8s  %6s  %6d  %9.2f  %7.2f  %7.2f  %6d\n",
                          row.bytes, row.count, "float", op == "all_reduce" ? "sum" : "none", -1,
                          row.time_us, row.algbw_gbps, row.busbw_gbps, row.wrong);
    busbw_sum += row.busbw_gbps;
    wrong += row.wrong;
    ++n;
  }
  absl::StrAppendFormat(&out, "# Wrong elements       : %d %s\n", wrong,
                        wrong == 0 ? "OK" : "FAILED");
  absl::StrAppendFormat(&out, "# Avg bus bandwidth    : %.4f\n", n > 0 ? busbw_sum / n : 0.0);
  return out;
}

}  // namespace fleet::native
