// apply_bench: how long `fleet apply` takes from the command to a Ready 4-rank group whose
// engine is ready at once (fleet-echo-engine: rank 0 waits for the three others on its master
// port, then serves HTTP), against a reference measured in the same run: the same four engine
// processes started by hand on the same hosts, all at once, with /health polled every 10 ms.
// The difference is SparkFleet's overhead; the community's procedure waits a fixed 10 s
// between workers and head.
//
//   build/tests/bench/apply_bench [--runs 10]
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
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

constexpr int kRanks = 4;

int Fail(const std::string& what) {
  std::fprintf(stderr, "apply_bench: %s\n", what.c_str());
  return 1;
}

int Run(int runs) {
  absl::StatusOr<std::unique_ptr<TestNetwork>> net = CreateTestNetwork(kRanks + 1);
  if (!net.ok()) return Fail(net.status().ToString());
  absl::StatusOr<std::unique_ptr<TestCluster>> made = TestCluster::Create(**net, FLEET_BINARY);
  if (!made.ok()) return Fail(made.status().ToString());
  TestCluster& cluster = **made;
  if (absl::Status st = StartReadyCluster(cluster, kRanks); !st.ok()) return Fail(st.ToString());
  const int port = 18500;
  const std::string recipe = absl::StrCat(cluster.temp_dir(), "/bench.yaml");
  std::ofstream(recipe) << absl::StrCat(R"(recipe_version: "2"
name: bench
engine: exec
runtime: process
nodes: 4
defaults:
  port: )",
                                        port, R"(
command: fleet-echo-engine --port {port}
)");

  std::vector<double> apply, controller, raw;
  for (int run = 0; run < runs; ++run) {
    const absl::Time start = absl::Now();
    absl::StatusOr<CommandResult> r = cluster.RunCli({"apply", recipe}, absl::Seconds(60));
    if (!r.ok() || r->exit_code != 0) {
      return Fail(absl::StrCat("apply failed: ", r.ok() ? r->stderr_text : r.status().ToString(),
                               "\n", cluster.LogTails()));
    }
    apply.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    absl::StatusOr<CommandResult> d = cluster.RunCli({"describe", "group", "bench", "-o", "json"});
    if (d.ok() && d->exit_code == 0) {
      nlohmann::json doc = nlohmann::json::parse(d->stdout_text);
      absl::Time started, ready;
      std::string err;
      if (absl::ParseTime(absl::RFC3339_full, doc["group"].value("startedAt", ""), &started,
                          &err) &&
          absl::ParseTime(absl::RFC3339_full, doc["group"].value("readyAt", ""), &ready, &err)) {
        controller.push_back(absl::ToDoubleSeconds(ready - started));
      }
    }
    absl::StatusOr<CommandResult> s = cluster.RunCli({"stop", "bench"}, absl::Seconds(60));
    if (!s.ok() || s->exit_code != 0) return Fail("stop failed");

    absl::StatusOr<double> hand =
        HandLaunch(**net, ECHO_ENGINE_BINARY, kRanks, port + 1, 29500, run + 1);
    if (!hand.ok()) return Fail(hand.status().ToString());
    raw.push_back(*hand);
    std::printf(
        "run %2d: fleet apply %.3f s (controller: start orders -> Ready %.3f s), "
        "hand launch %.3f s\n",
        run + 1, apply.back(), controller.empty() ? -1.0 : controller.back(), raw.back());
  }
  double a = Median(apply), h = Median(raw);
  std::printf("\nmedian of %d runs, %d ranks on %s hosts:\n", runs, kRanks,
              (*net)->isolated() ? "network-namespace" : "127.0.0.x");
  std::printf("  fleet apply -> Ready (CLI wall time)      %.3f s\n", a);
  if (!controller.empty()) {
    std::printf("  controller start orders -> Ready           %.3f s\n", Median(controller));
  }
  std::printf("  hand launch of the same ranks (reference) %.3f s\n", h);
  std::printf("  SparkFleet overhead                        %.3f s (%.2fx the hand launch)\n",
              a - h, a / h);
  std::printf("  target: apply -> Ready under 1 s: %s\n", a < 1.0 ? "met" : "MISSED");
  return 0;
}

}  // namespace
}  // namespace fleet::testing

int main(int argc, char** argv) {
  CLI::App app{"apply_bench: fleet apply -> Ready against a hand launch"};
  int runs = 10;
  app.add_option("--runs", runs, "runs of each")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return fleet::testing::Run(runs);
}
