// `fleet health`: verdicts from the controller's nodes, groups and fabric history.
#include "cli/health_commands.h"

#include <unistd.h>

#include <iostream>
#include <limits>
#include <map>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/output.h"
#include "common/proto_time.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();
// Below this /dev/shm is too small for NCCL's shared-memory transport and vLLM's broadcast
// buffers on one node (the recipes ask 16 GiB and more).
constexpr uint64_t kMinShmFree = 1ull << 30;

void Worse(HealthVerdict& v, const std::string& verdict, std::string reason) {
  if (verdict == "unhealthy" || (verdict == "degraded" && v.verdict == "healthy")) {
    v.verdict = verdict;
  }
  v.reasons.push_back(std::move(reason));
}

std::string Bytes(uint64_t b) {
  if (b >= (1ull << 30)) return absl::StrFormat("%.1f GiB", b / double(1ull << 30));
  return absl::StrFormat("%.0f MiB", b / double(1ull << 20));
}

std::string Ago(double s) { return s < 0 ? "never" : absl::StrFormat("%.1fs", s); }

// At this temperature GPUs are near their slowdown threshold (about 87-90 C on data-center
// parts): worth a look at the airflow before clocks drop.
constexpr uint32_t kHotGpuC = 85;
// Clock reasons that mean the GPU is held back by heat, power or hardware, not by idling or an
// operator's setting.
constexpr const char* kBadThrottles[] = {"HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown",
                                         "HwPowerBrakeSlowdown"};
// A KV cache this full with requests waiting: the engine is out of room, not merely busy.
constexpr double kFullKvCache = 0.95;

// XIDs that mean the GPU or its memory failed (NVIDIA's XID catalogue), with what they say;
// any other XID (13, 31, 43, 45: usually the application's fault) degrades the node.
struct XidMeaning {
  uint64_t xid;
  const char* what;
};
constexpr XidMeaning kFatalXids[] = {
    {48, "double-bit ECC error"},
    {62, "internal micro-controller halt"},
    {63, "ECC page retirement or row remapping event"},
    {64, "ECC page retirement or row remapper failure"},
    {74, "NVLink error"},
    {79, "GPU has fallen off the bus"},
    {92, "high single-bit ECC error rate"},
    {94, "contained ECC error"},
    {95, "uncontained ECC error"},
    {119, "GSP RPC timeout"},
    {120, "GSP error"},
};

void JudgeLook(const v1::NodeHealthSample& sample, NodeHealth& h) {
  std::vector<std::string> gpu_cells;
  for (const v1::GpuErrors& e : sample.gpu_errors()) {
    std::string cell = absl::StrCat("gpu ", e.index(), ": ");
    if (!e.ecc_unavailable().empty()) {
      absl::StrAppend(&cell, "ecc not read (", e.ecc_unavailable(), ")");
    } else {
      absl::StrAppend(&cell, "ecc ", e.ecc_uncorrected(), "/", e.ecc_corrected());
      if (e.ecc_uncorrected_delta() > 0) {
        Worse(h.health, "unhealthy",
              absl::StrCat("GPU ", e.index(), ": ", e.ecc_uncorrected_delta(),
                           " uncorrectable ECC error(s) since the last look: drain the node, "
                           "then reset the GPU (nvidia-smi -r) or replace it"));
      }
    }
    if (!e.xid_unavailable().empty()) {
      absl::StrAppend(&cell, ", xid not watched (", e.xid_unavailable(), ")");
    } else if (e.xids().empty()) {
      absl::StrAppend(&cell, ", no xid");
    } else {
      absl::StrAppend(&cell, ", xid ", absl::StrJoin(e.xids(), " "));
      for (uint64_t xid : e.xids()) {
        const XidMeaning* fatal = nullptr;
        for (const XidMeaning& m : kFatalXids) {
          if (m.xid == xid) fatal = &m;
        }
        if (fatal != nullptr) {
          Worse(h.health, "unhealthy",
                absl::StrCat("GPU ", e.index(), ": XID ", xid, " (", fatal->what,
                             ") since the last look: drain the node and check `dmesg`"));
        } else {
          Worse(h.health, "degraded",
                absl::StrCat("GPU ", e.index(), ": XID ", xid,
                             " since the last look (usually the application's fault: see the "
                             "engine's log and `dmesg`)"));
        }
      }
    }
    gpu_cells.push_back(std::move(cell));
  }
  h.gpu_errors = gpu_cells.empty() ? "-" : absl::StrJoin(gpu_cells, "; ");

  std::vector<std::string> link_cells;
  for (const v1::PortCounters& port : sample.ports()) {
    const std::string where = absl::StrCat(port.device(), "/", port.port());
    if (!port.error().empty()) link_cells.push_back(absl::StrCat(where, ": ", port.error()));
    for (const v1::PortCounter& c : port.counters()) {
      if (c.delta() == 0) continue;
      link_cells.push_back(absl::StrCat(c.name(), " +", c.delta(), " (", where, ")"));
      Worse(h.health, "degraded",
            absl::StrCat(where, " ", c.name(), " +", c.delta(),
                         " since the last look: check the cable and transceiver (ibstat, "
                         "`mlxlink -d ",
                         port.device(), " -m`)"));
    }
  }
  if (sample.ports().empty()) {
    h.link_errors = "-";
  } else if (!link_cells.empty()) {
    h.link_errors = absl::StrJoin(link_cells, ", ");
  } else {
    h.link_errors = sample.since_last_look_s() > 0 ? "none new" : "first look";
  }
}

}  // namespace

