// HealthCollector: what an agent answers to CollectHealth. Each look runs the node probe (with
// the asked disk paths), reads the RDMA ports' error counters and the GPUs' ECC and XID errors
// and gives each counter's change since the previous look, and lists the shards with their
// engines' live figures. Looks are serialized, so "since the previous look" is well defined.
//
// Example:
//   HealthCollector collector({.clock = clock, .probe = ..., .read_ports = ...,
//                              .gpus = gpus.get(), .shards = ...});
//   v1::NodeHealthSample sample = collector.Collect(request);
#pragma once

#include <functional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/health/gpu_errors.h"
#include "agent/health/port_counters.h"
#include "common/clock.h"
#include "fleet/v1/probe.pb.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

struct HealthCollectorDeps {
  const Clock* clock = nullptr;
  std::function<v1::NodeProbe(const v1::ProbeRequest&)> probe;  // RunProbes in production
  std::function<std::vector<v1::PortCounters>()> read_ports;    // ReadPortCounters("/")
  GpuErrorSource* gpus = nullptr;  // null: GPU errors are not read (a recorded tree)
  std::function<std::vector<v1::ShardStatus>()> shards;  // the supervisor's List()
};

class HealthCollector {
 public:
  explicit HealthCollector(HealthCollectorDeps deps) : deps_(std::move(deps)) {}
  v1::NodeHealthSample Collect(const v1::CollectHealthRequest& request);

 private:
  const HealthCollectorDeps deps_;
  absl::Mutex mu_;  // one look at a time
  CounterDeltas ports_ ABSL_GUARDED_BY(mu_);
  CounterDeltas ecc_ ABSL_GUARDED_BY(mu_);
  absl::Time last_look_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace fleet::agent
