// Every probe of a node.
#include "agent/probes/probe_all.h"

#include "absl/time/clock.h"
#include "agent/probes/artifacts.h"
#include "agent/probes/gpu.h"
#include "agent/probes/limits.h"
#include "agent/probes/nccl.h"
#include "agent/probes/network.h"
#include "agent/probes/rdma.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::agent {

v1::NodeProbe RunProbes(const ProbeContext& ctx) {
  v1::NodeProbe probe;
  ProbeRdma(ctx, &probe);
  ProbeNetwork(ctx, &probe);
  ProbeLimits(ctx, &probe);
  ProbeGpu(ctx, &probe);
  ProbeNccl(ctx, &probe);
  ProbeArtifacts(ctx, &probe);
  *probe.mutable_agent() = ctx.agent;
  *probe.mutable_taken_at() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
  return probe;
}

}  // namespace fleet::agent
