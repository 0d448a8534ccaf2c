// What apply_bench and restart_bench share: a controller and agents on a TestNetwork, every
// agent Ready; fleet-echo-engine's ranks started by hand on the same hosts as the reference;
// medians.
#ifndef FLEET_TESTS_BENCH_ECHO_CLUSTER_H_
#define FLEET_TESTS_BENCH_ECHO_CLUSTER_H_

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

namespace fleet::testing {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// GET `url` from the controller's host answers 200 within a second.
inline bool Healthy(const TestNetwork& net, const std::string& url) {
  absl::StatusOr<CommandResult> r =
      RunCommand(net.Wrap(0, {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy",
                              "*", "-m", "1", url}),
                 std::chrono::seconds(5));
  return r.ok() && r->stdout_text == "200";
}

// Starts the controller and agents node-1..node-`agents` and waits until all are Ready.
inline absl::Status StartReadyCluster(TestCluster& cluster, int agents) {
  if (absl::Status st = cluster.StartController(); !st.ok()) return st;
  std::vector<std::string> names;
  for (int i = 1; i <= agents; ++i) {
    if (absl::Status st = cluster.StartAgent(i); !st.ok()) return st;
    names.push_back(TestCluster::AgentName(i));
  }
  if (!WaitForNodes(
          cluster, [&](const nlohmann::json& d) { return AllReady(d, names); },
          absl::Seconds(15))) {
    return absl::DeadlineExceededError("agents not Ready within 15 s");
  }
  return absl::OkStatus();
}

// The reference: `ranks` fleet-echo-engine ranks (`echo_engine`) started at once on hosts
// 1..ranks, as a hand launch or a respawn loop would (ranks retry their connection to the head,
// so order does not matter), then /health polled every 10 ms from the controller's host. The
// seconds until it answered; the ranks are stopped again.
inline absl::StatusOr<double> HandLaunch(const TestNetwork& net, const std::string& echo_engine,
                                         int ranks, int port, int master_port, int generation) {
  std::vector<Process> started;
  const absl::Time start = absl::Now();
  for (int k = 0; k < ranks; ++k) {
    std::vector<std::string> argv = {"env",
                                     absl::StrCat("FLEET_RANK=", k),
                                     absl::StrCat("FLEET_WORLD_SIZE=", ranks),
                                     absl::StrCat("FLEET_MASTER_ADDR=", net.host(1).ip),
                                     absl::StrCat("FLEET_MASTER_PORT=", master_port),
                                     "FLEET_GROUP=raw",
                                     absl::StrCat("FLEET_GENERATION=", generation),
                                     echo_engine,
                                     "--port",
                                     absl::StrCat(port)};
    absl::StatusOr<Process> p =
        Process::Start({.argv = net.Wrap(k + 1, argv), .output_path = "/dev/null"});
    if (!p.ok()) return p.status();
    started.push_back(*std::move(p));
  }
  const std::string url = absl::StrCat("http://", net.host(1).ip, ":", port, "/health");
  while (absl::Now() - start < absl::Seconds(30)) {
    if (Healthy(net, url)) {
      double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      for (Process& p : started) (void)p.Stop(absl::Seconds(5));
      return seconds;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError("hand-started group never answered /health");
}

}  // namespace fleet::testing

#endif  // FLEET_TESTS_BENCH_ECHO_CLUSTER_H_
