// Rendering `docker run` for one shard.
#include "launch/docker_run.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace fleet::engine {
namespace {

bool IsShell(absl::string_view program) {
  absl::string_view base = program.substr(program.rfind('/') + 1);
  return base == "sh" || base == "bash" || base == "dash" || base == "ash" || base == "zsh";
}

// The words given after IMAGE so that ENTRYPOINT + words runs `argv`.
std::vector<std::string> ImageArgs(const std::vector<std::string>& argv,
                                   const std::optional<ImageInfo>& image) {
  if (!image.has_value() || image->entrypoint.empty()) return argv;
  const std::vector<std::string>& entrypoint = image->entrypoint;
  if (entrypoint.size() <= argv.size() &&
      std::equal(entrypoint.begin(), entrypoint.end(), argv.begin())) {
    return {argv.begin() + static_cast<std::ptrdiff_t>(entrypoint.size()), argv.end()};
  }
  // `sh -c` runs its first argument as a script and makes the rest $0, $1, ...: the command
  // goes in as one script. `exec` replaces the shell with the engine, so `docker stop`'s
  // SIGTERM reaches the engine rather than a shell that does not forward it.
  if (entrypoint.size() == 2 && IsShell(entrypoint[0]) && entrypoint[1] == "-c") {
    std::vector<std::string> quoted;
    quoted.reserve(argv.size());
    for (const std::string& word : argv) quoted.push_back(ShellQuote(word));
    return {absl::StrCat("exec ", absl::StrJoin(quoted, " "))};
  }
  // Any other ENTRYPOINT is a wrapper that execs its arguments (NVIDIA's
  // /opt/nvidia/nvidia_entrypoint.sh sets up the environment, then runs "$@").
  return argv;
}

// "/root/.cache/vllm" → "root_.cache_vllm": one flat directory per cache under the group's root.
std::string CacheDirName(absl::string_view path) {
  std::string name(path);
  std::replace(name.begin(), name.end(), '/', '_');
  absl::string_view trimmed = name;
  while (absl::ConsumePrefix(&trimmed, "_")) {
  }
  return std::string(trimmed);
}

}  // namespace

std::string ShellQuote(absl::string_view word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || absl::StrContains("@%+=:,./_-", c);
  });
  if (plain) return std::string(word);
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += "'";
  return quoted;
}

std::string ShellLine(const std::vector<std::string>& words) {
  std::vector<std::string> quoted;
  quoted.reserve(words.size());
  for (const std::string& word : words) {
    absl::string_view rest = word;
    // A leading "~/" stays bare: the shell that pastes the line expands it to its HOME.
    if (absl::ConsumePrefix(&rest, "~/")) {
      quoted.push_back(rest.empty() ? "~/" : absl::StrCat("~/", ShellQuote(rest)));
    } else {
      quoted.push_back(ShellQuote(word));
    }
  }
  return absl::StrJoin(quoted, " ");
}

v1::AgentPaths AgentPathsFor(absl::string_view home, absl::string_view state_dir) {
  v1::AgentPaths paths;
  paths.set_home(std::string(home));
  paths.set_state_dir(std::string(state_dir));
  paths.set_cache_root(absl::StrCat(state_dir, "/cache"));
  return paths;
}

std::optional<ImageInfo> ImageInfoFromProbe(const v1::ImageProbe& probe) {
  if (!probe.present()) return std::nullopt;
  return ImageInfo{.entrypoint = {probe.entrypoint().begin(), probe.entrypoint().end()},
                   .id = probe.id()};
}

std::string ContainerName(const v1::ShardSpec& spec) {
  return absl::StrCat("fleet-", spec.group(), "-g", spec.generation(), "-r", spec.rank());
}

std::string ExpandHome(absl::string_view path, absl::string_view home) {
  if (path == "~") return std::string(home);
  if (absl::StartsWith(path, "~/")) return absl::StrCat(home, path.substr(1));
  return std::string(path);
}

