// Where the `fleet` CLI finds its controller.
#include "cli/config.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {
namespace {

std::string Home() {
  const char* home = std::getenv("HOME");
  return home != nullptr && *home != '\0' ? home : "/root";
}

}  // namespace

std::string StateHome() {
  const char* xdg = std::getenv("XDG_STATE_HOME");
  if (xdg != nullptr && *xdg != '\0') return absl::StrCat(xdg, "/fleet");
  return absl::StrCat(Home(), "/.local/state/fleet");
}

absl::StatusOr<CliConfig> LoadConfigFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  CliConfig config;
  config.source = path;
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected a mapping with a `controller: HOST:PORT` key"));
    }
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      if (key == "controller") {
        config.controller = kv.second.as<std::string>();
      } else {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", kv.first.Mark().line + 1,
                                                       ": unknown key `", key,
                                                       "`; the known key is `controller`"));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  if (config.controller.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no `controller: HOST:PORT` entry"));
  }
  return config;
}

absl::Status WriteConfigFile(const std::string& path, const std::string& controller) {
  return WriteFileAtomically(path,
                             absl::StrCat("# Written by `fleet up`; FLEET_CONFIG=", path,
                                          " selects it.\n", "controller: ", controller, "\n"),
                             0600);
}

absl::StatusOr<CliConfig> ResolveConfig(const std::string& flag) {
  if (!flag.empty()) return CliConfig{flag, "--controller"};
  if (const char* env = std::getenv("FLEET_CONFIG"); env != nullptr && *env != '\0') {
    absl::StatusOr<CliConfig> c = LoadConfigFile(env);
    if (!c.ok()) {
      return absl::Status(c.status().code(), absl::StrCat("FLEET_CONFIG: ", c.status().message()));
    }
    return c;
  }
  std::string user = absl::StrCat(Home(), "/.config/fleet/config.yaml");
  absl::StatusOr<CliConfig> c = LoadConfigFile(user);
  if (c.ok() || !absl::IsNotFound(c.status())) return c;
  absl::StatusOr<std::string> last = ReadFileToString(absl::StrCat(StateHome(), "/last-local"));
  if (last.ok()) {
    std::string dir(absl::StripAsciiWhitespace(*last));
    absl::StatusOr<CliConfig> local = LoadConfigFile(absl::StrCat(dir, "/config.yaml"));
    if (local.ok()) return local;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no controller configured: pass --controller HOST:PORT, set FLEET_CONFIG, "
                   "write ",
                   user, ", or start a local cluster with `fleet up`"));
}

absl::Status RememberLocalCluster(const std::string& dir) {
  RETURN_IF_ERROR(MakeDirectories(StateHome(), 0700));
  return WriteFileAtomically(absl::StrCat(StateHome(), "/last-local"), dir + "\n", 0600);
}

}  // namespace fleet::cli
