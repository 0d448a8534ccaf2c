// stage_bench: `fleet stage model` against iperf3 and rsync on the integration tests' network
// namespaces (a controller and four agents, each writing under its own --stage-prefix). In one
// run, on the same link node-1 -> node-2:
//   - iperf3 (-P streams, 5 s): the link's TCP rate;
//   - one copy: `fleet stage model` of a synthetic tree node-1 -> node-2, end to end (the source
//     manifest cached by a warm-up copy, as a re-staged model's would be; the receiver hashes
//     every chunk and fsyncs every file);
//   - fan-out: the same tree node-1 -> node-2, node-3, node-4 through the chain;
//   - rsync -a of the same tree to an rsync daemon on node-2 (no fsync, no per-chunk hashing);
//   - the destination's disk: dd of the same size with conv=fsync.
// Targets: one copy >= 0.9 of iperf3; fan-out <= 1.2 x one copy. Prints one JSON line.
// --dest-root puts every agent's staged files (and rsync's) on another file system, e.g. a
// tmpfs to take this machine's disk out of the figures. Without network namespaces (or with
// FLEET_TEST_FALLBACK=1) the nodes are 127.0.0.x addresses on loopback.
//
// --pin-cores N gives each node N cores of its own (taskset), as separate machines would have.
// --link-gbit R caps every node's sending rate at R Gbit/s (a tc token bucket on its veth), as a
// NIC port of that speed would: on a machine whose cores, not its links, bound iperf3 and the
// copy alike, it measures whether the copy and the chain keep a link of that rate full.
//
//   build/tests/bench/stage_bench [--gib 2] [--streams 4] [--dest-root DIR] [--fleet PATH]
//                                 [--pin-cores N] [--link-gbit R]
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/support/random_file.h"

namespace fleet::testing {
namespace {

constexpr int kAgents = 4;

int Fail(const std::string& message) {
  std::cerr << "stage_bench: " << message << "\n";
  return 1;
}

// Seconds of the slowest target of one `fleet stage model` run; negative on failure.
double Stage(TestCluster& cluster, const std::string& source, const std::string& to,
             uint32_t streams) {
  absl::StatusOr<CommandResult> run =
      cluster.RunCli({"stage", "model", source, "--from", "node-1", "--to", to, "--dest",
                      "/bench/model", "--streams", absl::StrCat(streams), "-o", "json"},
                     absl::Minutes(20));
  if (!run.ok() || run->exit_code != 0) {
    std::cerr << (run.ok() ? run->stdout_text + run->stderr_text : run.status().ToString());
    return -1;
  }
  nlohmann::json doc = nlohmann::json::parse(run->stdout_text);
  double slowest = 0;
  for (const nlohmann::json& n : doc["nodes"])
    slowest = std::max(slowest, n["seconds"].get<double>());
  return slowest;
}

struct BenchOptions {
  double gib = 2;
  uint32_t streams = 4;
  std::string dest_root;  // empty: the bench's temporary directory
  std::string fleet = FLEET_BINARY;
  int pin_cores = 0;     // 0: unpinned
  double link_gbit = 0;  // 0: links as fast as this machine moves bytes
};

// Caps the sending rate of every host of `n` at `gbit` Gbit/s: a token bucket on the host's end
// of its veth (eth0 in the test network), 10 ms of the rate deep.
absl::Status ShapeLinks(const TestNetwork& n, double gbit) {
  if (!n.isolated()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--link-gbit needs network namespaces, and this run fell back to loopback (",
                     n.fallback_reason(), "); run as root without FLEET_TEST_FALLBACK"));
  }
  const uint64_t burst = std::max<uint64_t>(64 << 10, static_cast<uint64_t>(gbit * 1e9 / 8 / 100));
  for (int i = 0; i < n.size(); ++i) {
    absl::StatusOr<CommandResult> tc = RunCommand(
        {"tc", "-n", n.host(i).netns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate",
         absl::StrCat(gbit * 1000, "mbit"), "burst", absl::StrCat(burst), "latency", "50ms"},
        std::chrono::seconds(10));
    if (!tc.ok()) return tc.status();
    if (tc->exit_code != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tc qdisc replace ... tbf on ", n.host(i).netns, " failed: ", tc->stderr_text,
          "; the kernel needs sch_tbf (modprobe sch_tbf) and iproute2's tc"));
    }
  }
  return absl::OkStatus();
}

