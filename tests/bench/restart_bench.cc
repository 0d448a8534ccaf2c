// restart_bench: how long a group takes to be serving again after its head is killed with
// SIGKILL (the agent sees the exit, the controller stops every other rank and confirms them
// gone, then starts the next generation in launch order), against a reference measured in the
// same run: the same two engine processes started again by hand at once, as a respawn loop on
// each host would, with /health polled every 10 ms. The difference is what the coordinated
// restart costs; restart.window is short so that every kill is a first restart (no backoff).
//
//   build/tests/bench/restart_bench [--runs 10]
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"
#include "tests/bench/echo_cluster.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

namespace fleet::testing {
namespace {

constexpr int kRanks = 2;

int Fail(const std::string& what) {
  std::fprintf(stderr, "restart_bench: %s\n", what.c_str());
  return 1;
}

nlohmann::json Describe(const TestCluster& cluster) {
  absl::StatusOr<CommandResult> d = cluster.RunCli({"describe", "group", "bench", "-o", "json"});
  if (!d.ok() || d->exit_code != 0) return nlohmann::json();
  return nlohmann::json::parse(d->stdout_text, nullptr, false);
}

int Run(int runs) {
  absl::StatusOr<std::unique_ptr<TestNetwork>> net = CreateTestNetwork(kRanks + 1);
  if (!net.ok()) return Fail(net.status().ToString());
  absl::StatusOr<std::unique_ptr<TestCluster>> made = TestCluster::Create(**net, FLEET_BINARY);
  if (!made.ok()) return Fail(made.status().ToString());
  TestCluster& cluster = **made;
  if (absl::Status st = StartReadyCluster(cluster, kRanks); !st.ok()) return Fail(st.ToString());
  const int port = 18600;
  const std::string recipe = absl::StrCat(cluster.temp_dir(), "/bench.yaml");
  std::ofstream(recipe) << absl::StrCat(R"(recipe_version: "2"
name: bench
engine: exec
runtime: process
nodes: 2
defaults:
  port: )",
                                        port, R"(
restart:
  window: 100ms
  max_restarts: 1000
command: fleet-echo-engine --port {port}
)");
  absl::StatusOr<CommandResult> applied = cluster.RunCli({"apply", recipe}, absl::Seconds(60));
  if (!applied.ok() || applied->exit_code != 0) return Fail("apply failed");
  const std::string url = absl::StrCat("http://", (*net)->host(1).ip, ":", port, "/health");

  std::vector<double> ordered, serving, raw;
  for (int run = 0; run < runs; ++run) {
    nlohmann::json before = Describe(cluster);
    uint64_t generation = 0;
    (void)absl::SimpleAtoi(before["group"].value("generation", "0"), &generation);
    const int pid = before["group"]["ranks"][0]["status"].value("pid", 0);
    if (pid <= 0) return Fail("no head pid");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // past restart.window
    const absl::Time killed = absl::Now();
    ::kill(pid, SIGKILL);
    // Serving again: the new generation's head answers /health (polled every 10 ms).
    absl::Time answered;
    bool next = false;
    while (absl::Now() - killed < absl::Seconds(30)) {
      if (!next) {
        nlohmann::json d = Describe(cluster);
        uint64_t g = 0;
        next = absl::SimpleAtoi(d["group"].value("generation", "0"), &g) && g > generation;
      }
      if (next && Healthy(**net, url)) {
        answered = absl::Now();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!next || answered == absl::Time()) return Fail(cluster.LogTails());
    serving.push_back(absl::ToDoubleSeconds(answered - killed));
    // When the controller ordered the new generation (its startedAt).
    nlohmann::json after = Describe(cluster);
    absl::Time started;
    std::string err;
    if (absl::ParseTime(absl::RFC3339_full, after["group"].value("startedAt", ""), &started,
                        &err)) {
      ordered.push_back(absl::ToDoubleSeconds(started - killed));
    }
    absl::StatusOr<double> hand =
        HandLaunch(**net, ECHO_ENGINE_BINARY, kRanks, port + 1, 29600, run + 1);
    if (!hand.ok()) return Fail(hand.status().ToString());
    raw.push_back(*hand);
    std::printf(
        "run %2d: head killed -> generation %lu ordered %.3f s, serving %.3f s; "
        "hand respawn %.3f s\n",
        run + 1, static_cast<unsigned long>(generation + 1),
        ordered.empty() ? -1.0 : ordered.back(), serving.back(), raw.back());
  }
  (void)cluster.RunCli({"stop", "bench"}, absl::Seconds(60));
  const double s = Median(serving), h = Median(raw);
  std::printf("\nmedian of %d runs, %d ranks on %s hosts:\n", runs, kRanks,
              (*net)->isolated() ? "network-namespace" : "127.0.0.x");
  if (!ordered.empty()) {
    std::printf("  head killed -> next generation ordered      %.3f s\n", Median(ordered));
  }
  std::printf("  head killed -> serving again (/health 200)   %.3f s\n", s);
  std::printf("  hand respawn of the same ranks (reference)   %.3f s\n", h);
  std::printf("  coordinated restart overhead                  %.3f s (%.2fx the respawn)\n", s - h,
              s / h);
  std::printf("  target: rank exit -> new generation under 1 s plus backoff: %s\n",
              !ordered.empty() && Median(ordered) < 1.0 ? "met" : "MISSED");
  return 0;
}

}  // namespace
}  // namespace fleet::testing

int main(int argc, char** argv) {
  CLI::App app{"restart_bench: a killed head -> serving again, against a hand respawn"};
  int runs = 10;
  app.add_option("--runs", runs, "runs of each")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return fleet::testing::Run(runs);
}
