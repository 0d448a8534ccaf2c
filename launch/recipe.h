// Recipes: the YAML files that say what a serving group runs. Version 1 is the community
// format of spark-vllm-docker's run-recipe.sh, loaded and rendered unchanged; version 2 keeps
// every version-1 key and adds SparkFleet's (engine, nodes, replicas, placement, runtime,
// requires, mounts, cache_dirs, health, restart).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::engine {

// Where a value was written, for error messages ("recipes/ds4.yaml:12:5"). 1-based; line 0
// means the value did not come from the file (a default or a command-line override).
struct SourceLocation {
  int line = 0;
  int column = 0;
};

// A `-o key=value` given on the command line; it replaces `defaults[key]`. The value is used as
// the text given ("yes" stays "yes"); it is not re-read as YAML.
struct Override {
  std::string key;
  std::string value;
};

// Parses "key=value" (the value may contain '='). InvalidArgument names the fix otherwise.
absl::StatusOr<Override> ParseOverride(absl::string_view text);

enum class RuntimeKind { kDocker, kProcess };

struct MountSpec {
  std::string source;  // host path
  std::string target;  // container path
  bool read_only = false;
};

// `requires:` — what the nodes must offer; preflight checks it, and the runtime gives the
// shard the memlock and shm asked for. Sizes are bytes or a number with k, m, g or t, each a
// power of 1024 as in docker's --shm-size ("16g", "16G", "64Gi", "16gb", "1.5g", "512m").
struct Requirements {
  std::string nccl;                       // a version constraint such as ">=2.30.4"; "" = none
  std::optional<uint64_t> memlock_bytes;  // UINT64_MAX = "unlimited"
  std::optional<uint64_t> shm_bytes;      // "16g", "64Gi", or bytes
  std::optional<uint32_t> mtu;            // fabric MTU, e.g. 9000
  std::string gpu_arch;                   // e.g. "sm_121"
  std::optional<uint64_t> min_free_disk_bytes;
};

// One entry of `runtime.ulimits`: a limit by docker's name, soft and hard (UINT64_MAX is
// "unlimited"). `stack: 67108864`, `nofile: {soft: 65536, hard: 1048576}`, `core: unlimited`.
struct UlimitSpec {
  std::string name;
  uint64_t soft = 0;
  uint64_t hard = 0;
};

// What a log signature does once seen `count` times within `window`.
enum class SignatureAction { kRestart, kFail };

// One entry of `health.signatures`, or one of an adapter's built-in signatures
// (launch/signatures.h): `pattern`, an ECMAScript regular expression searched in each line of
// every rank's output, seen `count` times within `window` triggers `action`. `fix` is what the
// operator should do, shown in the group's message with a fail.
//   signatures:
//     - {pattern: "No available shared memory broadcast block", count: 3, window: 3m}
//     - {pattern: "Segmentation fault", action: fail, fix: "update the image"}
struct LogSignature {
  std::string pattern;
  int count = 1;
  absl::Duration window = absl::Minutes(3);
  SignatureAction action = SignatureAction::kRestart;
  std::string fix;
};

// `restart:` — what the controller does when a rank of a group ends or a health check says its
// engine is wedged. The first restart is immediate; each further one within `window` waits
// `initial_backoff`, doubling up to `max_backoff`; a failure after `max_restarts` restarts within
// `window` fails the group, with every rank stopped.
//   restart: {policy: always, initial_backoff: 5s, max_backoff: 300s, max_restarts: 5, window: 10m}
struct RestartSettings {
  bool always = true;  // `policy: always`; false for `policy: never` (a failure is final)
  absl::Duration initial_backoff = absl::Seconds(5);
  absl::Duration max_backoff = absl::Seconds(300);
  int max_restarts = 5;
  absl::Duration window = absl::Minutes(10);
};

// `health:` — readiness probe of the head (see ReadinessProbe in shard.proto).
struct HealthSettings {
  std::string path = "/health";
  std::optional<uint32_t> port;  // unset: `defaults.port` when it is a number
  bool check_models = true;
  bool check_completion = true;
  absl::Duration period = absl::Milliseconds(100);
  absl::Duration request_timeout = absl::Seconds(2);
  // How long a group may take to become Ready before apply gives up (model load of a
  // 150 GB checkpoint plus kernel compilation takes many minutes on a Spark).
  absl::Duration start_timeout = absl::Minutes(30);
  // After Ready the agent on the head watches it: /health and the engine's /metrics every
  // `watch_period`; `failure_threshold` failed /health in a row stop the head (the group then
  // restarts as after any rank's end).
  absl::Duration watch_period = absl::Seconds(5);
  int failure_threshold = 3;
  // Requests running while the engine's generated-token counter stands still this long: wedged.
  absl::Duration stall_timeout = absl::Seconds(120);
  // No token generated this long (or, without the engine's metrics, this long since the last
  // check): a one-token completion must answer within `idle_probe_timeout`.
  absl::Duration idle_probe_after = absl::Seconds(30);
  absl::Duration idle_probe_timeout = absl::Seconds(30);
  // Added to the adapter's built-in signatures; an entry with the pattern of a built-in one
  // replaces it. In file order.
  std::vector<LogSignature> signatures;
};

// `rollout:` — how `fleet roll` (and a changed recipe applied over running replicas) restarts
// an application's replicas behind its router: at most `max_unavailable` at a time, each taken
// out of rotation and given `drain_timeout` to finish its requests before it restarts.
//   rollout: {max_unavailable: 1, drain_timeout: 60s}
struct RolloutSettings {
  int max_unavailable = 1;
  absl::Duration drain_timeout = absl::Seconds(60);
};

