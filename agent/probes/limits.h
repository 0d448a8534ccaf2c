// The limits probe: the agent's RLIMIT_MEMLOCK and whether it may raise it, /dev/shm, huge
// pages, memory and swap, and free space at the paths a recipe names.
#pragma once

#include "agent/probes/probe_context.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Fills out->limits() from ROOT/proc/self/limits, ROOT/proc/self/status and ROOT/proc/meminfo,
// and appends one v1::DiskProbe per ctx.request.disk_paths() to out->disks().
//
// /dev/shm: statvfs on the live system. Under a recorded root only its size is known, from the
// size= option of the /dev/shm line in ROOT/proc/mounts; its free space is reported unavailable.
// Disks: statvfs on the live system; under a recorded root each is reported unavailable.
//
// Example:
//   ProbeContext ctx{.root = "/", .live = true};
//   ctx.request.add_disk_paths("/var/lib/fleet/models");
//   ProbeLimits(ctx, &probe);
void ProbeLimits(const ProbeContext& ctx, v1::NodeProbe* out);

}  // namespace fleet::agent
