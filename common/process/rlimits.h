// setrlimit(2) resources by the names `docker run --ulimit` and ulimit(1) use ("stack",
// "nofile", "memlock", ...): the one table the recipe parser, the process runtime and the
// process runner's errors share.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace fleet {

// RLIMIT_STACK for "stack"; nullopt for a name docker does not know.
std::optional<int> ResourceByName(absl::string_view name);

// "stack" for RLIMIT_STACK; "rlimit N" for a resource without a docker name.
std::string ResourceName(int resource);

// Every name, in alphabetical order: "core", "cpu", ..., "stack".
std::vector<std::string> ResourceNames();

}  // namespace fleet