HealthReport JudgeHealth(const v1::ListNodesResponse& nodes, const v1::ListGroupsResponse& groups,
                         const std::vector<v1::FabricResult>& fabric,
                         const v1::HealthResponse& looks,
                         const std::vector<v1::GroupEventRecord>& events) {
  const absl::Time now = FromProtoTime(nodes.now());
  std::map<std::string, int> restarts;
  for (const v1::GroupEventRecord& e : events) {
    if (absl::StartsWith(e.action(), "started generation ")) ++restarts[e.group()];
  }
  std::map<std::string, const v1::NodeHealthReport*> look_of;
  for (const v1::NodeHealthReport& r : looks.nodes()) look_of[r.node()] = &r;
  // The newest result of each test and link, by sender.
  std::map<std::string, std::map<std::string, const v1::FabricResult*>> last_fabric;
  for (const v1::FabricResult& r : fabric) {
    last_fabric[r.from()][absl::StrCat(r.test(), " ", r.to())] = &r;
  }
  HealthReport report;
  for (const v1::Node& node : nodes.nodes()) {
    NodeHealth h;
    h.name = node.identity().name();
    switch (node.state()) {
      case v1::NODE_STATE_READY:
        h.state = "Ready";
        break;
      case v1::NODE_STATE_SUSPECT:
        h.state = "Suspect";
        Worse(h.health, "degraded", "heartbeats are late (Suspect)");
        break;
      case v1::NODE_STATE_LOST:
        h.state = "Lost";
        Worse(h.health, "unhealthy", "no heartbeat: the node is Lost");
        break;
      default:
        h.state = "Unknown";
        Worse(h.health, "degraded", "state unknown");
    }
    if (node.has_last_heartbeat()) {
      h.heartbeat_age_s = absl::ToDoubleSeconds(now - FromProtoTime(node.last_heartbeat()));
    }
    auto look = look_of.find(h.name);
    const bool fresh = look != look_of.end() && look->second->has_sample();
    if (fresh) {
      JudgeLook(look->second->sample(), h);
    } else {
      h.gpu_errors = h.link_errors = "-";
      const std::string why =
          look == look_of.end() ? "not in the controller's answer" : look->second->error();
      if (node.state() != v1::NODE_STATE_LOST) {
        Worse(h.health, "degraded",
              absl::StrCat("no fresh look (", why, "): figures are from its registration"));
      }
    }
    const v1::NodeProbe& probe = fresh ? look->second->sample().probe() : node.probe();
    if (probe.gpu().gpus_size() > 0) {
      const v1::GpuDevice& first = probe.gpu().gpus(0);
      h.gpu = absl::StrCat(probe.gpu().gpus_size(), " x ", first.name());
      if (fresh) {
        absl::StrAppend(&h.gpu, ", ", first.temperature_c(), " C, ", first.sm_clock_mhz(), " MHz");
        if (first.memory_total_bytes() > 0) {
          absl::StrAppend(&h.gpu, ", ", Bytes(first.memory_used_bytes()), " of ",
                          Bytes(first.memory_total_bytes()), " used");
        }
      }
      for (const v1::GpuDevice& gpu : probe.gpu().gpus()) {
        if (!fresh) break;
        if (gpu.temperature_c() >= kHotGpuC) {
          Worse(h.health, "degraded",
                absl::StrCat("GPU ", gpu.index(), " at ", gpu.temperature_c(), " C (", kHotGpuC,
                             " C and over): check the airflow"));
        }
        for (const std::string& reason : gpu.throttle_reasons()) {
          for (const char* bad : kBadThrottles) {
            if (reason != bad) continue;
            Worse(h.health, "degraded",
                  absl::StrCat("GPU ", gpu.index(), " clocks held back: ", reason));
          }
        }
      }
    } else {
      h.gpu = "none";
      for (const std::string& u : probe.unavailable()) {
        if (u.rfind("gpu:", 0) == 0) {
          // "gpu: libnvidia-ml.so.1 not found (no NVIDIA driver)" → "no NVIDIA driver"
          size_t open = u.rfind('(');
          h.gpu = open != std::string::npos && u.back() == ')'
                      ? u.substr(open + 1, u.size() - open - 2)
                      : u.substr(5);
        }
      }
    }
    int ports = 0, up = 0;
    double rate = 0;
    uint32_t mtu = 0;
    for (const v1::RdmaDevice& d : probe.rdma()) {
      for (const v1::RdmaPort& p : d.ports()) {
        ++ports;
        if (p.state() == "ACTIVE" && p.phys_state() == "LinkUp") {
          ++up;
          rate += p.rate_gbps();
          mtu = mtu == 0 ? p.active_mtu() : std::min(mtu, p.active_mtu());
        } else {
          Worse(h.health, "degraded",
                absl::StrCat(d.name(), "/", p.port(), " is ", p.state(), "/", p.phys_state()));
        }
        if (p.state() == "ACTIVE" && p.active_mtu() > 0 && p.active_mtu() < 4096) {
          Worse(h.health, "degraded",
                absl::StrCat(d.name(), "/", p.port(), " MTU ", p.active_mtu(),
                             ": RoCE wants 4096 (netdev MTU 9000 end to end)"));
        }
      }
    }
    h.links = ports == 0 ? "no RDMA device"
                         : absl::StrFormat("%d/%d up, %.0f Gb/s, MTU %u", up, ports, rate, mtu);
    if (probe.has_limits()) {
      uint64_t memlock = probe.limits().memlock_soft();
      h.memlock = memlock == kUnlimited ? "unlimited" : Bytes(memlock);
      if (memlock != kUnlimited && ports > 0) {
        Worse(h.health, "degraded",
              absl::StrCat("memlock ", h.memlock,
                           ": RDMA needs unlimited (run the agent with LimitMEMLOCK=infinity)"));
      }
      h.shm_free = Bytes(probe.limits().shm_free_bytes());
      if (probe.limits().shm_total_bytes() > 0 && probe.limits().shm_free_bytes() < kMinShmFree) {
        Worse(h.health, "degraded", absl::StrCat("/dev/shm has only ", h.shm_free, " free"));
      }
    }
    std::vector<std::string> disk_cells;
    for (const v1::DiskProbe& disk : probe.disks()) {
      disk_cells.push_back(absl::StrCat(
          disk.path(), " ",
          disk.present() ? absl::StrCat(Bytes(disk.free_bytes()), " free") : disk.error()));
      if (disk.present() && disk.total_bytes() > 0 && disk.free_bytes() * 10 < disk.total_bytes()) {
        Worse(h.health, "degraded",
              absl::StrCat(disk.path(), " has ", Bytes(disk.free_bytes()), " free (under 10%)"));
      }
    }
    h.disks = disk_cells.empty() ? "-" : absl::StrJoin(disk_cells, ", ");
    std::vector<std::string> fabric_cells;
    for (const auto& [key, r] : last_fabric[h.name]) {
      fabric_cells.push_back(absl::StrCat(
          key, " ", r->measured() ? absl::StrFormat("%.1f Gb/s", r->bandwidth_gbps()) : "-", " ",
          r->verdict()));
      if (r->verdict() == "fail" || r->verdict() == "warn") {
        Worse(h.health, "degraded",
              absl::StrCat("fabric ", r->test(), " to ", r->to(), ": ", r->verdict(),
                           r->reason().empty() ? "" : absl::StrCat(" (", r->reason(), ")")));
      }
      if (!r->regression().empty()) {
        Worse(h.health, "degraded",
              absl::StrCat("fabric ", r->test(), " to ", r->to(), ": ", r->regression()));
      }
    }
    h.fabric = fabric_cells.empty() ? "-" : absl::StrJoin(fabric_cells, ", ");
    report.nodes.push_back(std::move(h));
  }
  for (const v1::Group& group : groups.groups()) {
    GroupHealth h;
    h.name = group.name();
    h.generation = group.generation();
    h.restarts = restarts[group.name()];
    h.endpoint = group.endpoint();
    int ready = 0;
    for (const v1::GroupRank& rank : group.ranks()) {
      if (rank.status().state() == v1::SHARD_STATE_READY) ++ready;
    }
    h.ranks = absl::StrCat(ready, "/", group.ranks_size(), " ready");
    for (const v1::NodeHealthReport& r : looks.nodes()) {
      for (const v1::ShardStatus& shard : r.sample().shards()) {
        if (shard.group() != group.name() || shard.generation() != group.generation() ||
            !shard.has_engine()) {
          continue;
        }
        const v1::EngineFigures& e = shard.engine();
        auto add = [](std::optional<double>& sum, double v) { sum = sum.value_or(0) + v; };
        if (e.has_tokens_per_second()) add(h.tokens_per_second, e.tokens_per_second());
        add(h.requests_running, e.requests_running());
        if (e.has_requests_waiting()) add(h.requests_waiting, e.requests_waiting());
        if (e.has_kv_cache_usage()) {
          h.kv_cache_usage = std::max(h.kv_cache_usage.value_or(0), e.kv_cache_usage());
        }
      }
    }
    if (h.kv_cache_usage.value_or(0) >= kFullKvCache && h.requests_waiting.value_or(0) > 0) {
      Worse(h.health, "degraded",
            absl::StrFormat("KV cache %.0f%% full with %.0f request(s) waiting: add replicas, "
                            "or lower max_num_seqs or the context length",
                            *h.kv_cache_usage * 100, *h.requests_waiting));
    }
    const std::string why = group.message().empty() ? "" : absl::StrCat(": ", group.message());
    switch (group.state()) {
      case v1::GROUP_STATE_READY:
        h.state = "Ready";
        break;
      case v1::GROUP_STATE_STOPPED:
        h.state = "Stopped";
        break;
      case v1::GROUP_STATE_FAILED:
        h.state = "Failed";
        Worse(h.health, "unhealthy", absl::StrCat("group failed", why));
        break;
      case v1::GROUP_STATE_DEGRADED:
        h.state = "Degraded";
        Worse(h.health, "degraded", absl::StrCat("group degraded", why));
        break;
      default:
        h.state = group.state() == v1::GROUP_STATE_STARTING ? "Starting" : "Pending";
        Worse(h.health, "degraded", absl::StrCat("not serving yet", why));
    }
    report.groups.push_back(std::move(h));
  }
  return report;
}