std::vector<std::string> RenderDockerRun(const v1::ShardSpec& spec, const std::string& cache_root,
                                         const std::string& env_file,
                                         const std::optional<ImageInfo>& image) {
  std::vector<std::string> run = {"docker",
                                  "run",
                                  "--detach",
                                  "--name",
                                  ContainerName(spec),
                                  "--label",
                                  absl::StrCat("fleet.group=", spec.group()),
                                  "--label",
                                  absl::StrCat("fleet.generation=", spec.generation()),
                                  "--label",
                                  absl::StrCat("fleet.rank=", spec.rank()),
                                  "--network",
                                  "host",
                                  "--ipc",
                                  "host"};
  if (spec.gpus()) run.insert(run.end(), {"--gpus", "all"});
  if (spec.infiniband()) run.insert(run.end(), {"--device", "/dev/infiniband"});
  // Docker's memlock limit is in bytes; -1 is unlimited, which RDMA memory registration of a
  // model's buffers needs. Unset means "as high as allowed": the agent checks beforehand that
  // unlimited is allowed (its own hard limit) and says so in the shard's status otherwise.
  std::string memlock = "-1";
  if (spec.has_memlock_bytes() && spec.memlock_bytes() != std::numeric_limits<uint64_t>::max()) {
    memlock = absl::StrCat(spec.memlock_bytes());
  }
  run.insert(run.end(), {"--cap-add", "IPC_LOCK", "--ulimit",
                         absl::StrCat("memlock=", memlock, ":", memlock)});
  auto limit_text = [](uint64_t value) {
    return value == std::numeric_limits<uint64_t>::max() ? std::string("-1") : absl::StrCat(value);
  };
  for (const v1::Ulimit& limit : spec.ulimits()) {
    run.insert(run.end(), {"--ulimit", absl::StrCat(limit.name(), "=", limit_text(limit.soft()),
                                                    ":", limit_text(limit.hard()))});
  }
  if (spec.shm_bytes() > 0) run.insert(run.end(), {"--shm-size", absl::StrCat(spec.shm_bytes())});
  for (const v1::Mount& mount : spec.mounts()) {
    run.insert(run.end(), {"-v", absl::StrCat(mount.source(), ":", mount.target(),
                                              mount.read_only() ? ":ro" : "")});
  }
  absl::string_view root = absl::StripSuffix(cache_root, "/");
  for (const std::string& dir : spec.cache_dirs()) {
    run.insert(run.end(), {"-v", absl::StrCat(root, "/", CacheDirName(dir), ":", dir)});
  }
  run.insert(run.end(), {"--env-file", env_file});
  run.push_back(spec.image());
  std::vector<std::string> args(spec.argv().begin(), spec.argv().end());
  for (std::string& arg : ImageArgs(args, image)) run.push_back(std::move(arg));
  return run;
}

std::vector<std::string> RenderDockerRunOn(const v1::ShardSpec& spec, const v1::AgentPaths& agent,
                                           const std::optional<ImageInfo>& image) {
  v1::ShardSpec expanded = spec;
  if (!agent.home().empty()) {
    for (v1::Mount& mount : *expanded.mutable_mounts()) {
      mount.set_source(ExpandHome(mount.source(), agent.home()));
    }
  }
  return RenderDockerRun(
      expanded, absl::StrCat(absl::StripSuffix(agent.cache_root(), "/"), "/", spec.group()),
      EnvFilePath(agent.state_dir(), spec), image);
}

absl::StatusOr<std::string> RenderEnvFile(const v1::ShardSpec& spec) {
  std::string file;
  for (const v1::EnvVar& var : spec.env()) {
    // Docker reads the file line by line, skips lines starting with '#', drops a trailing '\r'
    // and refuses names with white space; anything else after the first '=' is the value.
    const absl::string_view name = var.name();
    if (name.empty() || absl::StartsWith(name, "#") || absl::StrContains(name, '=') ||
        std::any_of(name.begin(), name.end(),
                    [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); })) {
      return absl::InvalidArgumentError(absl::StrCat(
          "environment variable name '", name,
          "' cannot be passed to docker: a name must be non-empty, must not start with '#' and "
          "must hold no '=' or white space; rename it in the recipe's env"));
    }
    if (absl::StrContains(var.value(), '\n') || absl::StrContains(var.value(), '\r')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "environment variable ", name,
          " holds a line break, which docker's --env-file cannot carry; put its value on one line "
          "(or put the text in a mounted file and pass the file's path)"));
    }
    absl::StrAppend(&file, name, "=", var.value(), "\n");
  }
  return file;
}

std::string EnvFilePath(absl::string_view state_dir, const v1::ShardSpec& spec) {
  return absl::StrCat(state_dir, "/shards/", spec.group(), ".r", spec.rank(), ".g",
                      spec.generation(), ".env");
}

}  // namespace fleet::engine
