// `fleet health`: one view of the cluster with a verdict (healthy, degraded, unhealthy) and the
// reasons for every node and group. The agents collect (a fresh look at each node: GPU figures
// or why none, ECC and XID errors, RDMA ports and their error counters with the change since the
// last look, memlock, /dev/shm, free disk at the paths the ranks mount, and each engine head's
// live /metrics figures); the controller gathers the looks with node states, heartbeat ages,
// the groups and the last fabric result of each link; this draws them.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cli/commands.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/fabric.pb.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {

struct HealthVerdict {
  std::string verdict = "healthy";  // "healthy", "degraded", "unhealthy"
  std::vector<std::string> reasons;
};

struct NodeHealth {
  std::string name;
  std::string state;
  double heartbeat_age_s = -1;  // -1: never heard
  std::string gpu;              // "1 x NVIDIA GB10" or why not: "no NVIDIA driver"
  std::string links;            // "2/4 up, 200 Gb/s, MTU 4096"
  std::string memlock;          // "unlimited" or "8 MiB"
  std::string shm_free;         // "30.1 GiB"
  std::string fabric;           // last fabric result of each link from this node
  std::string gpu_errors;       // "ecc 0/0, no xid" (uncorrected/corrected since the last look)
  std::string link_errors;      // "none new", "symbol_error +3 (rocep1s0f1/1)", "first look"
  std::string disks;            // "/srv/models 1.2 TiB free"
  HealthVerdict health;
};

struct GroupHealth {
  std::string name;
  std::string state;
  std::string ranks;  // "3/4 ready"
  std::string endpoint;
  uint64_t generation = 0;
  int restarts = 0;  // new generations the controller started for it (heals, fleet restart)
  // Summed over the heads of the group's current generation (KV: the fullest); unset when no
  // head's /metrics was read.
  std::optional<double> tokens_per_second;
  std::optional<double> requests_running;
  std::optional<double> requests_waiting;
  std::optional<double> kv_cache_usage;
  HealthVerdict health;
};

struct HealthReport {
  std::vector<NodeHealth> nodes;
  std::vector<GroupHealth> groups;
};

// Judges every node and group. `fabric` is the stored history (the newest result per test and
// link counts); `looks` are the agents' (a node without one is judged on its registration
// probe, and says why); `events` are the groups' (`fleet events`), whose "started generation N"
// count a group's restarts.
HealthReport JudgeHealth(const v1::ListNodesResponse& nodes, const v1::ListGroupsResponse& groups,
                         const std::vector<v1::FabricResult>& fabric,
                         const v1::HealthResponse& looks,
                         const std::vector<v1::GroupEventRecord>& events = {});
std::string RenderHealth(const HealthReport& report);
nlohmann::ordered_json HealthJson(const HealthReport& report);

// Exit code 0 when everything is healthy, 1 otherwise. With `watch` it redraws every `period`
// (in place on a terminal) until interrupted, or until the controller cannot be reached.
int Health(const Globals& g, bool watch = false, absl::Duration period = absl::Seconds(2));

}  // namespace fleet::cli
