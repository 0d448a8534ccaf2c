// StageEndpoints: the agent's side of `fleet stage model`. It scans a directory into a manifest,
// and runs the two ends of a chained transfer:
//
//   source --S streams--> node 1 --S streams--> node 2 --> ...
//
// A receiver (Prepare) compares its destination with the manifest, checks free disk, opens a
// data port that admits only the planned upstream address presenting the one-time token, and
// (when it is not the last hop) connects to the next hop's port. Each incoming stream is read
// by one thread that forwards every frame nodes further down need as it arrived (cut-through:
// the chain does not wait for any node's hashing or disk), then hands it to verifier threads (one
// per core, up to two per stream) that check the chunk's SHA-256 against the manifest and write
// the chunks this node lacks into the file's temporary name, starting their write-back at once.
// A chunk with a wrong hash is not written; every node checks each chunk itself, so one
// corrupted on the way is rejected by each node after that point and stays missing there, and
// the controller sends the missing chunks again in another round. The source sends each chunk
// with sendfile, from the page cache without a copy. Finish renames each complete
// file into place after fsync: a file under its final name is always complete.
//
// Data connection: the 32-byte token, then frames of  u32 chunk index, u32 length (both
// little-endian), the chunk's bytes  until the sender shuts its side down. Nothing on it is a
// command, and nothing read from it is trusted before its hash matched.
//
// Files are written under `prefix` + the requested destination (`fleet up` agents share one
// file system, so each writes under its own prefix); a partial copy is DIR/.NAME.fleet-partial.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fleet/v1/stage.pb.h"

namespace fleet::agent {

struct StageOptions {
  std::string node_name;  // in error messages
  // Prepended to every destination ("" writes at the path as asked).
  std::string prefix;
  std::string cache_dir;  // manifests (STATE_DIR/stage-cache)
  // Test hook (the agent's hidden --stage-test-corrupt-chunks N; only tests pass it): the first
  // N chunks this agent sends get one byte flipped on the wire, after hashing.
  int corrupt_chunks = 0;
  // Test hook (--stage-test-scan-chunk-ms N): a scan waits this long before each chunk it
  // hashes, as from a slow disk, so a test can cancel a scan in flight.
  absl::Duration scan_chunk_delay = absl::ZeroDuration();
};

class StageEndpoints {
 public:
  explicit StageEndpoints(StageOptions options);
  ~StageEndpoints();

  // Blocking: hashes what the cache cannot vouch for. Cancelled once `cancelled` answers true
  // (asked before each chunk; the caller's call was cancelled).
  absl::StatusOr<v1::StageScanResponse> Scan(const v1::StageScanRequest& request,
                                             std::function<bool()> cancelled);
  // Blocking while it hashes the destination's existing files. FailedPrecondition naming the
  // node and path when the disk lacks the space; a new Prepare for the same destination ends an
  // older transfer there.
  absl::StatusOr<v1::StagePrepareResponse> Prepare(const v1::StagePrepareRequest& request);
  // Blocking until every asked chunk is sent. Unavailable when the first hop is lost.
  absl::StatusOr<v1::StageSendResponse> Send(const v1::StageSendRequest& request);
  // NotFound for an unknown transfer. With wait, at most 10 minutes for the upstream to end.
  // With abort (`fleet stage cancel`): the data port and streams close, files not yet complete
  // stay under their temporary names with the chunks verified so far (the next run resumes from
  // them), and the transfer is forgotten.
  absl::StatusOr<v1::StageFinishResponse> Finish(const v1::StageFinishRequest& request);
  // Ends every transfer's streams (the agent is stopping): waiting calls return soon, partial
  // copies stay for the next run to resume.
  void Shutdown();

  class Transfer;

 private:
  const StageOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Transfer>> transfers_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> corrupt_left_;
};

}  // namespace fleet::agent
