// Content-addressed manifests of directories for staging: every regular file with its size,
// mode and the SHA-256 of each fixed-size chunk, plus one hash of the whole tree. A manifest is
// built once and cached per directory; a file's chunk hashes are reused while its (path, size,
// mtime) is unchanged, so a second scan of an unchanged 150 GB model reads no content.
//
// Chunks are 8 MiB: a 150 GB model has ~18k of them, so its manifest (~0.7 MB) fits one gRPC
// message; a chunk is the unit of re-sending and of resuming, and forwarding a whole chunk
// before passing it on costs each hop ~0.3 ms at 25 GB/s; per-chunk costs (a header, a hash
// look-up, a pwrite) are negligible against 8 MiB of copying and hashing.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fleet/v1/stage.pb.h"

namespace fleet::agent {

inline constexpr uint32_t kStageChunkBytes = 8u << 20;

// SHA-256 of `data`, 32 raw bytes.
std::string Sha256(absl::string_view data);

// Lowercase hex of raw bytes.
std::string HexOf(absl::string_view bytes);

// The tree hash documented at StageManifest.tree_sha256, from the manifest's files.
std::string TreeSha256(const v1::StageManifest& manifest);

// The cores the calling thread may run on (its affinity mask, so a cpuset or taskset counts,
// where std::thread::hardware_concurrency counts every core of the machine); at least 1.
uint32_t UsableCores();

// SHA-256 of each chunk of the first `size` bytes of the file at `path` (fewer when the file
// is shorter: a partial copy's chunks). NotFound when it does not exist; Cancelled once
// `cancelled` (when given, asked before each chunk is read) answers true.
absl::StatusOr<std::vector<std::string>> HashFileChunks(
    const std::string& path, uint64_t size, uint32_t chunk_bytes,
    const std::function<bool()>& cancelled = nullptr);

struct ManifestOptions {
  // Where manifests are cached (the agent's STATE_DIR/stage-cache); empty: no cache.
  std::string cache_dir;
  uint32_t chunk_bytes = kStageChunkBytes;
  // Asked before each chunk is read; true ends the scan Cancelled (`fleet stage cancel` while a
  // large tree is hashed for the first time). The files hashed whole by then are cached, so the
  // next scan starts where this one stopped.
  std::function<bool()> cancelled;
};

struct ScannedTree {
  v1::StageManifest manifest;
  bool from_cache = false;  // no file's content was read
};

// The manifest of directory `dir`. InvalidArgument for a relative path, NotFound when it is
// not a directory, Aborted when a file changes while it is read, Cancelled when
// `options.cancelled` says so.
//
// Example:
//   ASSIGN_OR_RETURN(ScannedTree tree, BuildManifest("/srv/models/ds4",
//                                                    {.cache_dir = state + "/stage-cache"}));
//   tree.manifest.tree_sha256();  // "5d1e..."
absl::StatusOr<ScannedTree> BuildManifest(const std::string& dir, const ManifestOptions& options);

// Chunk hashes that (path, size, mtime) still vouch for: the cached entry of `relative` in the
// cache of `dir` when the file at dir/relative has that size and mtime now.
class ManifestCache {
 public:
  // Loads the cache of `dir` (an absent or unreadable one is empty).
  ManifestCache(std::string cache_dir, std::string dir);
  // The cached chunk hashes of dir/relative if its size and mtime are the cached ones.
  const v1::StageFile* Lookup(const std::string& relative, uint64_t size, int64_t mtime_ns) const;
  // Records `file` (with its current mtime) for a later Lookup.
  void Put(v1::StageFile file);
  // Writes the cache back (atomically); a cache that cannot be written costs only a re-hash.
  absl::Status Save() const;

 private:
  const std::string cache_dir_;
  const std::string dir_;
  v1::StageManifest entries_;
};

// Checks what a receiver relies on: relative paths without "..", the right number of 32-byte
// chunk hashes for each size, the tree hash. InvalidArgument naming the first problem.
absl::Status ValidateManifest(const v1::StageManifest& manifest);

// Global chunk numbering: the chunks of files[0], then files[1], ...
struct ChunkRef {
  uint32_t file = 0;
  uint32_t chunk = 0;  // within the file
  uint64_t offset = 0;
  uint32_t length = 0;
};

class ChunkIndex {
 public:
  explicit ChunkIndex(const v1::StageManifest& manifest);
  uint32_t size() const { return static_cast<uint32_t>(refs_.size()); }
  const ChunkRef& at(uint32_t global) const { return refs_[global]; }
  uint32_t first_of(uint32_t file) const { return first_[file]; }

 private:
  std::vector<ChunkRef> refs_;
  std::vector<uint32_t> first_;
};

}  // namespace fleet::agent
