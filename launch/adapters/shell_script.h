// Commands that are shell scripts (`bash -lc '... ${NODE_RANK} ...'`, as in the community's
// compose files): nothing can be appended to them (the shell would take extra words as the
// script's positional arguments), so their ranks learn their place from the environment.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/adapters/adapter.h"

namespace fleet::engine {

// The script of `sh|bash|dash|zsh [-options]c SCRIPT [NAME ARGS...]` (the shell may be named by
// a path, and `-c` may be grouped with other options: `-lc`, `-ec`, `-xc`); nullopt for any
// other command.
std::optional<std::string> ShellScriptOf(const std::vector<std::string>& command);

// What a script's rank reads beside MASTER_ADDR and MASTER_PORT, which every plan sets:
// NODE_RANK, NNODES and HEADLESS ("1" on ranks > 0, empty on the head, so
// `${HEADLESS:+--headless}` expands on workers only).
std::vector<std::pair<std::string, std::string>> ScriptRankEnv(const GroupContext& group, int rank);

// The master port a script fixes itself (`--master-port 25000`, `--master-port=25000`), or
// nullopt when it takes it from $MASTER_PORT or names none. InvalidArgument when it names more
// than one, or a value that is neither a port number nor a variable.
absl::StatusOr<std::optional<int>> ScriptMasterPort(const std::string& script);

}  // namespace fleet::engine