std::string RenderHealth(const HealthReport& report) {
  Table nodes({"NODE", "STATE", "HEARTBEAT", "GPU", "GPU ERRORS", "RDMA LINKS", "LINK ERRORS",
               "MEMLOCK", "SHM FREE", "DISK", "FABRIC", "HEALTH", "REASONS"});
  for (const NodeHealth& n : report.nodes) {
    nodes.AddRow({n.name, n.state, Ago(n.heartbeat_age_s), n.gpu, n.gpu_errors, n.links,
                  n.link_errors, n.memlock.empty() ? "-" : n.memlock,
                  n.shm_free.empty() ? "-" : n.shm_free, n.disks, n.fabric, n.health.verdict,
                  n.health.reasons.empty() ? "-" : absl::StrJoin(n.health.reasons, "; ")});
  }
  std::string out = nodes.Render();
  if (!report.groups.empty()) {
    Table groups({"GROUP", "STATE", "GENERATION", "RESTARTS", "RANKS", "ENDPOINT", "TOKENS/S",
                  "RUNNING", "WAITING", "KV CACHE", "HEALTH", "REASONS"});
    auto figure = [](const std::optional<double>& v, const char* format) {
      return v.has_value() ? absl::StrFormat(format, *v) : std::string("-");
    };
    for (const GroupHealth& g : report.groups) {
      groups.AddRow({g.name, g.state, absl::StrCat(g.generation), absl::StrCat(g.restarts), g.ranks,
                     g.endpoint.empty() ? "-" : g.endpoint, figure(g.tokens_per_second, "%.1f"),
                     figure(g.requests_running, "%.0f"), figure(g.requests_waiting, "%.0f"),
                     g.kv_cache_usage ? absl::StrFormat("%.0f%%", *g.kv_cache_usage * 100) : "-",
                     g.health.verdict,
                     g.health.reasons.empty() ? "-" : absl::StrJoin(g.health.reasons, "; ")});
    }
    absl::StrAppend(&out, "\n", groups.Render());
  }
  return out;
}

