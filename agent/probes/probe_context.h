// What every node probe is given: the root it reads files under, whether that root is the live
// system (so syscalls and dlopen describe it too), and the recipe-dependent request.
#pragma once

#include <string>

#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

struct ProbeContext {
  // sys/, proc/, dev/, etc/ are read beneath it. "/" on a node; a recorded tree in tests.
  std::string root = "/";
  // True when `root` is "/" of the running machine: probes may then also call getrlimit,
  // statvfs, getifaddrs, dlopen vendor libraries and run docker. False for a recorded tree:
  // only its files are read, and what only a syscall could tell is reported unavailable.
  bool live = true;
  std::string node_name;          // for messages
  std::string docker = "docker";  // docker CLI
  // The stage manifest cache that model hashes are read from and added to (STATE_DIR/stage-cache,
  // shared with `fleet stage`, see agent/stage/manifest.h); empty: no cache.
  std::string cache_dir;
  v1::ProbeRequest request;
  // Reported as NodeProbe.agent: where this agent puts a docker shard's files.
  v1::AgentPaths agent;
};

}  // namespace fleet::agent