// `router:` — the application's one endpoint (HAProxy, run by the agent of the first replica's
// head node). `port` unset: the first port from 8100 on that no other router on that node uses.
//   router: {port: 8100}
struct RouterSettings {
  std::optional<uint32_t> port;
};

// One parsed recipe. Keys a version-1 file cannot have keep their defaults.
struct Recipe {
  std::string path;  // file it was read from, as given; used in every error message
  int version = 1;   // recipe_version: "1" or "2" (or the numbers); required, as in run-recipe.py

  // Version 1 keys.
  std::string name;  // required
  std::string description;
  std::string model;              // Hugging Face id or path, e.g. "deepseek-ai/DeepSeek-V4-Flash"
  std::string container;          // image; required in v1, and in v2 when runtime is docker
  std::vector<std::string> mods;  // spark-vllm-docker launch-time patches
  std::vector<std::string> build_args;  // arguments of the image build, not of the launch
  bool cluster_only = false;
  bool solo_only = false;
  // `defaults:` as the text Python's str.format would print for each value (true → "True",
  // 0.85 → "0.85", auto → "auto"), in file order.
  std::vector<std::pair<std::string, std::string>> defaults;
  // In file order, printed like `defaults`: run-recipe.py exports str(value), so true → "True".
  std::vector<std::pair<std::string, std::string>> env;
  std::string command;  // the template, exactly as written

  // Version 2 keys.
  std::string engine = "vllm";  // adapter name: "vllm", "exec", "native"
  std::optional<int> nodes;     // group size; unset: tensor_parallel × pipeline_parallel
  int replicas = 1;             // independent groups of `nodes` each
  // Node names; the first is the head (rank 0). Written as a list: `placement: [spark-1, spark-2]`
  // (a map such as {nodes: [...]} is refused with that example).
  std::vector<std::string> placement;
  // `runtime: docker|process`, or the map `runtime: {type: docker|process, ulimits: {...}}`.
  RuntimeKind runtime = RuntimeKind::kDocker;  // v1: docker; v2: docker when `container` set
  // runtime.ulimits in file order; memlock among them is also requirements.memlock_bytes.
  std::vector<UlimitSpec> ulimits;
  Requirements requirements;
  std::vector<MountSpec> mounts;
  std::vector<std::string> cache_dirs;  // container paths kept across restarts
  HealthSettings health;
  RestartSettings restart;
  RolloutSettings rollout;
  RouterSettings router;

  // Where each top-level key and each `defaults` key was written, for errors raised after
  // parsing (placement: "tensor_parallel: 4 needs 4 nodes, 2 are Ready"). "command.text" is
  // where the command's first character sits when the text maps onto the file by a shift (a
  // literal block `|` or a one-line scalar without escapes): character C of line L of the
  // command is at line command.text.line + L, column command.text.column + C (0-based L, C).
  std::map<std::string, SourceLocation> locations;  // "engine", "defaults.tensor_parallel"
};

// OK when `text` is valid UTF-8 (RFC 3629: no overlong forms, surrogates or code points past
// U+10FFFF); else InvalidArgument "PATH:LINE:COL: the file is not valid UTF-8 (byte 0xFF); ...".
// Recipes travel in protobuf strings, which must be UTF-8, so every path checks this first.
absl::Status CheckUtf8(absl::string_view path, absl::string_view text);

// Parses `yaml` (the contents of `path`). Errors are InvalidArgument and start with
// "PATH:LINE:COL: ", then say what was expected and what was found: bad YAML, a wrong type,
// an unknown key (with the closest known key), a version-2 key in a version-1 file, an unknown
// engine, a bad size or duration.
//
// Example:
//   ASSIGN_OR_RETURN(Recipe recipe, ParseRecipe("recipes/ds4.yaml", contents));
absl::StatusOr<Recipe> ParseRecipe(absl::string_view path, absl::string_view yaml);

// Reads and parses a file; NotFound names the path.
absl::StatusOr<Recipe> LoadRecipe(const std::string& path);

// `defaults` with the overrides applied (an override of a key the recipe has neither in
// `defaults` nor in its command is an error naming the closest key).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> EffectiveValues(
    const Recipe& recipe, const std::vector<Override>& overrides);

// The command with every {key} replaced, Python str.format semantics: "{{" and "}}" are
// literal braces, "{key}" must name a value (a missing one is an error naming the command's
// line and column and the keys that exist). Format specs and positional fields are an error.
absl::StatusOr<std::string> RenderCommand(
    const Recipe& recipe, const std::vector<std::pair<std::string, std::string>>& values);

// Splits a rendered command into argv the way a POSIX shell splits words: backslash-newline
// joins lines, single and double quotes group, backslash escapes. Shell syntax that needs a
// shell (| ; & < > $( ` and unquoted $VAR) is an error naming it: SparkFleet runs the command
// without a shell.
absl::StatusOr<std::vector<std::string>> SplitCommand(absl::string_view command);

// The number of nodes one group of this recipe needs: `nodes` when set, else
// tensor_parallel × pipeline_parallel from `values` (1 each when absent). solo_only recipes
// need 1; cluster_only ones at least 2 (an error otherwise, naming the line).
absl::StatusOr<int> GroupSize(const Recipe& recipe,
                              const std::vector<std::pair<std::string, std::string>>& values);

// "PATH:LINE:COL: " of a key recorded in `recipe.locations`, or "PATH: " when unknown.
std::string Where(const Recipe& recipe, absl::string_view key);

}  // namespace fleet::engine
