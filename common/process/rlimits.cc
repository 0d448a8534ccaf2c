// The resource-name table (rlimits.h).
#include "common/process/rlimits.h"

#include <sys/resource.h>

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fleet {
namespace {

constexpr std::array<std::pair<absl::string_view, int>, 15> kResources = {{
    {"core", RLIMIT_CORE},
    {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},
    {"fsize", RLIMIT_FSIZE},
    {"locks", RLIMIT_LOCKS},
    {"memlock", RLIMIT_MEMLOCK},
    {"msgqueue", RLIMIT_MSGQUEUE},
    {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE},
    {"nproc", RLIMIT_NPROC},
    {"rss", RLIMIT_RSS},
    {"rtprio", RLIMIT_RTPRIO},
    {"rttime", RLIMIT_RTTIME},
    {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
}};

}  // namespace

std::optional<int> ResourceByName(absl::string_view name) {
  for (const auto& [known, resource] : kResources) {
    if (known == name) return resource;
  }
  return std::nullopt;
}

std::string ResourceName(int resource) {
  for (const auto& [name, known] : kResources) {
    if (known == resource) return std::string(name);
  }
  return absl::StrCat("rlimit ", resource);
}

std::vector<std::string> ResourceNames() {
  std::vector<std::string> names;
  for (const auto& entry : kResources) names.emplace_back(entry.first);
  return names;
}

}  // namespace fleet
