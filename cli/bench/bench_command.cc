// `fleet bench` (see bench_command.h).
#include "cli/bench/bench_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/bench/curl_transport.h"
#include "cli/bench/history.h"
#include "cli/bench/report.h"
#include "cli/bench/runner.h"
#include "cli/output.h"
#include "common/clock.h"

namespace fleet::cli {
namespace {

// Set by SIGINT; a lock-free atomic is safe to store from a signal handler.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void OnInterrupt(int) {
  // A second Ctrl-C while the first is being honoured leaves at once.
  if (g_stop.exchange(true)) ::_exit(130);
}

absl::StatusOr<std::vector<int>> ParseList(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": expected integers separated ",
                                                     "by commas (e.g. 1,2,4), found \"", text,
                                                     "\""));
    }
    out.push_back(v);
  }
  return out;
}

struct Target {
  std::string base_url;  // scheme, host and port, without /v1
  // What the results are stored under: a group, or a service (an application behind its
  // router); empty for a URL.
  std::string stored_as;
};

// A URL target as given, a group's endpoint, or a service's (its router's) endpoint. A name
// that is both (an application of one replica) is the group: its head is measured directly.
absl::StatusOr<Target> ResolveTarget(const Globals& g, const std::string& target) {
  std::string url = target;
  std::string group;
  if (!absl::StartsWith(target, "http://") && !absl::StartsWith(target, "https://")) {
    absl::StatusOr<AdminClient> client = Connect(g);
    if (!client.ok()) return client.status();
    absl::StatusOr<v1::GetGroupResponse> r = client->GetGroup(target);
    if (!r.ok() && absl::IsNotFound(r.status())) {
      absl::StatusOr<v1::ListServicesResponse> services = client->ListServices(target);
      if (services.ok() && services->services_size() == 1 &&
          !services->services(0).endpoint().empty()) {
        absl::string_view base = services->services(0).endpoint();
        absl::ConsumeSuffix(&base, "/");
        return Target{.base_url = std::string(base), .stored_as = target};
      }
    }
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat(r.status().message(),
                                       " (a target that is neither a group nor a service must "
                                       "be a URL: http://HOST:PORT)"));
    }
    if (r->group().endpoint().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("group ", target,
                       " has no endpoint (its recipe serves no port); give "
                       "the URL of its API instead"));
    }
    url = r->group().endpoint();
    group = r->group().name();
  }
  absl::string_view base = url;
  absl::ConsumeSuffix(&base, "/");
  absl::ConsumeSuffix(&base, "/v1");
  return Target{.base_url = std::string(base), .stored_as = group};
}

// Keeps a group's (or service's) sweep in the controller under its recipe revision; the stored run
// carries the figures that fell more than 10% against the group's previous run.
absl::StatusOr<v1::BenchRun> Record(const Globals& g, const Target& target,
                                    const bench::BenchReport& report) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return client.status();
  v1::RecordBenchRequest request;
  request.set_group(target.stored_as);
  *request.mutable_run() = ToBenchRun(report, target.base_url);
  absl::StatusOr<v1::RecordBenchResponse> r = client->RecordBench(request);
  if (!r.ok()) return r.status();
  return r->run();
}

}  // namespace

