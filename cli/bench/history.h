// `fleet bench`'s results as the controller keeps them (fleet/v1/bench.proto), and
// `fleet bench history NAME`: every stored sweep of a group or application, oldest first, each
// with its recipe revision and the figures that fell more than 10% against the previous run.
#pragma once

#include <string>
#include <vector>

#include "cli/bench/runner.h"
#include "cli/commands.h"
#include "fleet/v1/bench.pb.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {

// The measured part of a sweep, for RecordBench; the controller adds the group's part.
v1::BenchRun ToBenchRun(const bench::BenchReport& report, const std::string& endpoint);
// A stored sweep's rows and model, for the JSON rows `fleet bench -o json` prints.
bench::BenchReport FromBenchRun(const v1::BenchRun& run);

// One row per (run, depth, concurrency), then each run's drops.
std::string RenderBenchHistory(const std::vector<v1::BenchRun>& runs);
// {"apiVersion", "kind": "BenchHistory", "runs": [{id, at, group, application, recipe_name,
// revision, generation, endpoint, model, counted_by, stopped, rows (as `fleet bench -o json`),
// drops}]}.
nlohmann::ordered_json BenchHistoryJson(const std::vector<v1::BenchRun>& runs);

// `fleet bench history NAME [--limit N] [-o json|yaml]`. Exit 0, also when a drop is flagged
// (the drops are part of the output).
int BenchHistory(const Globals& g, const std::string& name, int limit);

}  // namespace fleet::cli
