// `fleet bench history` and the stored form of a sweep (see history.h).
#include "cli/bench/history.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/bench/report.h"
#include "cli/document.h"
#include "cli/output.h"
#include "common/proto_time.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

v1::BenchFigure ToFigure(const bench::Stat& s) {
  v1::BenchFigure f;
  f.set_mean(s.mean);
  f.set_sd(s.sd);
  return f;
}

bench::Stat FromFigure(const v1::BenchFigure& f) { return {.mean = f.mean(), .sd = f.sd()}; }

std::string Figure(const v1::BenchRow& row, const v1::BenchFigure& f, double scale = 1) {
  return row.runs() > 0 ? absl::StrFormat("%.2f", f.mean() * scale) : "error";
}

std::string Time(const v1::BenchRun& run) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", FromProtoTime(run.at()), absl::UTCTimeZone());
}

}  // namespace

v1::BenchRun ToBenchRun(const bench::BenchReport& report, const std::string& endpoint) {
  v1::BenchRun run;
  run.set_endpoint(endpoint);
  run.set_model(report.model);
  run.set_counted_by(report.counted_by);
  run.set_stopped(report.stopped);
  for (const bench::Row& row : report.rows) {
    v1::BenchRow& r = *run.add_rows();
    r.set_pp(static_cast<uint32_t>(row.pp));
    r.set_tg(static_cast<uint32_t>(row.tg));
    r.set_depth(static_cast<uint32_t>(row.depth));
    r.set_concurrency(static_cast<uint32_t>(row.concurrency));
    r.set_runs(static_cast<uint32_t>(row.runs));
    *r.mutable_ttft_s() = ToFigure(row.ttft_s);
    *r.mutable_pp_tps() = ToFigure(row.pp_tps);
    *r.mutable_tg_tps() = ToFigure(row.tg_tps);
    *r.mutable_tg_tps_total() = ToFigure(row.tg_tps_total);
    *r.mutable_e2e_s() = ToFigure(row.e2e_s);
    for (const std::string& e : row.errors) r.add_errors(e);
  }
  return run;
}

bench::BenchReport FromBenchRun(const v1::BenchRun& run) {
  bench::BenchReport report{
      .model = run.model(), .counted_by = run.counted_by(), .stopped = run.stopped()};
  for (const v1::BenchRow& r : run.rows()) {
    report.rows.push_back(bench::Row{
        .pp = static_cast<int>(r.pp()),
        .tg = static_cast<int>(r.tg()),
        .depth = static_cast<int>(r.depth()),
        .concurrency = static_cast<int>(r.concurrency()),
        .runs = static_cast<int>(r.runs()),
        .ttft_s = FromFigure(r.ttft_s()),
        .pp_tps = FromFigure(r.pp_tps()),
        .tg_tps = FromFigure(r.tg_tps()),
        .tg_tps_total = FromFigure(r.tg_tps_total()),
        .e2e_s = FromFigure(r.e2e_s()),
        .errors = {r.errors().begin(), r.errors().end()},
    });
  }
  return report;
}

std::string RenderBenchHistory(const std::vector<v1::BenchRun>& runs) {
  Table table({"RUN", "TIME", "GROUP", "REVISION", "GEN", "PP", "TG", "DEPTH", "C", "PP T/S",
               "TG T/S", "TG T/S TOTAL", "TTFT (MS)"});
  std::vector<std::string> notes;
  for (const v1::BenchRun& run : runs) {
    for (const v1::BenchRow& row : run.rows()) {
      table.AddRow({absl::StrCat(run.id()), Time(run), run.group(), run.revision().substr(0, 12),
                    absl::StrCat(run.generation()), absl::StrCat(row.pp()), absl::StrCat(row.tg()),
                    absl::StrCat(row.depth()), absl::StrCat(row.concurrency()),
                    Figure(row, row.pp_tps()), Figure(row, row.tg_tps()),
                    Figure(row, row.tg_tps_total()), Figure(row, row.ttft_s(), 1000)});
      for (const std::string& e : row.errors()) {
        notes.push_back(
            absl::StrCat("run ", run.id(), " d", row.depth(), " c", row.concurrency(), ": ", e));
      }
    }
    if (!run.stopped().empty()) {
      notes.push_back(absl::StrCat("run ", run.id(), " stopped early: ", run.stopped()));
    }
    for (const std::string& d : run.drops()) {
      notes.push_back(absl::StrCat("DROP run ", run.id(), " ", d));
    }
  }
  std::string out = table.Render();
  for (const std::string& n : notes) absl::StrAppend(&out, n, "\n");
  return out;
}

nlohmann::ordered_json BenchHistoryJson(const std::vector<v1::BenchRun>& runs) {
  nlohmann::ordered_json doc = {{"apiVersion", "fleet/v1"}, {"kind", "BenchHistory"}};
  doc["runs"] = nlohmann::ordered_json::array();
  for (const v1::BenchRun& run : runs) {
    nlohmann::ordered_json o = {
        {"id", run.id()},
        {"at",
         absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", FromProtoTime(run.at()), absl::UTCTimeZone())},
        {"group", run.group()},
        {"application", run.application()},
        {"recipe_name", run.recipe_name()},
        {"revision", run.revision()},
        {"generation", run.generation()},
        {"endpoint", run.endpoint()},
    };
    nlohmann::ordered_json measured = bench::ReportJson(FromBenchRun(run));
    for (auto& [key, value] : measured.items()) o[key] = value;
    o["drops"] = std::vector<std::string>(run.drops().begin(), run.drops().end());
    doc["runs"].push_back(std::move(o));
  }
  return doc;
}

int BenchHistory(const Globals& g, const std::string& name, int limit) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  v1::BenchHistoryRequest request;
  request.set_name(name);
  request.set_limit(static_cast<uint32_t>(std::max(limit, 0)));
  absl::StatusOr<v1::BenchHistoryResponse> response = client->BenchHistory(request);
  if (!response.ok()) return Fail(std::string(response.status().message()));
  std::vector<v1::BenchRun> runs(response->runs().begin(), response->runs().end());
  if (*format == OutputFormat::kJson || *format == OutputFormat::kYaml) {
    std::cout << PrintDocument(BenchHistoryJson(runs), g.output);
  } else {
    std::cout << RenderBenchHistory(runs);
  }
  return 0;
}

}  // namespace fleet::cli
