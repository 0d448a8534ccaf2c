// Where the `fleet` CLI finds its controller.
#include "cli/config.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {
namespace {

constexpr char kDefaultAdminConfig[] = "/var/lib/fleet/admin.yaml";

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
  const std::string dir = std::filesystem::path(path).parent_path();
  auto resolve = [&](std::string file) {
    return file.empty() || file.front() == '/' ? file : absl::StrCat(dir, "/", file);
  };
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected a mapping with a `controller: HOST:PORT` key"));
    }
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      std::string value = kv.second.as<std::string>();
      if (key == "controller") {
        config.controller = value;
      } else if (key == "ca") {
        config.ca = resolve(value);
      } else if (key == "cert") {
        config.cert = resolve(value);
      } else if (key == "key") {
        config.key = resolve(value);
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", kv.first.Mark().line + 1, ": unknown key `", key,
                         "`; the known keys are controller, ca, cert, key"));
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

namespace {

absl::StatusOr<CliConfig> FindConfigFile() {
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
  // What a controller with the default state dir writes for its admin, on the head node.
  c = LoadConfigFile(kDefaultAdminConfig);
  if (c.ok() || !(absl::IsNotFound(c.status()) || absl::IsPermissionDenied(c.status()))) return c;
  absl::StatusOr<std::string> last = ReadFileToString(absl::StrCat(StateHome(), "/last-local"));
  if (last.ok()) {
    std::string dir(absl::StripAsciiWhitespace(*last));
    absl::StatusOr<CliConfig> local = LoadConfigFile(absl::StrCat(dir, "/config.yaml"));
    if (local.ok()) return local;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no SparkFleet config found: set FLEET_CONFIG to the admin config the controller wrote "
      "(default ",
      user, "), or start a local cluster with `fleet up`"));
}

}  // namespace

absl::StatusOr<CliConfig> ResolveConfig(const std::string& flag) {
  ASSIGN_OR_RETURN(CliConfig config, FindConfigFile());
  if (!flag.empty()) {
    config.controller = flag;
    config.source = absl::StrCat("--controller, credentials from ", config.source);
  }
  return config;
}

absl::StatusOr<std::shared_ptr<TransportCredentials>> AdminTransport(const CliConfig& config) {
  if (config.ca.empty() || config.cert.empty() || config.key.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(config.source,
                     " names no admin credential (ca, cert, key); use the admin config the "
                     "controller wrote (its --admin-config)"));
  }
  std::string pem[3];
  const std::string* paths[3] = {&config.ca, &config.cert, &config.key};
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> text = ReadFileToString(*paths[i]);
    if (!text.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("admin credential from ", config.source, ": ", text.status().message()));
    }
    pem[i] = *std::move(text);
  }
  return MutualTls(pem[0], pem[2], pem[1], ClientCertificates::kOptional);
}

absl::Status RememberLocalCluster(const std::string& dir) {
  RETURN_IF_ERROR(MakeDirectories(StateHome(), 0700));
  return WriteFileAtomically(absl::StrCat(StateHome(), "/last-local"), dir + "\n", 0600);
}

}  // namespace fleet::cli