int Bench(const Globals& g, const BenchFlags& flags) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  bench::BenchOptions options{
      .model = flags.model, .pp = flags.pp, .tg = flags.tg, .runs = flags.runs, .chat = flags.chat};
  absl::StatusOr<std::vector<int>> depths = ParseList("depth", flags.depth);
  if (!depths.ok()) return Fail(std::string(depths.status().message()));
  options.depths = *depths;
  absl::StatusOr<std::vector<int>> conc = ParseList("concurrency", flags.concurrency);
  if (!conc.ok()) return Fail(std::string(conc.status().message()));
  options.concurrency = *conc;
  absl::StatusOr<absl::Duration> timeout = ParseDurationFlag("timeout", flags.timeout);
  if (!timeout.ok()) return Fail(std::string(timeout.status().message()));
  options.request_timeout = *timeout;
  absl::StatusOr<absl::Duration> deadline = ParseDurationFlag("deadline", flags.deadline);
  if (!deadline.ok()) return Fail(std::string(deadline.status().message()));
  options.deadline = *deadline;
  if (absl::Status st = bench::ValidateOptions(options); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  if (!flags.plot.empty() && !absl::EndsWith(flags.plot, ".svg")) {
    return Fail(absl::StrCat("--plot writes SVG: give a FILE.svg, not \"", flags.plot, "\""));
  }
  if (flags.target.empty()) {
    return Fail("fleet bench needs a TARGET: a group's name or http://HOST:PORT of an OpenAI API");
  }
  absl::StatusOr<Target> target = ResolveTarget(g, flags.target);
  if (!target.ok()) return Fail(std::string(target.status().message()));
  options.base_url = target->base_url;

  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);

  const bool progress_bar = ::isatty(STDERR_FILENO) == 1;
  bench::BenchRunner runner(
      options,
      []() -> absl::StatusOr<std::unique_ptr<bench::BenchTransport>> {
        absl::StatusOr<std::unique_ptr<bench::CurlBenchTransport>> t =
            bench::CurlBenchTransport::Create(&g_stop);
        if (!t.ok()) return t.status();
        return std::unique_ptr<bench::BenchTransport>(*std::move(t));
      },
      *RealClock::Get(), &g_stop);
  absl::StatusOr<bench::BenchReport> report = runner.Run([&](const bench::BenchProgress& p) {
    if (!progress_bar) return;
    constexpr int kBar = 30;
    const int filled = p.total == 0 ? 0 : p.done * kBar / p.total;
    std::cerr << "\r[" << std::string(filled, '#') << std::string(kBar - filled, '.') << "] "
              << p.done << "/" << p.total << " runs, depth " << p.depth << ", concurrency "
              << p.concurrency << "   " << std::flush;
  });
  if (progress_bar) std::cerr << "\r\033[K" << std::flush;
  if (!report.ok()) return Fail(std::string(report.status().message()));

  std::optional<absl::StatusOr<v1::BenchRun>> stored;
  if (!target->stored_as.empty() && !report->rows.empty()) {
    stored = Record(g, *target, *report);
  }
  if (*format == OutputFormat::kJson || *format == OutputFormat::kYaml) {
    nlohmann::ordered_json doc = bench::ReportJson(*report);
    if (stored.has_value() && stored->ok()) {
      const v1::BenchRun& run = **stored;
      doc["stored"] = {{"run", run.id()},
                       {"group", run.group()},
                       {"revision", run.revision()},
                       {"generation", run.generation()},
                       {"drops", std::vector<std::string>(run.drops().begin(), run.drops().end())}};
    }
    std::cout << PrintDocument(doc, g.output);
  } else {
    std::cout << bench::RenderTable(*report);
    if (stored.has_value() && stored->ok()) {
      const v1::BenchRun& run = **stored;
      std::cout << "\nstored as run " << run.id() << " of group " << run.group() << " (revision "
                << run.revision().substr(0, 12) << ", generation " << run.generation()
                << "); `fleet bench history " << run.group() << "` shows every run\n";
      for (const std::string& d : run.drops()) std::cout << "DROP " << d << "\n";
    }
  }
  if (stored.has_value() && !stored->ok()) {
    std::cerr << "fleet: error: the figures above were measured but not stored: "
              << stored->status().message() << std::endl;
    return 1;
  }
  if (!flags.plot.empty()) {
    std::ofstream out(flags.plot, std::ios::trunc);
    out << bench::RenderSvg(*report);
    out.close();
    if (!out) return Fail(absl::StrCat("--plot: cannot write ", flags.plot));
  }
  bool clean = report->stopped.empty() && !report->rows.empty();
  for (const bench::Row& row : report->rows) clean = clean && row.errors.empty() && row.runs > 0;
  return clean ? 0 : 1;
}

}  // namespace fleet::cli
