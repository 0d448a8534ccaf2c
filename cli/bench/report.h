// `fleet bench`'s output: llama-benchy's pipe table for a terminal, one JSON/YAML row per
// (depth, concurrency) for machines, and an SVG chart of decode throughput.
#pragma once

#include <string>

#include "cli/bench/runner.h"
#include "nlohmann/json.hpp"

namespace fleet::cli::bench {

// A Markdown pipe table as llama-benchy prints it, two lines per row ("pp2048 @ d4096" with the
// prefill figures, "tg128 @ d4096" with the decode ones), values "mean ± sd"; then each row's
// errors and, when the sweep ended early, why.
std::string RenderTable(const BenchReport& report);

// {"model", "counted_by", "stopped", "rows": [{pp, tg, depth, concurrency, ttft_s, pp_tps,
// tg_tps, tg_tps_total, e2e_s, runs, <each>_sd, errors}]}; a figure with no successful run is
// null.
nlohmann::ordered_json ReportJson(const BenchReport& report);

// Total decode tokens/s (y) against concurrency (x), one line per depth, with axes, ticks and
// a legend; rows without a figure are left out.
std::string RenderSvg(const BenchReport& report);

}  // namespace fleet::cli::bench
