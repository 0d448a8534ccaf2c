// `fleet bench` results kept by the controller (see bench_records.h).
#include "controller/bench/bench_records.h"

#include <map>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/proto_time.h"

namespace fleet::controller {
namespace {

using RowKey = std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>;

RowKey KeyOf(const v1::BenchRow& row) {
  return {row.pp(), row.tg(), row.depth(), row.concurrency()};
}

// The first 12 hex digits of a recipe fingerprint: enough to tell revisions apart on a line.
std::string ShortRevision(const std::string& revision) { return revision.substr(0, 12); }

void CompareRuns(const v1::BenchRun& previous, v1::BenchRun& run) {
  std::map<RowKey, const v1::BenchRow*> before;
  for (const v1::BenchRow& row : previous.rows()) {
    if (row.runs() > 0) before[KeyOf(row)] = &row;
  }
  run.clear_drops();
  for (const v1::BenchRow& row : run.rows()) {
    auto it = before.find(KeyOf(row));
    if (row.runs() == 0 || it == before.end()) continue;
    const v1::BenchRow& old = *it->second;
    const std::pair<const char*, std::pair<double, double>> figures[] = {
        {"pp_tps", {old.pp_tps().mean(), row.pp_tps().mean()}},
        {"tg_tps", {old.tg_tps().mean(), row.tg_tps().mean()}},
        {"tg_tps_total", {old.tg_tps_total().mean(), row.tg_tps_total().mean()}},
    };
    for (const auto& [name, values] : figures) {
      const auto [was, now] = values;
      if (was <= 0 || now >= kBenchDropRatio * was) continue;
      run.add_drops(
          absl::StrFormat("d%d c%d: %s %.2f -> %.2f (%+.1f%%) against run %d (revision %s)",
                          row.depth(), row.concurrency(), name, was, now, 100 * (now - was) / was,
                          previous.id(), ShortRevision(previous.revision())));
    }
  }
}

}  // namespace

void MarkBenchDrops(std::vector<v1::BenchRun>& runs) {
  std::map<std::string, const v1::BenchRun*> last_of_group;
  for (v1::BenchRun& run : runs) {
    auto it = last_of_group.find(run.group());
    if (it != last_of_group.end()) {
      CompareRuns(*it->second, run);
    } else {
      run.clear_drops();
    }
    last_of_group[run.group()] = &run;
  }
}

absl::StatusOr<v1::BenchRun> BenchRecords::Record(const v1::Group& group, v1::BenchRun run) {
  run.set_group(group.name());
  run.set_application(group.application().empty() ? group.name() : group.application());
  run.set_recipe_name(group.recipe_name());
  run.set_revision(group.fingerprint());
  run.set_generation(group.generation());
  *run.mutable_at() = ToProtoTime(clock_->Now());
  run.clear_drops();
  absl::StatusOr<int64_t> id = store_->AppendBenchRun(run);
  if (!id.ok()) return id.status();
  run.set_id(*id);
  // The previous run of the group is the one before this in its history.
  absl::StatusOr<std::vector<v1::BenchRun>> last_two = store_->LoadBenchRuns(group.name(), 2);
  if (!last_two.ok()) return last_two.status();
  MarkBenchDrops(*last_two);
  if (!last_two->empty() && last_two->back().id() == run.id()) return last_two->back();
  return run;
}

absl::StatusOr<std::vector<v1::BenchRun>> BenchRecords::History(absl::string_view name, int limit) {
  // One run more than shown, so that the oldest shown has its previous run to compare with.
  absl::StatusOr<std::vector<v1::BenchRun>> runs = store_->LoadBenchRuns(name, limit + 1);
  if (!runs.ok()) return runs.status();
  if (runs->empty()) {
    return absl::NotFoundError(absl::StrCat("no bench results for \"", name,
                                            "\": run `fleet bench ", name,
                                            "` against the group (or application) first"));
  }
  MarkBenchDrops(*runs);
  if (static_cast<int>(runs->size()) > limit) runs->erase(runs->begin());
  return *std::move(runs);
}

}  // namespace fleet::controller