nlohmann::ordered_json HealthJson(const HealthReport& report) {
  nlohmann::ordered_json doc = {{"apiVersion", "fleet/v1"}, {"kind", "Health"}};
  doc["nodes"] = nlohmann::ordered_json::array();
  for (const NodeHealth& n : report.nodes) {
    doc["nodes"].push_back({{"name", n.name},
                            {"state", n.state},
                            {"heartbeat_age_s", n.heartbeat_age_s},
                            {"gpu", n.gpu},
                            {"rdma_links", n.links},
                            {"memlock", n.memlock},
                            {"shm_free", n.shm_free},
                            {"fabric", n.fabric},
                            {"gpu_errors", n.gpu_errors},
                            {"link_errors", n.link_errors},
                            {"disks", n.disks},
                            {"health", n.health.verdict},
                            {"reasons", n.health.reasons}});
  }
  doc["groups"] = nlohmann::ordered_json::array();
  auto figure = [](const std::optional<double>& v) {
    return v.has_value() ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
  };
  for (const GroupHealth& g : report.groups) {
    doc["groups"].push_back({{"name", g.name},
                             {"state", g.state},
                             {"generation", g.generation},
                             {"restarts", g.restarts},
                             {"ranks", g.ranks},
                             {"endpoint", g.endpoint},
                             {"tokens_per_second", figure(g.tokens_per_second)},
                             {"requests_running", figure(g.requests_running)},
                             {"requests_waiting", figure(g.requests_waiting)},
                             {"kv_cache_usage", figure(g.kv_cache_usage)},
                             {"health", g.health.verdict},
                             {"reasons", g.health.reasons}});
  }
  return doc;
}

