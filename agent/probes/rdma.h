// The RDMA probe: every device under ROOT/sys/class/infiniband with its ports, GID tables and
// the netdevs behind them, as ibdev2netdev and NCCL see them; cross-checked with libibverbs
// (loaded with dlopen) on the live system.
#pragma once

#include "agent/probes/probe_context.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Appends one v1::RdmaDevice per device to out->rdma(), sorted by name, and to
// out->unavailable() a line for each thing it could not read. Runs before ProbeNetwork, which
// marks the netdevs found here as fabric.
//
// Example:
//   v1::NodeProbe probe;
//   ProbeRdma({.root = "/", .live = true}, &probe);
void ProbeRdma(const ProbeContext& ctx, v1::NodeProbe* out);

}  // namespace fleet::agent
