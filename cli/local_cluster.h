// `fleet up` / `fleet down`: a controller and N agents as processes on this machine, each
// agent on its own loopback address (127.0.0.2, 127.0.0.3, ...) so every node has its own IP.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fleet::cli {

struct UpOptions {
  int nodes = 2;
  std::string dir;      // state, logs, config.yaml and cluster.json of this cluster
  bool detach = false;  // return once Ready, leaving the processes running
  absl::Duration timeout = absl::Seconds(30);  // to reach Ready
  std::string fleet_binary;  // this executable, started as `fleet controller` / `fleet agent`
  // Applied once the nodes are Ready: a recipe file, or empty for the built-in local demo
  // (recipes/local-demo.yaml, compiled in). `no_recipe` starts only the nodes.
  std::string recipe;
  std::vector<std::string> overrides;
  bool no_recipe = false;
};

// Starts the cluster and waits until every node is Ready. In the foreground it then waits for
// SIGINT/SIGTERM/SIGHUP (which the caller must have blocked in every thread) and stops every
// process; if a process dies on its own it stops the rest and fails. On any failure nothing is
// left running.
absl::Status RunUp(const UpOptions& options, std::ostream& out);

// Stops the cluster recorded in DIR/cluster.json: its groups first (shards outlive agents by
// design), then the agents, then the controller.
absl::Status RunDown(const std::string& dir, std::ostream& out);

}  // namespace fleet::cli
