// Rendering `docker run` for a shard: one pure function, so the agent's docker runtime and
// `fleet plan` show the same argv and golden tests pin it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fleet/v1/probe.pb.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::engine {

// `fleet agent --state-dir`'s default; an offline `fleet plan` assumes it.
inline constexpr char kAgentDefaultStateDir[] = "/var/lib/fleet-agent";

// What the node's Docker engine says about the image (`docker image inspect`).
struct ImageInfo {
  std::vector<std::string> entrypoint;  // Config.Entrypoint; empty when none
  std::string id;                       // "sha256:..."
};

// A word as a POSIX shell reads it back unchanged: bare when it holds only characters no shell
// treats specially, else in single quotes (a quote inside becomes '\'').
// Example: ShellQuote("it's") == R"('it'\''s')", ShellQuote("--port") == "--port".
std::string ShellQuote(absl::string_view word);

// `words` as one line to paste into a shell: each word ShellQuote'd, except that a leading "~/"
// stays bare so the shell expands it (`-v ~/.cache/hf:/root/.cache/hf`).
std::string ShellLine(const std::vector<std::string>& words);

// The paths of an agent whose $HOME is `home` and whose --state-dir is `state_dir`: a group's
// caches live under STATE_DIR/cache. Example: AgentPathsFor("/root", "/var/lib/fleet-agent")
// has cache_root "/var/lib/fleet-agent/cache".
v1::AgentPaths AgentPathsFor(absl::string_view home, absl::string_view state_dir);

// The ImageInfo of an image probe (`docker image inspect` on the node, through its agent);
// nullopt when the probe could not see the image.
std::optional<ImageInfo> ImageInfoFromProbe(const v1::ImageProbe& probe);

// Name of the container of one rank: "fleet-GROUP-gGENERATION-rRANK".
std::string ContainerName(const v1::ShardSpec& spec);

// `docker run --detach --name ... --label fleet.group=... --label fleet.generation=...
// --label fleet.rank=... --network host --ipc host [--gpus all] [--device /dev/infiniband]
// --cap-add IPC_LOCK --ulimit memlock=N:N [--shm-size N] -v ... --env-file ENV_FILE IMAGE ARGS...`.
// `cache_root` is the host directory under which cache_dirs live (STATE_DIR/cache/GROUP).
// `env_file` holds RenderEnvFile(spec): the environment goes through a file, never argv, so a
// secret in it (HF_TOKEN) does not show in `ps` or in a log of the command line.
// When `image` is known and its ENTRYPOINT already is the command's first words (e.g.
// ["vllm", "serve"]), those words are dropped from ARGS so `vllm serve` is never doubled;
// when it is unknown (an offline `fleet plan`), ARGS is the command as is. Other ENTRYPOINTs:
//   - a shell with -c (["/bin/bash", "-c"], ["sh", "-c"]): ARGS is one word, "exec " and the
//     shell-quoted command, since `sh -c` runs only its first argument;
//   - anything else (NVIDIA's ["/opt/nvidia/nvidia_entrypoint.sh"]) is taken for a wrapper
//     that execs its arguments: ARGS is the command as is.
// Mount sources are passed as they are; the agent expands a leading "~" first (ExpandHome).
std::vector<std::string> RenderDockerRun(const v1::ShardSpec& spec, const std::string& cache_root,
                                         const std::string& env_file,
                                         const std::optional<ImageInfo>& image);

// The line the agent whose paths are `agent` runs for `spec`: RenderDockerRun with each mount
// source's leading "~" replaced by agent.home (ExpandHome), the caches under
// agent.cache_root/GROUP and the env file at EnvFilePath(agent.state_dir, spec). The agent's
// docker runtime runs exactly this (with its docker CLI's path as word 0), and `fleet plan`
// shows it from the node's probe, so a pasted plan line is the line that ran.
// A mount under "~" stays as written when agent.home is empty (an offline plan: the shell that
// pastes the line expands it).
std::vector<std::string> RenderDockerRunOn(const v1::ShardSpec& spec, const v1::AgentPaths& agent,
                                           const std::optional<ImageInfo>& image);

// The shard's environment in docker's --env-file format: one NAME=VALUE line per variable, in
// the spec's order, values verbatim (no quoting), so a later duplicate wins as it would with
// repeated -e. InvalidArgument naming the variable when the format cannot carry it: a newline
// or carriage return anywhere, or a name that is empty, holds '=' or a space, or starts with '#'
// (docker would read a comment).
// Example: env {HF_TOKEN: "hf_x", A: "1=2"} -> "HF_TOKEN=hf_x\nA=1=2\n".
absl::StatusOr<std::string> RenderEnvFile(const v1::ShardSpec& spec);

// Where the agent writes a shard's env file: STATE_DIR/shards/GROUP.rRANK.gGENERATION.env,
// beside its record.
std::string EnvFilePath(absl::string_view state_dir, const v1::ShardSpec& spec);

// `path` with a leading "~" or "~/" replaced by `home` (the agent's $HOME); other paths as they
// are. Recipes may name mount sources under "~/"; the agent that runs the shard expands them.
// Example: ExpandHome("~/.cache/huggingface", "/root") == "/root/.cache/huggingface".
std::string ExpandHome(absl::string_view path, absl::string_view home);

}  // namespace fleet::engine
