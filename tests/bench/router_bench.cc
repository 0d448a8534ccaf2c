// router_bench: what the router (HAProxy as SparkFleet renders and drives it) adds in front of one
// fleet-engine replica, against going direct, in the same run: the p50 latency of a non-streamed
// request, requests per second at a fixed concurrency, and the p50 time to the first streamed
// token. Every answer is checked (HTTP 200, a completion, the stream's [DONE]).
//
//   build/tests/bench/router_bench [--requests 300] [--concurrency 8] [--seconds 5]
//                                  [--max-tokens 4]
//
// Targets (issue 13): added p50 < 1 ms, throughput >= 0.95 of direct, first token within 50 ms.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/router/router_admin.h"
#include "cli/bench/curl_transport.h"
#include "common/files.h"
#include "common/process/process_runner_impl.h"
#include "launch/router/router.h"

#ifndef FLEET_ENGINE_BINARY
#error "FLEET_ENGINE_BINARY must name fleet-engine (set by tests/bench/CMakeLists.txt)"
#endif

namespace fleet {
namespace {

constexpr int kEnginePort = 18631;
constexpr int kRouterPort = 18632;
// A completion request for `max_tokens` tokens.
std::string Body(int max_tokens, bool stream) {
  return absl::StrCat(R"({"model": "fleet-engine-synthetic", "prompt": "hello", "max_tokens": )",
                      max_tokens, stream ? R"(, "stream": true})" : "}");
}

std::string Url(int port) { return absl::StrCat("http://127.0.0.1:", port, "/v1/completions"); }

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

bool WaitFor(const std::function<bool()>& ready) {
  for (int i = 0; i < 200; ++i) {  // 10 s
    if (ready()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

// Milliseconds of one non-streamed request, or a negative number when it failed.
double OneRequest(cli::bench::BenchTransport& t, int port, const std::string& body) {
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> r = t.Request(Url(port), &body, absl::Seconds(10));
  double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  return r.ok() && absl::StrContains(*r, "\"choices\"") ? ms : -1;
}

// Milliseconds to the first streamed token, or negative when the stream failed.
double FirstToken(cli::bench::BenchTransport& t, int port, const std::string& body) {
  absl::Time start = absl::Now();
  double first = -1;
  std::string all;
  absl::Status st = t.Stream(Url(port), body, absl::Seconds(10), [&](absl::string_view c) {
    all.append(c.data(), c.size());
    if (first < 0 && absl::StrContains(all, "\"text\"")) {
      first = absl::ToDoubleMilliseconds(absl::Now() - start);
    }
    return true;
  });
  return st.ok() && absl::StrContains(all, "data: [DONE]") ? first : -1;
}

int Run(int requests, int concurrency, int seconds, int max_tokens) {
  const std::string body = Body(max_tokens, false), stream_body = Body(max_tokens, true);
  ProcessRunner* runner = DefaultProcessRunner();
  char dir_template[] = "/tmp/router-bench-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return 1;
  const std::string dir = dir_template;
  absl::StatusOr<std::unique_ptr<ChildProcess>> engine =
      runner->Start({.argv = {FLEET_ENGINE_BINARY,
                              "serve",
                              "--device",
                              "cpu",
                              "--port",
                              absl::StrCat(kEnginePort),
                              "--hidden-size",
                              "64",
                              "--num-layers",
                              "2",
                              "--num-heads",
                              "4",
                              "--num-experts",
                              "4",
                              "--experts-per-token",
                              "2",
                              "--expert-ffn-size",
                              "64",
                              "--vocab-size",
                              "256",
                              "--max-seq-len",
                              "256",
                              "--max-num-seqs",
                              "16"},
                     .output_path = dir + "/engine.log",
                     .die_with_parent = true});
  if (!engine.ok()) return std::fprintf(stderr, "%s\n", engine.status().ToString().c_str()), 1;
  absl::StatusOr<std::string> config =
      engine::RenderRouterConfig({.address = "127.0.0.1", .port = kRouterPort, .slots = 1});
  if (!config.ok() || !WriteFileAtomically(dir + "/haproxy.cfg", *config).ok()) return 1;
  absl::StatusOr<std::unique_ptr<ChildProcess>> haproxy =
      runner->Start({.argv = {"haproxy", "-db", "-f", "haproxy.cfg"},
                     .output_path = dir + "/haproxy.log",
                     .die_with_parent = true,
                     .cwd = dir});
  if (!haproxy.ok()) return std::fprintf(stderr, "%s\n", haproxy.status().ToString().c_str()), 1;
  auto transport = cli::bench::CurlBenchTransport::Create();
  if (!transport.ok()) return 1;
  if (!WaitFor([&] { return OneRequest(**transport, kEnginePort, body) >= 0; })) {
    return std::fprintf(stderr, "fleet-engine did not answer; see %s/engine.log\n", dir.c_str()), 1;
  }
  // The slot driven exactly as the agent drives it: typed request → runtime-API lines.
  v1::RouterCommandRequest set;
  v1::RouterServer& slot = *set.mutable_set_servers()->add_servers();
  slot.set_slot(1);
  slot.set_host("127.0.0.1");
  slot.set_port(kEnginePort);
  slot.set_state(v1::ROUTER_SERVER_STATE_READY);
  absl::StatusOr<std::vector<std::string>> lines = engine::RouterCommandLines(set);
  if (!lines.ok()) return 1;
  bool set_ok = WaitFor([&] {
    for (const std::string& line : *lines) {
      absl::StatusOr<std::string> reply = agent::SendRouterLine(dir + "/admin.sock", line);
      if (!reply.ok() || !engine::CheckRouterReply(line, *reply).ok()) return false;
    }
    return true;
  });
  if (!set_ok || !WaitFor([&] { return OneRequest(**transport, kRouterPort, body) >= 0; })) {
    return std::fprintf(stderr, "the router did not answer; see %s/haproxy.log\n", dir.c_str()), 1;
  }
  int failed = 0;
  // 1. Latency, alternating direct and routed so drift hits both alike.
  std::vector<double> direct, routed;
  for (int i = 0; i < requests; ++i) {
    double d = OneRequest(**transport, kEnginePort, body),
           r = OneRequest(**transport, kRouterPort, body);
    if (d < 0 || r < 0) ++failed;
    direct.push_back(d);
    routed.push_back(r);
  }
  // 2. Throughput at `concurrency`, each side for `seconds` in all, in alternating one-second
  // rounds so that drift of the machine's load hits both alike.
  auto round = [&](int port) {
    std::atomic<int> done{0}, bad{0};
    std::vector<std::thread> threads;
    const absl::Time end = absl::Now() + absl::Seconds(1);
    for (int c = 0; c < concurrency; ++c) {
      threads.emplace_back([&] {
        auto t = cli::bench::CurlBenchTransport::Create();
        if (!t.ok()) return;
        while (absl::Now() < end) (OneRequest(**t, port, body) >= 0 ? done : bad)++;
      });
    }
    for (std::thread& t : threads) t.join();
    failed += bad.load();
    return done.load();
  };
  int direct_done = 0, routed_done = 0;
  for (int s = 0; s < seconds; ++s) {
    direct_done += round(kEnginePort);
    routed_done += round(kRouterPort);
  }
  const double rps_direct = direct_done / static_cast<double>(seconds);
  const double rps_routed = routed_done / static_cast<double>(seconds);
  // 3. First streamed token.
  std::vector<double> ttft_direct, ttft_routed;
  for (int i = 0; i < std::max(requests / 3, 10); ++i) {
    double d = FirstToken(**transport, kEnginePort, stream_body),
           r = FirstToken(**transport, kRouterPort, stream_body);
    if (d < 0 || r < 0) ++failed;
    ttft_direct.push_back(d);
    ttft_routed.push_back(r);
  }
  std::printf(
      "router_bench: fleet-engine (CPU, 2 layers) on 127.0.0.1, HAProxy as rendered by "
      "launch/router, %d tokens per request\n",
      max_tokens);
  std::printf("%-40s %10s %10s %10s\n", "", "direct", "router", "router-direct");
  std::printf("%-40s %10.3f %10.3f %10.3f ms (target < 1 ms)\n",
              absl::StrFormat("p50 latency, %d non-streamed", requests).c_str(), P50(direct),
              P50(routed), P50(routed) - P50(direct));
  std::printf("%-40s %10.1f %10.1f %10.3f ratio (target >= 0.95)\n",
              absl::StrFormat("requests/s, concurrency %d, %d s", concurrency, seconds).c_str(),
              rps_direct, rps_routed, rps_routed / rps_direct);
  std::printf("%-40s %10.3f %10.3f %10.3f ms (target < 50 ms)\n",
              absl::StrFormat("p50 first streamed token, %zu", ttft_direct.size()).c_str(),
              P50(ttft_direct), P50(ttft_routed), P50(ttft_routed) - P50(ttft_direct));
  std::printf("failed requests: %d\n", failed);
  (void)(*haproxy)->Signal(SIGTERM);
  (void)(*engine)->Signal(SIGTERM);
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace fleet

int main(int argc, char** argv) {
  CLI::App app("router_bench: the router's added latency, throughput and first-token time");
  int requests = 300, concurrency = 8, seconds = 5, max_tokens = 4;
  app.add_option("--requests", requests, "sequential requests per side")->capture_default_str();
  app.add_option("--concurrency", concurrency, "clients in the throughput phase")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "length of each throughput phase")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "tokens each request asks for")
      ->check(CLI::Range(1, 200))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return fleet::Run(requests, concurrency, seconds, max_tokens);
}
