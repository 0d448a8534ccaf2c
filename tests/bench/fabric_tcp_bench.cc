// fabric_tcp_bench: `fleet fabric` TCP bandwidth against iperf3 on the same pair of addresses in
// the same run. A local cluster (`fleet up --nodes 2`, agents on 127.0.0.2 and 127.0.0.3) runs
// `fleet fabric --nodes node-1,node-2`; iperf3 runs between the same two addresses with the same
// streams, duration and write size. Runs alternate, and the medians are compared.
//
//   build/tests/bench/fabric_tcp_bench [--runs 3] [--duration 5] [--streams 4]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"

namespace fleet {
namespace {

// Runs argv to completion with its output in `out`; the exit code, or -1.
int RunToEnd(std::vector<std::string> argv, const std::string& out, absl::Duration limit,
             std::vector<std::string> env = {}) {
  absl::StatusOr<Process> p = Process::Start({.argv = std::move(argv),
                                              .env = std::move(env),
                                              .output_path = out,
                                              .die_with_parent = true});
  if (!p.ok()) {
    std::cerr << p.status() << "\n";
    return -1;
  }
  absl::StatusOr<int> st = p->Wait(limit);
  if (!st.ok()) {
    (void)p->Stop(absl::Seconds(1));
    return -1;
  }
  return WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int Main(int argc, char** argv) {
  CLI::App app{"fleet fabric TCP vs iperf3 on the same addresses"};
  int runs = 3, duration = 5, streams = 4;
  app.add_option("--runs", runs, "alternating runs of each")->capture_default_str();
  app.add_option("--duration", duration, "seconds per run")->capture_default_str();
  app.add_option("--streams", streams, "parallel TCP streams")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const int buffer = 128 << 10;  // fleet fabric's default write size; iperf3 -l the same

  char tmpl[] = "/tmp/fleet-fabric-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = tmpl;
  const std::string env = absl::StrCat("FLEET_CONFIG=", dir, "/config.yaml");
  if (RunToEnd({FLEET_BINARY, "up", "--dir", dir, "--nodes", "2", "--no-recipe", "--detach"},
               dir + "/up.out", absl::Seconds(60)) != 0) {
    std::cerr << "fleet up failed: " << ReadFileToString(dir + "/up.out").value_or("") << "\n";
    return 1;
  }
  // iperf3's server on the receiving node's address; one test at a time (-1 each run).
  std::vector<double> fleet_gbps, iperf_gbps;
  int status = 0;
  for (int r = 0; r < runs && status == 0; ++r) {
    std::string out = absl::StrCat(dir, "/fleet-", r, ".json");
    if (RunToEnd({FLEET_BINARY, "fabric", "--nodes", "node-1,node-2", "--duration",
                  absl::StrCat(duration, "s"), "--streams", absl::StrCat(streams), "--buffer-bytes",
                  absl::StrCat(buffer), "-o", "json"},
                 out, absl::Seconds(duration + 60), {env}) != 0) {
      std::cerr << "fleet fabric failed: " << ReadFileToString(out).value_or("") << "\n";
      status = 1;
      break;
    }
    nlohmann::json doc = nlohmann::json::parse(ReadFileToString(out).value_or(""), nullptr, false);
    if (doc.is_discarded() || doc["items"].size() != 1 ||
        !doc["items"][0]["bandwidth_gbps"].is_number()) {
      std::cerr << "unexpected fleet fabric output in " << out << "\n";
      status = 1;
      break;
    }
    fleet_gbps.push_back(doc["items"][0]["bandwidth_gbps"].get<double>());

    std::string server_out = absl::StrCat(dir, "/iperf-server-", r, ".out");
    absl::StatusOr<Process> server =
        Process::Start({.argv = {"iperf3", "-s", "-1", "-B", "127.0.0.3", "-p", "5301"},
                        .output_path = server_out,
                        .die_with_parent = true});
    if (!server.ok()) {
      std::cerr << "iperf3 -s: " << server.status() << "\n";
      status = 1;
      break;
    }
    std::string client_out = absl::StrCat(dir, "/iperf-", r, ".json");
    int rc = 1;
    // The server may need a moment to listen: a refused connect is retried, a few times.
    for (int attempt = 0; attempt < 20 && rc != 0; ++attempt) {
      rc = RunToEnd({"iperf3", "-c", "127.0.0.3", "-p", "5301", "-B", "127.0.0.2", "-P",
                     absl::StrCat(streams), "-t", absl::StrCat(duration), "-l",
                     absl::StrCat(buffer), "--json"},
                    client_out, absl::Seconds(duration + 30));
      if (rc != 0) ::usleep(100'000);
    }
    (void)server->Wait(absl::Seconds(5));
    nlohmann::json ip =
        nlohmann::json::parse(ReadFileToString(client_out).value_or(""), nullptr, false);
    if (rc != 0 || ip.is_discarded() || !ip.contains("end")) {
      std::cerr << "iperf3 failed: " << ReadFileToString(client_out).value_or("") << "\n";
      status = 1;
      break;
    }
    // The receiver's figure, as fleet fabric reports it.
    iperf_gbps.push_back(ip["end"]["sum_received"]["bits_per_second"].get<double>() / 1e9);
    std::printf("run %d: fleet fabric %.2f Gb/s, iperf3 %.2f Gb/s\n", r + 1, fleet_gbps.back(),
                iperf_gbps.back());
  }
  RunToEnd({FLEET_BINARY, "down", "--dir", dir}, dir + "/down.out", absl::Seconds(60));
  if (status != 0) return status;
  double f = Median(fleet_gbps), i = Median(iperf_gbps);
  std::printf(
      "\n%d streams, %d s, %d-byte writes, 127.0.0.2 -> 127.0.0.3, %d runs each (medians):\n"
      "  fleet fabric  %8.2f Gb/s\n  iperf3        %8.2f Gb/s\n  ratio         %8.3f  "
      "(target >= 0.95)\n",
      streams, duration, buffer, runs, f, i, f / i);
  return f / i >= 0.95 ? 0 : 3;
}

}  // namespace
}  // namespace fleet

int main(int argc, char** argv) { return fleet::Main(argc, argv); }
