// What the agent writes down about each shard it started (ShardRecordPath), so a restarted
// agent can re-adopt it instead of starting a second copy.
//
// The file is text: `key value` lines, a `---` line, then the ShardSpec in protobuf text format.
//   pid 4242
//   start_ticks 981234
//   container fleet-ds4-g5-r0
//   log_base 16777216
//   started_at 2026-11-23T20:50:01.123456789+00:00
//   helper_pid 4250
//   helper_start_ticks 981240
//   ---
//   group: "ds4" generation: 5 rank: 0 ...
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleet/v1/shard.pb.h"

namespace fleet::agent {

struct ShardRecord {
  v1::ShardSpec spec;
  pid_t pid = 0;             // process runtime: the shard (leader of its process group)
  uint64_t start_ticks = 0;  // of `pid`, so a reused pid is never mistaken for the shard
  std::string container;     // docker runtime
  uint64_t log_base = 0;     // log offset of the current file's first byte (log_files.h)
  absl::Time started_at = absl::UnixEpoch();
  // Docker runtime: the `docker logs --follow` process feeding the log file. A new agent stops
  // it before starting its own, so an agent killed with SIGKILL does not leave two writers.
  pid_t helper_pid = 0;
  uint64_t helper_start_ticks = 0;
};

std::string SerializeShardRecord(const ShardRecord& record);
// InvalidArgument naming what is malformed.
absl::StatusOr<ShardRecord> ParseShardRecord(absl::string_view text);

// STATE_DIR/shards/GROUP.rRANK.gGENERATION.record (two generations of a rank coexist while
// the older one stops).
std::string ShardRecordPath(absl::string_view state_dir, const v1::ShardSpec& spec);

}  // namespace fleet::agent
