// Where the `fleet` CLI finds its controller: flag, $FLEET_CONFIG, ~/.config/fleet/config.yaml,
// or the most recent local cluster started by `fleet up`, in that order.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace fleet::cli {

struct CliConfig {
  std::string controller;  // "HOST:PORT"
  std::string source;      // where it came from, for error messages
};

// Parses a config file:
//   controller: 127.0.0.1:7100
// Unknown keys are errors naming the key, so a typo is not silently ignored.
absl::StatusOr<CliConfig> LoadConfigFile(const std::string& path);

// Writes a config file naming `controller` (0600: later versions add credentials to it).
absl::Status WriteConfigFile(const std::string& path, const std::string& controller);

// Resolves the controller for a CLI command. `flag` wins when not empty.
absl::StatusOr<CliConfig> ResolveConfig(const std::string& flag);

// $XDG_STATE_HOME/fleet (default ~/.local/state/fleet): default home of local clusters and
// of the pointer to the most recent one.
std::string StateHome();
// Records `dir` as the most recent local cluster.
absl::Status RememberLocalCluster(const std::string& dir);

}  // namespace fleet::cli
