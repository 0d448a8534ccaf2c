// Supervisor: the agent's engine shards. It starts ranks as child processes (own session and
// process group, rlimits set, output to size-capped rotated files) or as containers, sees them
// exit at once, stops them (SIGTERM to the group, a grace period, SIGKILL), fences
// generations (a start of generation G stops every shard of the group older than G), probes
// the head's readiness, and re-adopts the shards it finds recorded in its state directory
// when the agent restarts, so a rank never runs twice.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

struct SupervisorOptions {
  // Records of running shards (STATE_DIR/shards), their logs (STATE_DIR/logs) and cache
  // directories (STATE_DIR/cache) live here.
  std::string state_dir;
  std::string node_name;              // for messages: "no Docker engine on NODE"
  std::string docker = "docker";      // docker CLI, looked up in PATH
  std::string home;                   // the agent's $HOME, for docker mounts under "~"
  uint64_t log_max_bytes = 16 << 20;  // per file; the current file rotates to .1 when full
  int log_files_kept = 2;             // rotated files kept besides the current one
};

// A piece of a shard's output. Offsets count every byte the shard ever wrote (rotation does
// not reset them), so `fleet logs -f` can ask for "what came after N".
struct LogChunk {
  std::string data;
  uint64_t start_offset = 0;  // offset of data[0]
  uint64_t next_offset = 0;   // ask for this next time
  bool truncated = false;     // bytes before start_offset were asked for but are rotated away
};

// How a shard reaches the controller: fleet-engine's ranks meet in its rendezvous store. The
// agent passes the address its own session uses and the cluster CA certificate it holds.
struct ControllerAccess {
  std::string address;  // "HOST:PORT"; empty: nothing is added
  std::string ca_path;  // absolute path of the cluster CA certificate (PEM)
};

inline constexpr char kControllerAddrEnv[] = "FLEET_CONTROLLER_ADDR";
inline constexpr char kControllerCaEnv[] = "FLEET_CONTROLLER_CA";

// `spec` with FLEET_CONTROLLER_ADDR and FLEET_CONTROLLER_CA appended to its environment (last,
// so they win over a recipe's) and, for the docker runtime, the CA file bind-mounted read-only
// at the same path, so the variable names a file inside the container too. Neither is secret.
// Example:
//   supervisor->Start(WithControllerAccess(order.spec(), {"10.0.0.1:7100", "/x/pki/ca.crt"}));
v1::ShardSpec WithControllerAccess(v1::ShardSpec spec, const ControllerAccess& access);

class Supervisor {
 public:
  // Re-adopts every recorded shard that still runs (same pid and start time, or a container
  // with our labels) and forgets the ones that are gone. Fails only when the state directory
  // cannot be used.
  static absl::StatusOr<std::unique_ptr<Supervisor>> Create(SupervisorOptions options);
  // Leaves shards running: they outlive the agent and are re-adopted by the next one.
  virtual ~Supervisor() = default;

  // Starts one rank and returns at once (state STARTING; a rank with `wait_for_tcp` starts
  // its process only once that address accepts). Idempotent: the same group, generation and
  // rank already present returns its status. Stops every shard of the group with an older
  // generation first. Aborted when the group already runs a newer generation; InvalidArgument
  // for a malformed spec; FailedPrecondition (with the fix) when the node cannot run it.
  virtual absl::StatusOr<v1::ShardStatus> Start(const v1::ShardSpec& spec) = 0;

  // Stops every shard of `group` whose generation is at most `up_to_generation` (0: all),
  // and returns once each is gone, with their final statuses.
  virtual absl::StatusOr<std::vector<v1::ShardStatus>> Stop(absl::string_view group,
                                                            uint64_t up_to_generation) = 0;

  // Every shard this agent holds, running or ended (ended ones are kept until stopped or
  // replaced by a newer generation, so their exit can be reported).
  virtual std::vector<v1::ShardStatus> List() = 0;

  // Output of one rank of `group` (its current generation). With `offset`, the bytes from
  // there on (at most `max_bytes`); without, the last `tail_lines` lines (0: everything kept).
  virtual absl::StatusOr<LogChunk> ReadLog(absl::string_view group, uint32_t rank,
                                           std::optional<uint64_t> offset, int tail_lines,
                                           size_t max_bytes) = 0;

  // Called, from a supervisor thread, after any shard changes state, so the agent can report
  // at once instead of at its next heartbeat. Set before the first Start.
  virtual void SetOnChange(absl::AnyInvocable<void()> on_change) = 0;
};

}  // namespace fleet::agent
