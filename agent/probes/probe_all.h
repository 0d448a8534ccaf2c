// Every probe of a node, in the order they depend on each other: RDMA first (the network probe
// marks the interfaces backing RDMA devices as fabric), then network, limits, GPU, NCCL, and
// the artifacts a recipe names.
#pragma once

#include "agent/probes/probe_context.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Example:
//   v1::NodeProbe probe = RunProbes({.root = "/", .live = true, .node_name = "spark-1"});
v1::NodeProbe RunProbes(const ProbeContext& ctx);

}  // namespace fleet::agent
