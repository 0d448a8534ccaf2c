// fleet bench's own cost: (1) the parsing and timing of one streamed token, on events handed
// over in memory (no network), and (2) up to what aggregate decode rate its figures hold
// against a stand-in server on loopback whose rate is set, as requests x tokens/s each.
//   ./build/tests/bench/fleet_bench_overhead_bench [--tokens 200000] [--concurrency 8]
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cli/bench/curl_transport.h"
#include "cli/bench/measure.h"
#include "cli/bench/runner.h"
#include "common/clock.h"
#include "tests/support/bench_standin/bench_standin.h"

namespace fleet::cli::bench {
namespace {

// Hands a prebuilt stream over in pieces of one event, as a server flushing each token does.
class MemoryTransport final : public BenchTransport {
 public:
  explicit MemoryTransport(std::vector<std::string> events) : events_(std::move(events)) {}
  absl::StatusOr<std::string> Request(const std::string&, const std::string*,
                                      absl::Duration) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status Stream(const std::string&, const std::string&, absl::Duration,
                      const ChunkSink& sink) override {
    for (const std::string& e : events_) {
      if (!sink(e)) return absl::CancelledError("stopped");
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::string> events_;
};

int Main(int argc, char** argv) {
  int tokens = 200'000;
  int concurrency = 8;
  CLI::App app{"fleet bench's overhead per streamed token"};
  app.add_option("--tokens", tokens, "tokens of the in-memory stream");
  app.add_option("--concurrency", concurrency, "requests at once against the stand-in");
  CLI11_PARSE(app, argc, argv);

  // (1) In memory: an event as vLLM sends it for a completion token.
  std::vector<std::string> events;
  for (int i = 0; i < tokens; ++i) {
    events.push_back(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,"
        "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" tok\",\"logprobs\":null,"
        "\"finish_reason\":null}]}\n\n");
  }
  events.push_back(
      absl::StrCat("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,"
                   "\"completion_tokens\":",
                   tokens, "}}\n\ndata: [DONE]\n\n"));
  MemoryTransport memory(events);
  const absl::Time t0 = absl::Now();
  RequestResult r =
      RunStreamed(memory, *RealClock::Get(), {.url = "u", .body = "{}", .max_tokens = tokens});
  const double per_token_us = absl::ToDoubleMicroseconds(absl::Now() - t0) / tokens;
  std::printf("in memory: %d tokens, %.2f us per token (%s)\n", tokens, per_token_us,
              r.error.empty() ? "ok" : r.error.c_str());

  // (2) Against the stand-in: the set aggregate rate against the measured total.
  std::printf("%12s %14s %14s %10s\n", "set t/s", "measured t/s", "per request", "error");
  for (double per_request : {125.0, 250.0, 500.0, 1000.0, 2000.0}) {
    absl::StatusOr<std::unique_ptr<standin::BenchStandin>> server = standin::BenchStandin::Start(
        {.first_token = absl::Milliseconds(10), .prefill_tps = 1e6, .decode_tps = per_request});
    if (!server.ok()) {
      std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
      return 1;
    }
    BenchOptions options{.base_url = (*server)->url(),
                         .pp = 64,
                         .tg = static_cast<int>(per_request),  // one second of decode
                         .depths = {0},
                         .concurrency = {concurrency},
                         .runs = 3};
    BenchRunner runner(
        options,
        []() -> absl::StatusOr<std::unique_ptr<BenchTransport>> {
          absl::StatusOr<std::unique_ptr<CurlBenchTransport>> t = CurlBenchTransport::Create();
          if (!t.ok()) return t.status();
          return std::unique_ptr<BenchTransport>(*std::move(t));
        },
        *RealClock::Get(), nullptr);
    absl::StatusOr<BenchReport> report = runner.Run(nullptr);
    if (!report.ok() || report->rows.empty() || report->rows[0].runs == 0) {
      std::printf("%12.0f  failed\n", per_request * concurrency);
      continue;
    }
    const Row& row = report->rows[0];
    const double set = per_request * concurrency;
    std::printf("%12.0f %14.0f %14.1f %9.1f%%\n", set, row.tg_tps_total.mean, row.tg_tps.mean,
                100 * (row.tg_tps_total.mean - set) / set);
  }
  return 0;
}

}  // namespace
}  // namespace fleet::cli::bench

int main(int argc, char** argv) { return fleet::cli::bench::Main(argc, argv); }
