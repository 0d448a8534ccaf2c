// Where the `fleet` CLI finds its controller: flag, $FLEET_CONFIG, ~/.config/fleet/config.yaml,
// or the most recent local cluster started by `fleet up`, in that order.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/transport.h"

namespace fleet::cli {

struct CliConfig {
  std::string controller;  // "HOST:PORT"
  // PEM files of the admin credential; relative paths in the file are taken from its folder.
  std::string ca, cert, key;
  std::string source;  // where it came from, for error messages
};

// Parses a config file, as the controller writes it for its admin:
//   controller: 127.0.0.1:7100
//   ca: /var/lib/fleet/pki/ca.crt
//   cert: /var/lib/fleet/pki/admin.crt
//   key: /var/lib/fleet/pki/admin.key
// Unknown keys are errors naming the key, so a typo is not silently ignored.
absl::StatusOr<CliConfig> LoadConfigFile(const std::string& path);

// Resolves the controller and credentials for a CLI command. `flag` replaces the controller
// address of whatever config is found; a flag with no config at all is an error naming where
// the admin config is, since every call needs the admin credential.
absl::StatusOr<CliConfig> ResolveConfig(const std::string& flag);

// The CLI's mutual-TLS credentials from the config's PEM files; FailedPrecondition naming
// what is missing.
absl::StatusOr<std::shared_ptr<TransportCredentials>> AdminTransport(const CliConfig& config);

// $XDG_STATE_HOME/fleet (default ~/.local/state/fleet): default home of local clusters and
// of the pointer to the most recent one.
std::string StateHome();
// Records `dir` as the most recent local cluster.
absl::Status RememberLocalCluster(const std::string& dir);

}  // namespace fleet::cli
