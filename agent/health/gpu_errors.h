// GPU errors for `fleet health`: each GPU's volatile ECC totals and the XID critical errors
// since the previous read, through NVML. The interface is the seam: NvmlGpuErrors keeps NVML
// loaded for the agent's life, because XID events reach only an event set registered before
// they happen; tests use a fake.
//
// Example:
//   std::unique_ptr<GpuErrorSource> gpus = OpenNvmlGpuErrors();
//   for (const v1::GpuErrors& e : gpus->Read()) { ... e.xids() ... }
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// What the agent's /metrics shows: totals, never reset by a read.
struct GpuErrorTotals {
  uint32_t index = 0;
  std::optional<uint64_t> ecc_corrected;  // volatile; unset when NVML cannot read it
  std::optional<uint64_t> ecc_uncorrected;
  std::optional<uint64_t> xids;  // XID critical errors since the agent started; unset: not watched
};

class GpuErrorSource {
 public:
  virtual ~GpuErrorSource() = default;
  // One entry per GPU with its ECC totals (deltas left 0: HealthCollector computes them) and
  // the XIDs that arrived since the previous Read; what could not be read says why in
  // ecc_unavailable / xid_unavailable. Empty when there is no GPU or no NVML (the node probe
  // says why).
  virtual std::vector<v1::GpuErrors> Read() = 0;
  // Every GPU's totals, for Prometheus; does not take the XIDs a later Read reports.
  virtual std::vector<GpuErrorTotals> Totals() = 0;
};

// NVML through dlopen; never null. Without libnvidia-ml.so.1 every Read is empty.
std::unique_ptr<GpuErrorSource> OpenNvmlGpuErrors();

}  // namespace fleet::agent
