// The GPU probe: what NVML (libnvidia-ml.so.1) and the CUDA runtime (libcudart) say about the
// node's GPUs, driver and CUDA versions. Both libraries are dlopen()ed, never linked, so one
// agent binary runs on nodes with and without an NVIDIA driver.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/probes/probe_context.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Fills out->gpu on a live node; appends to out->unavailable every library, call or field that
// could not be read ("gpu: libnvidia-ml.so.1 not found: no NVIDIA driver on this node",
// "gpu 0: memory: Not Supported"), and says the GPU was not probed when ctx.live is false.
// Read-only: it never changes clocks, power, compute mode or any other GPU setting.
//
// Example:
//   v1::NodeProbe probe;
//   ProbeGpu({.root = "/", .live = true, .node_name = "spark-1"}, &probe);
//   // probe.gpu().gpus(0).arch() == "sm_121" on a DGX Spark
void ProbeGpu(const ProbeContext& ctx, v1::NodeProbe* out);

// "sm_121" for compute capability 12.1.
std::string ArchOfComputeCapability(int major, int minor);

// "13.0" for 13000, "12.8" for 12080: the encoding of cudaDriverGetVersion and
// cudaRuntimeGetVersion (1000 * major + 10 * minor).
std::string CudaVersionString(int version);

// NVML's clocks throttle reason bits as names ("SwPowerCap", "HwSlowdown", ...); a bit NVML
// has no name for here comes out as its hex value ("0x400"). 0 (not throttled) is empty.
std::vector<std::string> ThrottleReasonNames(uint64_t mask);

}  // namespace fleet::agent
