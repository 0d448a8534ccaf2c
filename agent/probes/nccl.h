// The NCCL probe: which libnccl.so.2 a shard would load and its version. For the process
// runtime a helper process (fleet-nccl-probe) dlopen()s it under the shard's LD_PRELOAD and
// LD_LIBRARY_PATH, so the dynamic loader itself picks the file; for the docker runtime the
// image's file system is searched in the loader's order and the version read from the file name.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/probes/probe_context.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// The helper's file name; ProbeNccl looks for it beside the running executable.
inline constexpr char kNcclProbeHelper[] = "fleet-nccl-probe";

// Fills out->nccl, or appends to out->unavailable why it could not ("nccl: libnccl.so.2 not
// found with LD_LIBRARY_PATH=/opt/nccl/lib LD_PRELOAD=(unset): ..."). Docker runtime: looks in
// ctx.request.image() with `ctx.docker run --rm`. Otherwise (live only): runs kNcclProbeHelper
// found beside /proc/self/exe.
//
// Example:
//   ProbeContext ctx{.node_name = "spark-1"};
//   ctx.request.add_shard_env()->set_name("LD_LIBRARY_PATH");  // ... value "/opt/nccl/lib"
//   ProbeNccl(ctx, &probe);  // probe.nccl().version() == "2.30.4"
void ProbeNccl(const ProbeContext& ctx, v1::NodeProbe* out);

// ProbeNccl with the helper executable at `helper` (tests run the one of their build tree).
void ProbeNcclWithHelper(const ProbeContext& ctx, const std::string& helper, v1::NodeProbe* out);

// The version ncclGetVersion encodes: "2.28.9" for 22809 (NCCL >= 2.9: major * 10000 +
// minor * 100 + patch), "2.7.8" for 2708 (older: major * 1000 + minor * 100 + patch).
std::string NcclVersionString(int code);

// "2.30.4" for "libnccl.so.2.30.4" (a path is fine); nullopt when the name carries no full
// version ("libnccl.so.2", as pip wheels ship it).
std::optional<std::string> NcclVersionFromFileName(absl::string_view name);

}  // namespace fleet::agent