namespace {

constexpr uint32_t kEventPage = 1000;
constexpr int kEventPages = 100;

// One look: fetch, judge, draw. The exit code of that look, or nullopt with the error printed.
std::optional<int> DrawOnce(const Globals& g, AdminClient& client, std::string& out) {
  absl::StatusOr<v1::ListNodesResponse> nodes = client.ListNodes();
  absl::StatusOr<v1::ListGroupsResponse> groups =
      nodes.ok() ? client.ListGroups() : absl::StatusOr<v1::ListGroupsResponse>(nodes.status());
  absl::StatusOr<v1::FabricHistoryResponse> history =
      groups.ok() ? client.FabricHistory({})
                  : absl::StatusOr<v1::FabricHistoryResponse>(groups.status());
  absl::StatusOr<v1::HealthResponse> looks =
      history.ok() ? client.Health() : absl::StatusOr<v1::HealthResponse>(history.status());
  if (!looks.ok()) {
    Fail(std::string(looks.status().message()));
    return std::nullopt;
  }
  // Every group's events, a page at a time (at most kEventPages of them).
  std::vector<v1::GroupEventRecord> events;
  v1::ListEventsRequest page;
  page.set_limit(kEventPage);
  for (int i = 0; i < kEventPages; ++i) {
    absl::StatusOr<v1::ListEventsResponse> got = client.ListEvents(page);
    if (!got.ok()) {
      Fail(std::string(got.status().message()));
      return std::nullopt;
    }
    events.insert(events.end(), got->events().begin(), got->events().end());
    if (got->events_size() < static_cast<int>(kEventPage)) break;
    page.set_after_id(got->events().rbegin()->id());
  }
  HealthReport report = JudgeHealth(
      *nodes, *groups, {history->results().begin(), history->results().end()}, *looks, events);
  out = g.output == "json" || g.output == "yaml" ? PrintDocument(HealthJson(report), g.output)
                                                 : RenderHealth(report);
  for (const NodeHealth& n : report.nodes) {
    if (n.health.verdict != "healthy") return 1;
  }
  for (const GroupHealth& gr : report.groups) {
    if (gr.health.verdict != "healthy") return 1;
  }
  return 0;
}

}  // namespace

int Health(const Globals& g, bool watch, absl::Duration period) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  const bool terminal = ::isatty(STDOUT_FILENO) == 1;
  while (true) {
    std::string out;
    std::optional<int> code = DrawOnce(g, *client, out);
    if (!code) return 1;
    // On a terminal the view is redrawn in place (cursor home, clear screen); piped, each look
    // follows the last.
    if (watch && terminal) std::cout << "\033[H\033[2J";
    std::cout << out << std::flush;
    if (!watch) return *code;
    absl::SleepFor(period);
    if (!terminal) std::cout << "\n";
  }
}

}  // namespace fleet::cli
