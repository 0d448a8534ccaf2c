// AgentMetrics: the agent's Prometheus series: its node's figures (limits, GPUs, RDMA ports),
// its shards by state, heartbeat round trips and failures, and RPC latency. Node figures come
// from the same probes as registration, cached so a scrape never probes more than once per
// `max_age`.
//
// Series (all prefixed fleet_):
//   node_memlock_bytes{limit}                  gauge   RLIMIT_MEMLOCK soft/hard (+Inf unlimited)
//   node_shm_bytes{kind}                       gauge   /dev/shm total and free
//   node_memory_bytes{kind}                    gauge   memory total and available
//   node_gpus                                  gauge   GPUs NVML sees
//   node_gpu_memory_bytes{gpu,kind}            gauge   used and total
//   node_gpu_temperature_celsius{gpu}          gauge
//   node_gpu_sm_clock_hertz{gpu}               gauge
//   node_gpu_throttled{gpu,reason}             gauge   1 per active throttle reason
//   node_rdma_port_up{device,port,netdev}      gauge   1 when ACTIVE and LinkUp
//   node_rdma_port_speed_bytes{device,port}    gauge   link rate in bytes per second
//   node_rdma_port_mtu_bytes{device,port}      gauge   active MTU
//   node_rdma_port_errors_total{device,port,counter}  counter  sysfs error counters
//   node_gpu_ecc_errors_total{gpu,type}        counter volatile ECC errors (corrected/uncorrected)
//   node_gpu_xid_errors_total{gpu}             counter XID critical errors since the agent started
//   node_probe_unavailable{probe}              gauge   1 per probe that could not run (why: logs)
//   agent_shards{state}                        gauge   this node's shards by state
//   agent_heartbeat_rtt_seconds                histogram  beat sent to ack received
//   agent_heartbeat_failures_total             counter beats without a valid ack in time
//   rpc_duration_seconds{method,code}          histogram (common/metrics/rpc_metrics.h)
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/health/gpu_errors.h"
#include "agent/session/controller_client.h"
#include "common/clock.h"
#include "common/metrics/rpc_metrics.h"
#include "fleet/v1/probe.pb.h"
#include "fleet/v1/shard.pb.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace fleet::agent {

// The node's figures from one probe.
std::vector<prometheus::MetricFamily> NodeFigures(const v1::NodeProbe& probe);
// The RDMA ports' error counters (agent/health/port_counters.h); nothing without any.
std::vector<prometheus::MetricFamily> PortErrorFigures(const std::vector<v1::PortCounters>& ports);
// The GPUs' ECC and XID totals (agent/health/gpu_errors.h); a figure NVML cannot give is left
// out, never written as 0.
std::vector<prometheus::MetricFamily> GpuErrorFigures(const std::vector<GpuErrorTotals>& gpus);
// The node's shards by state; every state appears, zero included.
std::vector<prometheus::MetricFamily> ShardFigures(const std::vector<v1::ShardStatus>& shards);

// A probe result reused for `max_age`: Prometheus may scrape every few seconds, and the GPU
// probe loads NVML.
class CachedProbe {
 public:
  CachedProbe(const Clock* clock, absl::Duration max_age, std::function<v1::NodeProbe()> probe)
      : clock_(clock), max_age_(max_age), probe_(std::move(probe)) {}
  v1::NodeProbe Get();

 private:
  const Clock* const clock_;
  const absl::Duration max_age_;
  const std::function<v1::NodeProbe()> probe_;
  absl::Mutex mu_;  // held while probing: two scrapes at once probe once
  v1::NodeProbe last_ ABSL_GUARDED_BY(mu_);
  absl::Time taken_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

class AgentMetrics {
 public:
  AgentMetrics();
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  RpcMetrics& rpc() { return rpc_; }
  void HeartbeatAnswered(absl::Duration round_trip);
  void HeartbeatFailed();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram& heartbeat_rtt_;
  prometheus::Counter& heartbeat_failures_;
  RpcMetrics rpc_;
};

// A ControllerClient that times each heartbeat for AgentMetrics and passes every call on.
class MeasuredControllerClient : public ControllerClient {
 public:
  MeasuredControllerClient(ControllerClient* inner, AgentMetrics* metrics, const Clock* clock)
      : inner_(inner), metrics_(metrics), clock_(clock) {}
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request) override {
    return inner_->Register(request);
  }
  absl::StatusOr<v1::ReportShardsResponse> ReportShards(
      const v1::ReportShardsRequest& request) override {
    return inner_->ReportShards(request);
  }
  absl::StatusOr<v1::HeartbeatVerdict> Heartbeat(const v1::HeartbeatDatagram& beat,
                                                 absl::string_view key, uint16_t port) override;
  absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest& request) override {
    return inner_->RenewCertificate(request);
  }

 private:
  ControllerClient* const inner_;
  AgentMetrics* const metrics_;
  const Clock* const clock_;
};

}  // namespace fleet::agent
