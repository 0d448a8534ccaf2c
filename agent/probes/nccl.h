// The NCCL probe: which libnccl.so.2 a shard would load and its version. For the process
// runtime a helper process (fleet-nccl-probe) dlopen()s it under the shard's LD_PRELOAD and
// LD_LIBRARY_PATH, so the dynamic loader itself picks the file; for the docker runtime the
// image's file system is searched in the loader's order and the version read from the file
// name, or, when the name carries none, from the helper run inside the image. Both follow
// VLLM_NCCL_SO_PATH, the library vLLM dlopen()s instead of libnccl.so.2 when it is set.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "agent/probes/probe_context.h"
#include "common/process/process_runner.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// The helper's file name; ProbeNccl looks for it beside the running executable.
inline constexpr char kNcclProbeHelper[] = "fleet-nccl-probe";

// Fills out->nccl, or appends to out->unavailable why it could not ("nccl: libnccl.so.2 not
// found with LD_LIBRARY_PATH=/opt/nccl/lib LD_PRELOAD=(unset): ..."). Docker runtime: looks in
// ctx.request.image() with `ctx.docker run --rm`. Otherwise (live only): runs kNcclProbeHelper
// found beside /proc/self/exe.
//
// A non-empty VLLM_NCCL_SO_PATH (the shard's env; for docker else the image's, for the process
// runtime else the agent's, which the shard inherits) is the library judged, and `how` says it
// was followed. When it names nothing loadable, out->nccl.error says so with the fix: vLLM
// would fail to start, and another libnccl.so.2 is never reported in its place.
// A library found without a version in its file name (a pip wheel's plain libnccl.so.2) is
// asked with ncclGetVersion; where the helper cannot run in the image (no glibc, another
// architecture) out->nccl.version stays empty and version_unknown says "not checked: ...".
//
// Example:
//   ProbeContext ctx{.node_name = "spark-1"};
//   ctx.request.add_shard_env()->set_name("LD_LIBRARY_PATH");  // ... value "/opt/nccl/lib"
//   ProbeNccl(ctx, &probe);  // probe.nccl().version() == "2.30.4"
void ProbeNccl(const ProbeContext& ctx, v1::NodeProbe* out);

// ProbeNccl with the helper executable at `helper` (tests run the one of their build tree).
void ProbeNcclWithHelper(const ProbeContext& ctx, const std::string& helper, v1::NodeProbe* out);

// ProbeNcclWithHelper running the helper and docker through `runner` (unit tests fake it).
void ProbeNcclWith(const ProbeContext& ctx, const std::string& helper, ProcessRunner& runner,
                   v1::NodeProbe* out);

// The version ncclGetVersion encodes: "2.28.9" for 22809 (NCCL >= 2.9: major * 10000 +
// minor * 100 + patch), "2.7.8" for 2708 (older: major * 1000 + minor * 100 + patch).
std::string NcclVersionString(int code);

// "2.30.4" for "libnccl.so.2.30.4" (a path is fine); nullopt when the name carries no full
// version ("libnccl.so.2", as pip wheels ship it).
std::optional<std::string> NcclVersionFromFileName(absl::string_view name);

}  // namespace fleet::agent
