// `fleet bench` results kept by the controller per group and recipe revision, so that
// `fleet bench history NAME` shows how tuning a recipe changed them and flags a throughput
// figure that fell by more than 10% against the group's previous run.
//
// Example:
//   BenchRecords records(clock, store);
//   ASSIGN_OR_RETURN(v1::BenchRun stored, records.Record(group, measured));
//   for (const std::string& drop : stored.drops()) std::cerr << drop << "\n";
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "controller/store/store.h"
#include "fleet/v1/bench.pb.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::controller {

// A figure below this share of the previous run's is a drop.
inline constexpr double kBenchDropRatio = 0.9;

// Sets the `drops` of every run in `runs` (oldest first) against the previous run of the same
// group in `runs`: each row's pp_tps, tg_tps and tg_tps_total below kBenchDropRatio of the same
// row (pp, tg, depth, concurrency) there. Rows without a figure are not compared.
void MarkBenchDrops(std::vector<v1::BenchRun>& runs);

class BenchRecords {
 public:
  BenchRecords(const Clock* clock, Store* store) : clock_(clock), store_(store) {}

  // Stores `run` as measured against `group` (its recipe revision, generation and application
  // are taken from the group, never from the caller) and returns it as stored, with its drops.
  absl::StatusOr<v1::BenchRun> Record(const v1::Group& group, v1::BenchRun run);

  // The last `limit` runs of the group or application `name`, oldest first, with their drops.
  // NotFound when there are none.
  absl::StatusOr<std::vector<v1::BenchRun>> History(absl::string_view name, int limit);

 private:
  const Clock* clock_;
  Store* store_;
};

}  // namespace fleet::controller