int Run(const BenchOptions& options) {
  const uint32_t streams = options.streams;
  const int pin_cores = options.pin_cores;
  absl::StatusOr<std::unique_ptr<TestNetwork>> net = CreateTestNetwork(kAgents + 1);
  if (!net.ok()) return Fail(net.status().ToString());
  if (options.link_gbit > 0) {
    if (absl::Status st = ShapeLinks(**net, options.link_gbit); !st.ok()) {
      return Fail(st.ToString());
    }
  }
  absl::StatusOr<std::unique_ptr<TestCluster>> made = TestCluster::Create(**net, options.fleet);
  if (!made.ok()) return Fail(made.status().ToString());
  TestCluster& cluster = **made;
  const std::string root = options.dest_root.empty() ? cluster.temp_dir() : options.dest_root;
  auto prefix = [&](int i) { return absl::StrCat(root, "/stage-", i); };
  if (absl::Status st = cluster.StartController(); !st.ok()) return Fail(st.ToString());
  for (int i = 1; i <= kAgents; ++i) {
    std::filesystem::create_directories(prefix(i));
    if (absl::Status st = cluster.StartAgent(i, {.extra_flags = {"--stage-prefix", prefix(i)}});
        !st.ok()) {
      return Fail(st.ToString());
    }
  }
  if (!TestCluster::WaitFor(
          [&] {
            absl::StatusOr<nlohmann::json> nodes = cluster.Nodes();
            if (!nodes.ok()) return false;
            int ready = 0;
            for (const nlohmann::json& n : (*nodes)["items"]) ready += n["state"] == "Ready";
            return ready == kAgents;
          },
          absl::Seconds(30))) {
    return Fail("agents not Ready");
  }
  // The tree: one large shard and four smaller ones, `gib` GiB in all.
  const std::string source = cluster.temp_dir() + "/source-model";
  const uint64_t total = static_cast<uint64_t>(options.gib * (1ull << 30));
  const uint64_t small = total / 8;
  WriteRandomFile(source + "/model-00001.safetensors", total - 4 * small, 1);
  for (int i = 0; i < 4; ++i) {
    WriteRandomFile(absl::StrCat(source, "/model-0000", i + 2, ".safetensors"), small, i + 2);
  }
  const TestNetwork& n = **net;
  // With --pin-cores, node i's agent and the reference tools run as node i on cores
  // [(i-1)*N, i*N): each node has CPUs of its own, as separate machines would.
  auto cores = [&](int i) { return absl::StrCat((i - 1) * pin_cores, "-", i * pin_cores - 1); };
  auto on = [&](int i, std::vector<std::string> argv) {
    if (pin_cores > 0) argv.insert(argv.begin(), {"taskset", "-c", cores(i)});
    return n.Wrap(i, std::move(argv));
  };
  if (pin_cores > 0) {
    if (static_cast<unsigned>(kAgents * pin_cores) > std::thread::hardware_concurrency()) {
      return Fail(absl::StrCat("--pin-cores ", pin_cores, " needs ", kAgents * pin_cores,
                               " cores; this machine has ", std::thread::hardware_concurrency()));
    }
    for (int i = 1; i <= kAgents; ++i) {
      absl::StatusOr<CommandResult> pinned =
          RunCommand({"taskset", "-a", "-p", "-c", cores(i), absl::StrCat(cluster.agent_pid(i))},
                     std::chrono::seconds(10));
      if (!pinned.ok() || pinned->exit_code != 0) return Fail("taskset failed");
    }
  }
  const std::string ip1 = n.host(1).ip;
  const std::string ip2 = n.host(2).ip;

  // iperf3 on the link node-1 -> node-2.
  absl::StatusOr<Process> server = Process::Start(
      {.argv = on(2, {"iperf3", "-s", "-1", "-B", ip2}), .output_path = "/dev/null"});
  if (!server.ok()) return Fail(server.status().ToString());
  absl::SleepFor(absl::Milliseconds(500));
  absl::StatusOr<CommandResult> iperf = RunCommand(
      on(1, {"iperf3", "-c", ip2, "-B", ip1, "-P", absl::StrCat(streams), "-t", "5", "-J"}),
      std::chrono::seconds(30));
  if (!iperf.ok() || iperf->exit_code != 0) return Fail("iperf3 failed");
  const double iperf_gbps =
      nlohmann::json::parse(iperf->stdout_text)["end"]["sum_received"]["bits_per_second"]
          .get<double>() /
      1e9;

  // Warm-up: the source's manifest is built (and cached) once.
  if (Stage(cluster, source, "node-2", streams) < 0) return Fail("warm-up copy failed");
  std::filesystem::remove_all(prefix(2) + "/bench");
  const double one = Stage(cluster, source, "node-2", streams);
  if (one < 0) return Fail("one copy failed");
  std::filesystem::remove_all(prefix(2) + "/bench");
  const double fan = Stage(cluster, source, "node-2,node-3,node-4", streams);
  if (fan < 0) return Fail("fan-out failed");
  for (int i = 1; i <= kAgents; ++i) std::filesystem::remove_all(prefix(i) + "/bench");

  // rsync -a of the same tree into a daemon on node-2.
  const std::string rsync_dir = root + "/rsync-dest";
  std::filesystem::create_directories(rsync_dir);
  const std::string conf = cluster.temp_dir() + "/rsyncd.conf";
  std::ofstream(conf) << "use chroot = false\nuid = root\ngid = root\n[m]\npath = " << rsync_dir
                      << "\nread only = false\n";
  absl::StatusOr<Process> daemon =
      Process::Start({.argv = on(2, {"rsync", "--daemon", "--no-detach", "--address", ip2, "--port",
                                     "8730", "--config", conf}),
                      .output_path = "/dev/null"});
  if (!daemon.ok()) return Fail(daemon.status().ToString());
  absl::SleepFor(absl::Milliseconds(500));
  const absl::Time t0 = absl::Now();
  absl::StatusOr<CommandResult> rsync =
      RunCommand(on(1, {"rsync", "-a", source + "/", absl::StrCat("rsync://", ip2, ":8730/m/")}),
                 std::chrono::minutes(20));
  const double rsync_s = absl::ToDoubleSeconds(absl::Now() - t0);
  (void)daemon->Stop(absl::Seconds(2));
  if (!rsync.ok() || rsync->exit_code != 0) {
    return Fail(absl::StrCat("rsync failed: ", rsync.ok() ? rsync->stderr_text : ""));
  }
  std::filesystem::remove_all(rsync_dir);

  // The destination's disk: the same bytes written and fsynced.
  const std::string dd_file = root + "/dd-test";
  const absl::Time dd0 = absl::Now();
  absl::StatusOr<CommandResult> dd = RunCommand({"dd", "if=/dev/zero", "of=" + dd_file, "bs=8M",
                                                 absl::StrCat("count=", total >> 23), "conv=fsync"},
                                                std::chrono::minutes(20));
  const double dd_s = absl::ToDoubleSeconds(absl::Now() - dd0);
  std::filesystem::remove(dd_file);
  if (!dd.ok() || dd->exit_code != 0) return Fail("dd failed");
  const double bits = static_cast<double>(total) * 8;
  nlohmann::ordered_json out = {
      {"bytes", total},
      {"streams", streams},
      {"iperf3_gbps", iperf_gbps},
      {"one_copy_seconds", one},
      {"one_copy_gbps", bits / one / 1e9},
      {"one_copy_vs_iperf3", bits / one / 1e9 / iperf_gbps},
      {"fanout3_seconds", fan},
      {"fanout3_vs_one_copy", fan / one},
      {"rsync_seconds", rsync_s},
      {"rsync_gbps", bits / rsync_s / 1e9},
      {"stage_speedup_vs_rsync", rsync_s / one},
      {"disk_write_gbps", bits / dd_s / 1e9},
      {"one_copy_vs_disk", dd_s / one},
      {"loopback", !n.isolated()},
      {"pin_cores", pin_cores},
      {"link_gbit", options.link_gbit},
  };
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace
}  // namespace fleet::testing

int main(int argc, char** argv) {
  CLI::App app{"stage_bench: fleet stage model against iperf3 and rsync"};
  fleet::testing::BenchOptions options;
  app.add_option("--gib", options.gib, "size of the synthetic tree in GiB")->capture_default_str();
  app.add_option("--streams", options.streams, "TCP streams per link (fleet stage and iperf3)")
      ->capture_default_str();
  app.add_option("--dest-root", options.dest_root,
                 "directory for the agents' staged files (default: the bench's temporary "
                 "directory)");
  app.add_option("--fleet", options.fleet, "the fleet binary to run")->capture_default_str();
  app.add_option("--pin-cores", options.pin_cores,
                 "run node i (its agent, iperf3, rsync) on cores [(i-1)*N, i*N) (0: unpinned)")
      ->capture_default_str();
  app.add_option("--link-gbit", options.link_gbit,
                 "cap every node's sending rate at this many Gbit/s with tc tbf, as a NIC port "
                 "of that speed would (0: no cap; needs network namespaces)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return fleet::testing::Run(options);
}
