// AgentMetrics: node figures, shard states and heartbeat timing of one agent.
#include "agent/metrics/agent_metrics.h"

#include <limits>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/metrics/metrics_server.h"

namespace fleet::agent {
namespace {

// RLIMIT_INFINITY reads as UINT64_MAX in the probe; Prometheus writes it as +Inf.
double Limit(uint64_t value) {
  return value == std::numeric_limits<uint64_t>::max() ? std::numeric_limits<double>::infinity()
                                                       : static_cast<double>(value);
}

// Nothing is written for a probe that could not run: a missing series is "unknown", a zero
// would be a false reading.
void AddLimits(const v1::NodeProbe& probe, std::vector<prometheus::MetricFamily>& out) {
  if (!probe.has_limits()) return;
  const v1::LimitsProbe& l = probe.limits();
  prometheus::MetricFamily memlock = GaugeFamily(
      "fleet_node_memlock_bytes", "RLIMIT_MEMLOCK of the agent, which shards inherit (+Inf: none)");
  AddSample(memlock, {{"limit", "soft"}}, Limit(l.memlock_soft()));
  AddSample(memlock, {{"limit", "hard"}}, Limit(l.memlock_hard()));
  out.push_back(std::move(memlock));
  prometheus::MetricFamily shm = GaugeFamily("fleet_node_shm_bytes", "Size of /dev/shm");
  AddSample(shm, {{"kind", "total"}}, static_cast<double>(l.shm_total_bytes()));
  AddSample(shm, {{"kind", "free"}}, static_cast<double>(l.shm_free_bytes()));
  out.push_back(std::move(shm));
  prometheus::MetricFamily memory = GaugeFamily("fleet_node_memory_bytes", "Memory of the node");
  AddSample(memory, {{"kind", "total"}}, static_cast<double>(l.memory_total_bytes()));
  AddSample(memory, {{"kind", "available"}}, static_cast<double>(l.memory_available_bytes()));
  out.push_back(std::move(memory));
}

void AddGpus(const v1::NodeProbe& probe, std::vector<prometheus::MetricFamily>& out) {
  if (probe.gpu().driver_version().empty()) return;  // NVML not loaded: see unavailable
  prometheus::MetricFamily count = GaugeFamily("fleet_node_gpus", "GPUs NVML reports");
  AddSample(count, {}, probe.gpu().gpus_size());
  out.push_back(std::move(count));
  prometheus::MetricFamily memory = GaugeFamily("fleet_node_gpu_memory_bytes", "GPU memory");
  prometheus::MetricFamily temperature =
      GaugeFamily("fleet_node_gpu_temperature_celsius", "GPU temperature");
  prometheus::MetricFamily clock = GaugeFamily("fleet_node_gpu_sm_clock_hertz", "GPU SM clock");
  prometheus::MetricFamily throttled = GaugeFamily(
      "fleet_node_gpu_throttled", "1 for each clock throttle reason NVML reports as active");
  for (const v1::GpuDevice& gpu : probe.gpu().gpus()) {
    std::string index = absl::StrCat(gpu.index());
    AddSample(memory, {{"gpu", index}, {"kind", "used"}},
              static_cast<double>(gpu.memory_used_bytes()));
    AddSample(memory, {{"gpu", index}, {"kind", "total"}},
              static_cast<double>(gpu.memory_total_bytes()));
    AddSample(temperature, {{"gpu", index}}, gpu.temperature_c());
    AddSample(clock, {{"gpu", index}}, gpu.sm_clock_mhz() * 1e6);
    for (const std::string& reason : gpu.throttle_reasons()) {
      AddSample(throttled, {{"gpu", index}, {"reason", reason}}, 1);
    }
  }
  out.push_back(std::move(memory));
  out.push_back(std::move(temperature));
  out.push_back(std::move(clock));
  if (!throttled.metric.empty()) out.push_back(std::move(throttled));
}

void AddRdma(const v1::NodeProbe& probe, std::vector<prometheus::MetricFamily>& out) {
  if (probe.rdma().empty()) return;
  prometheus::MetricFamily up = GaugeFamily(
      "fleet_node_rdma_port_up", "1 when the RDMA port is ACTIVE and its link LinkUp, else 0");
  prometheus::MetricFamily speed = GaugeFamily("fleet_node_rdma_port_speed_bytes",
                                               "Link rate of the RDMA port, in bytes per second");
  prometheus::MetricFamily mtu =
      GaugeFamily("fleet_node_rdma_port_mtu_bytes", "Active MTU of the RDMA port");
  for (const v1::RdmaDevice& device : probe.rdma()) {
    for (const v1::RdmaPort& port : device.ports()) {
      MetricLabels labels = {{"device", device.name()}, {"port", absl::StrCat(port.port())}};
      MetricLabels with_netdev = labels;
      with_netdev.push_back({"netdev", port.netdev()});
      AddSample(up, with_netdev, port.state() == "ACTIVE" && port.phys_state() == "LinkUp");
      // Gb/s as sysfs states it: 10^9 bits.
      if (port.rate_gbps() > 0) AddSample(speed, labels, port.rate_gbps() * 1e9 / 8);
      if (port.active_mtu() > 0) AddSample(mtu, labels, port.active_mtu());
    }
  }
  out.push_back(std::move(up));
  if (!speed.metric.empty()) out.push_back(std::move(speed));
  if (!mtu.metric.empty()) out.push_back(std::move(mtu));
}

}  // namespace

std::vector<prometheus::MetricFamily> PortErrorFigures(const std::vector<v1::PortCounters>& ports) {
  prometheus::MetricFamily errors =
      CounterFamily("fleet_node_rdma_port_errors_total",
                    "Error counters of the RDMA port from sysfs counters/ and hw_counters/, by "
                    "the kernel's name");
  for (const v1::PortCounters& port : ports) {
    for (const v1::PortCounter& c : port.counters()) {
      AddSample(
          errors,
          {{"device", port.device()}, {"port", absl::StrCat(port.port())}, {"counter", c.name()}},
          static_cast<double>(c.value()));
    }
  }
  if (errors.metric.empty()) return {};
  return {std::move(errors)};
}

std::vector<prometheus::MetricFamily> GpuErrorFigures(const std::vector<GpuErrorTotals>& gpus) {
  prometheus::MetricFamily ecc =
      CounterFamily("fleet_node_gpu_ecc_errors_total",
                    "Volatile ECC errors of the GPU (since the driver loaded)");
  prometheus::MetricFamily xid = CounterFamily("fleet_node_gpu_xid_errors_total",
                                               "XID critical errors of the GPU since the agent "
                                               "started");
  for (const GpuErrorTotals& g : gpus) {
    const std::string index = absl::StrCat(g.index);
    if (g.ecc_corrected) {
      AddSample(ecc, {{"gpu", index}, {"type", "corrected"}},
                static_cast<double>(*g.ecc_corrected));
    }
    if (g.ecc_uncorrected) {
      AddSample(ecc, {{"gpu", index}, {"type", "uncorrected"}},
                static_cast<double>(*g.ecc_uncorrected));
    }
    if (g.xids) AddSample(xid, {{"gpu", index}}, static_cast<double>(*g.xids));
  }
  std::vector<prometheus::MetricFamily> out;
  if (!ecc.metric.empty()) out.push_back(std::move(ecc));
  if (!xid.metric.empty()) out.push_back(std::move(xid));
  return out;
}

std::vector<prometheus::MetricFamily> NodeFigures(const v1::NodeProbe& probe) {
  std::vector<prometheus::MetricFamily> out;
  AddLimits(probe, out);
  AddGpus(probe, out);
  AddRdma(probe, out);
  // "gpu: libnvidia-ml.so.1 not found (no NVIDIA driver)" → probe="gpu"; the reason is in the
  // agent's log and in `fleet describe node`, not in a label (labels are for few values).
  std::map<std::string, int> unavailable;
  for (const std::string& line : probe.unavailable()) {
    absl::string_view what = line;
    what = what.substr(0, what.find(':'));
    unavailable[std::string(what)] = 1;
  }
  if (!unavailable.empty()) {
    prometheus::MetricFamily family = GaugeFamily(
        "fleet_node_probe_unavailable", "1 for each node probe that could not run; why: agent log");
    for (const auto& [what, one] : unavailable) AddSample(family, {{"probe", what}}, one);
    out.push_back(std::move(family));
  }
  return out;
}

std::vector<prometheus::MetricFamily> ShardFigures(const std::vector<v1::ShardStatus>& shards) {
  std::map<std::string, int> by_state;
  for (int s = v1::SHARD_STATE_STARTING; s <= v1::SHARD_STATE_FAILED; ++s) {
    by_state[v1::ShardState_Name(static_cast<v1::ShardState>(s))] = 0;
  }
  for (const v1::ShardStatus& shard : shards) ++by_state[v1::ShardState_Name(shard.state())];
  prometheus::MetricFamily family =
      GaugeFamily("fleet_agent_shards", "Engine shards this agent supervises, by state");
  for (const auto& [state, count] : by_state) {
    // SHARD_STATE_READY → "ready"
    std::string name = state.substr(std::string("SHARD_STATE_").size());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    AddSample(family, {{"state", name}}, count);
  }
  return {std::move(family)};
}

v1::NodeProbe CachedProbe::Get() {
  absl::MutexLock lock(&mu_);
  if (clock_->Now() - taken_ >= max_age_) {
    last_ = probe_();
    taken_ = clock_->Now();
  }
  return last_;
}

AgentMetrics::AgentMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      // From 100 µs (loopback) to 2 s (the heartbeat deadline).
      heartbeat_rtt_(
          prometheus::BuildHistogram()
              .Name("fleet_agent_heartbeat_rtt_seconds")
              .Help("Time from sending a heartbeat to receiving its proven ack")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.0005, 0.001, 0.005, 0.01,
                                                               0.05, 0.1, 0.5, 1, 2})),
      heartbeat_failures_(prometheus::BuildCounter()
                              .Name("fleet_agent_heartbeat_failures_total")
                              .Help("Heartbeats that got no valid ack in time (controller away, "
                                    "datagram lost, or port blocked)")
                              .Register(*registry_)
                              .Add({})),
      rpc_(*registry_) {}

void AgentMetrics::HeartbeatAnswered(absl::Duration round_trip) {
  heartbeat_rtt_.Observe(absl::ToDoubleSeconds(round_trip));
}

void AgentMetrics::HeartbeatFailed() { heartbeat_failures_.Increment(); }

absl::StatusOr<v1::HeartbeatVerdict> MeasuredControllerClient::Heartbeat(
    const v1::HeartbeatDatagram& beat, absl::string_view key, uint16_t port) {
  absl::Time sent = clock_->Now();
  absl::StatusOr<v1::HeartbeatVerdict> verdict = inner_->Heartbeat(beat, key, port);
  if (verdict.ok()) {
    metrics_->HeartbeatAnswered(clock_->Now() - sent);
  } else {
    metrics_->HeartbeatFailed();
  }
  return verdict;
}

}  // namespace fleet::agent
