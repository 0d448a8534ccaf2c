// A shard's output on disk: the file its process (or `docker logs --follow`) appends to,
// rotated by copytruncate once it passes a size cap, read by offset or by last lines, plus an
// in-memory tail of the latest output.
//
// The writer holds the file open with O_APPEND and never learns about rotation: the current
// file is copied to `.1` (older copies shift to `.2`, ...) and truncated in place. Offsets keep
// counting across rotations through `base`, the offset of the current file's first byte; a
// rotated file starts where the next newer one begins minus its own size. Bytes the writer
// appends between the copy and the truncation are lost (logrotate's copytruncate has the same
// window, microseconds wide); that is the price of an output that survives an agent restart.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/shards/supervisor.h"

namespace fleet::agent {

struct ShardLogOptions {
  std::string path;  // STATE_DIR/logs/GROUP/rRANK.log
  uint64_t max_bytes = 16 << 20;
  int files_kept = 2;  // rotated files besides the current one
};

class ShardLog {
 public:
  // The in-memory tail holds at least this much of the latest output.
  static constexpr size_t kTailBytes = 64 << 10;

  // `base`: the offset of the current file's first byte (0 for a new shard, the record's value
  // for a re-adopted one). The in-memory tail starts with the end of the current file.
  ShardLog(ShardLogOptions options, uint64_t base);

  // Before a new shard of this rank starts: moves an earlier shard's output aside (to `.1`),
  // so the new shard's offsets start at 0 and its reads never show the old output.
  static absl::Status StartFresh(const ShardLogOptions& options);

  // Reads what was appended since the last call into the tail and rotates the file when it is
  // past max_bytes. Returns true when the base changed (the shard's record must be rewritten).
  bool Poll();

  uint64_t base() const;
  // The latest output, at most about kTailBytes.
  std::string tail() const;

  // Bytes from `offset` on, at most `max_bytes` (0: no cap).
  absl::StatusOr<LogChunk> Read(uint64_t offset, size_t max_bytes);
  // The last `lines` lines (0: everything kept), at most the last `max_bytes` of them (0: no
  // cap).
  absl::StatusOr<LogChunk> Tail(int lines, size_t max_bytes);

 private:
  struct Segment {
    std::string path;
    uint64_t start = 0;
    uint64_t size = 0;
  };

  bool PollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AppendToTail(const std::string& bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Current file first, then rotated ones going back, only those of this shard.
  std::vector<Segment> SegmentsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ShardLogOptions options_;
  mutable absl::Mutex mu_;
  uint64_t base_ ABSL_GUARDED_BY(mu_);
  uint64_t read_pos_ ABSL_GUARDED_BY(mu_) = 0;  // in the current file: bytes already in tail_
  std::string tail_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
