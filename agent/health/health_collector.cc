// HealthCollector (see health_collector.h).
#include "agent/health/health_collector.h"

#include "absl/strings/str_cat.h"
#include "common/proto_time.h"

namespace fleet::agent {

v1::NodeHealthSample HealthCollector::Collect(const v1::CollectHealthRequest& request) {
  v1::ProbeRequest probe_request;
  *probe_request.mutable_disk_paths() = request.disk_paths();
  v1::NodeHealthSample sample;
  *sample.mutable_probe() = deps_.probe(probe_request);
  for (v1::ShardStatus& shard : deps_.shards()) *sample.add_shards() = std::move(shard);

  absl::MutexLock lock(&mu_);
  const absl::Time now = deps_.clock->Now();
  *sample.mutable_taken_at() = ToProtoTime(now);
  if (last_look_ != absl::InfinitePast()) {
    sample.set_since_last_look_s(absl::ToDoubleSeconds(now - last_look_));
  }
  last_look_ = now;
  for (v1::PortCounters& port : deps_.read_ports()) {
    for (v1::PortCounter& c : *port.mutable_counters()) {
      c.set_delta(
          ports_.Delta(absl::StrCat(port.device(), "/", port.port(), "/", c.name()), c.value()));
    }
    *sample.add_ports() = std::move(port);
  }
  if (deps_.gpus == nullptr) return sample;
  for (v1::GpuErrors& gpu : deps_.gpus->Read()) {
    if (gpu.ecc_unavailable().empty()) {
      gpu.set_ecc_corrected_delta(
          ecc_.Delta(absl::StrCat(gpu.index(), "/corrected"), gpu.ecc_corrected()));
      gpu.set_ecc_uncorrected_delta(
          ecc_.Delta(absl::StrCat(gpu.index(), "/uncorrected"), gpu.ecc_uncorrected()));
    }
    *sample.add_gpu_errors() = std::move(gpu);
  }
  return sample;
}

}  // namespace fleet::agent
