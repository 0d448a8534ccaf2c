// The bodies of the `fleet` commands that talk to a controller. Each returns the process exit
// code after printing its result (stdout) or error (stderr).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/controller_api.h"

namespace fleet::cli {

struct Globals {
  std::string controller;  // --controller
  std::string output;      // -o
};

int Fail(const std::string& message);

// The admin client of the configured controller (--controller, FLEET_CONFIG, ...), with
// `deadline` for each call.
absl::StatusOr<AdminClient> Connect(const Globals& g, absl::Duration deadline = absl::Seconds(5));

int GetNodes(const Globals& g);
int CreateToken(const Globals& g, const std::string& ttl, int64_t uses,
                const std::string& description);
int ListTokens(const Globals& g);
int RevokeToken(const Globals& g, const std::string& id);
int RemoveNode(const Globals& g, const std::string& name);
int Discover(const Globals& g, const std::vector<std::string>& interfaces,
             const std::vector<std::string>& targets, const std::string& timeout, bool adopt);

// A duration flag such as "1s", "500ms", "24h"; "0" or "never" is InfiniteDuration when
// `allow_never`.
absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& name, const std::string& text,
                                                 bool allow_never = false);

}  // namespace fleet::cli
