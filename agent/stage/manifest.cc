// Manifests: walking, chunk hashing with OpenSSL's SHA-256, and the per-directory cache.
#include "agent/stage/manifest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"

namespace fleet::agent {
namespace {

constexpr size_t kShaBytes = 32;

struct DigestDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// A partial copy's temporary name ends so; a scan never lists one.
constexpr absl::string_view kPartialSuffix = ".fleet-partial";

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

uint64_t ChunkCount(uint64_t size, uint32_t chunk_bytes) {
  return (size + chunk_bytes - 1) / chunk_bytes;
}

std::string CachePath(const std::string& cache_dir, const std::string& dir) {
  return absl::StrCat(cache_dir, "/tree-", HexOf(Sha256(dir)), ".pb");
}

}  // namespace

std::string Sha256(absl::string_view data) {
  unsigned char sum[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  // EVP_Digest fails only when OpenSSL cannot allocate: a broken invariant of the process.
  if (EVP_Digest(data.data(), data.size(), sum, &size, EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(sum), size);
}

std::string HexOf(absl::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * bytes.size());
  for (unsigned char c : bytes) {
    hex.push_back(kDigits[c >> 4]);
    hex.push_back(kDigits[c & 0xf]);
  }
  return hex;
}

std::string TreeSha256(const v1::StageManifest& manifest) {
  std::unique_ptr<EVP_MD_CTX, DigestDeleter> digest(EVP_MD_CTX_new());
  if (digest == nullptr || EVP_DigestInit_ex(digest.get(), EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
  const std::string nul(1, '\0');
  for (const v1::StageFile& file : manifest.files()) {
    std::string header = absl::StrCat(file.path(), nul, file.size(), nul, file.mode(), nul);
    EVP_DigestUpdate(digest.get(), header.data(), header.size());
    for (const std::string& chunk : file.chunk_sha256()) {
      EVP_DigestUpdate(digest.get(), chunk.data(), chunk.size());
    }
  }
  unsigned char sum[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(digest.get(), sum, &size);
  return HexOf(absl::string_view(reinterpret_cast<const char*>(sum), size));
}

uint32_t UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) {
    return std::max(1u, std::thread::hardware_concurrency());
  }
  return static_cast<uint32_t>(std::max(1, CPU_COUNT(&set)));
}

absl::StatusOr<std::vector<std::string>> HashFileChunks(const std::string& path, uint64_t size,
                                                        uint32_t chunk_bytes,
                                                        const std::function<bool()>& cancelled) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return ErrnoStatus(absl::StrCat("open ", path));
  }
  // Chunks are hashed on up to one thread per core (at most 16): a model seen for the first
  // time is read at the disk's rate rather than one core's SHA-256 rate.
  const uint64_t chunks = ChunkCount(size, chunk_bytes);
  std::vector<std::string> hashes(chunks);
  std::vector<uint8_t> whole(chunks, 0);
  const uint64_t threads = std::min<uint64_t>({UsableCores(), 16, chunks});
  std::vector<absl::Status> errors(threads);
  auto hash_every = [&](uint64_t first) {
    std::string buffer(chunk_bytes, '\0');
    for (uint64_t c = first; c < chunks; c += threads) {
      if (cancelled && cancelled()) {
        errors[first] = absl::CancelledError(absl::StrCat("hashing ", path, " was cancelled"));
        return;
      }
      const uint64_t offset = c * chunk_bytes;
      const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk_bytes, size - offset));
      absl::StatusOr<size_t> have = ReadAt(fd.get(), buffer.data(), want, offset, path);
      if (!have.ok()) {
        errors[first] = have.status();
        return;
      }
      if (*have < want) return;  // the file ends here: every later chunk is short too
      hashes[c] = Sha256(absl::string_view(buffer.data(), want));
      whole[c] = 1;
    }
  };
  std::vector<std::thread> workers;
  for (uint64_t t = 1; t < threads; ++t) workers.emplace_back(hash_every, t);
  if (threads > 0) hash_every(0);
  for (std::thread& w : workers) w.join();
  for (const absl::Status& st : errors) RETURN_IF_ERROR(st);
  // A short file (a partial copy) has hashes for its whole chunks only.
  const auto end = std::find(whole.begin(), whole.end(), 0);
  hashes.resize(static_cast<size_t>(end - whole.begin()));
  return hashes;
}

ManifestCache::ManifestCache(std::string cache_dir, std::string dir)
    : cache_dir_(std::move(cache_dir)), dir_(std::move(dir)) {
  if (cache_dir_.empty()) return;
  absl::StatusOr<std::string> bytes = ReadFileToString(CachePath(cache_dir_, dir_));
  if (!bytes.ok() || !entries_.ParseFromString(*bytes) || entries_.root() != dir_) {
    entries_.Clear();
  }
  entries_.set_root(dir_);
}

const v1::StageFile* ManifestCache::Lookup(const std::string& relative, uint64_t size,
                                           int64_t mtime_ns) const {
  for (const v1::StageFile& file : entries_.files()) {
    if (file.path() == relative) {
      return file.size() == size && file.mtime_ns() == mtime_ns ? &file : nullptr;
    }
  }
  return nullptr;
}

void ManifestCache::Put(v1::StageFile file) {
  for (v1::StageFile& old : *entries_.mutable_files()) {
    if (old.path() == file.path()) {
      old = std::move(file);
      return;
    }
  }
  *entries_.add_files() = std::move(file);
}

absl::Status ManifestCache::Save() const {
  if (cache_dir_.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(MakeDirectories(cache_dir_, 0700));
  return WriteFileAtomically(CachePath(cache_dir_, dir_), entries_.SerializeAsString(), 0600);
}

absl::StatusOr<ScannedTree> BuildManifest(const std::string& dir, const ManifestOptions& options) {
  if (dir.empty() || dir[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("the model path must be absolute; got `", dir, "`: pass e.g. /srv/models/x"));
  }
  struct stat top {};
  if (::stat(dir.c_str(), &top) != 0 || !S_ISDIR(top.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, " is not a directory on this node"));
  }
  namespace fs = std::filesystem;
  std::vector<std::string> relatives;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) continue;
    const std::string name = it->path().filename().string();
    if (!it->is_regular_file(ec) || absl::EndsWith(name, kPartialSuffix)) continue;
    relatives.push_back(it->path().lexically_relative(dir).string());
  }
  if (ec) return ErrnoStatus(absl::StrCat("read ", dir), ec.value());
  std::sort(relatives.begin(), relatives.end());

  ManifestCache cache(options.cache_dir, dir);
  ScannedTree tree;
  tree.from_cache = true;
  v1::StageManifest& manifest = tree.manifest;
  manifest.set_root(dir);
  manifest.set_chunk_bytes(options.chunk_bytes);
  uint64_t total = 0;
  for (const std::string& relative : relatives) {
    const std::string path = absl::StrCat(dir, "/", relative);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path));
    v1::StageFile file;
    file.set_path(relative);
    file.set_size(static_cast<uint64_t>(st.st_size));
    file.set_mode(st.st_mode & 07777);
    file.set_mtime_ns(MtimeNs(st));
    const v1::StageFile* cached = cache.Lookup(relative, file.size(), file.mtime_ns());
    if (cached != nullptr && options.chunk_bytes == manifest.chunk_bytes() &&
        static_cast<uint64_t>(cached->chunk_sha256_size()) ==
            ChunkCount(file.size(), options.chunk_bytes)) {
      *file.mutable_chunk_sha256() = cached->chunk_sha256();
    } else {
      tree.from_cache = false;
      absl::StatusOr<std::vector<std::string>> hashed =
          HashFileChunks(path, file.size(), options.chunk_bytes, options.cancelled);
      if (absl::IsCancelled(hashed.status())) {
        (void)cache.Save();  // what was hashed whole so far: the next scan skips it
        return absl::CancelledError(absl::StrCat("the scan of ", dir, " was cancelled"));
      }
      RETURN_IF_ERROR(hashed.status());
      std::vector<std::string> hashes = *std::move(hashed);
      struct stat after {};
      if (::stat(path.c_str(), &after) != 0 || after.st_size != st.st_size ||
          MtimeNs(after) != MtimeNs(st) ||
          hashes.size() != ChunkCount(file.size(), options.chunk_bytes)) {
        return absl::AbortedError(
            absl::StrCat(path, " changed while it was read; stage it again once it is written"));
      }
      for (std::string& h : hashes) file.add_chunk_sha256(std::move(h));
      cache.Put(file);
    }
    total += file.size();
    *manifest.add_files() = std::move(file);
  }
  manifest.set_total_bytes(total);
  manifest.set_tree_sha256(TreeSha256(manifest));
  // The manifest is right either way; a cache that cannot be written only costs a re-hash.
  if (!tree.from_cache) (void)cache.Save();
  return tree;
}

absl::Status ValidateManifest(const v1::StageManifest& manifest) {
  if (manifest.chunk_bytes() < 4096 || manifest.chunk_bytes() > (64u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest chunk size ", manifest.chunk_bytes(), " is not 4 KiB..64 MiB"));
  }
  uint64_t total = 0;
  for (const v1::StageFile& file : manifest.files()) {
    const std::string& p = file.path();
    if (p.empty() || p[0] == '/' || p == ".." || absl::StartsWith(p, "../") ||
        absl::StrContains(p, "/../") || absl::EndsWith(p, "/..")) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest path `", p, "` leaves the destination directory"));
    }
    if (static_cast<uint64_t>(file.chunk_sha256_size()) !=
        ChunkCount(file.size(), manifest.chunk_bytes())) {
      return absl::InvalidArgumentError(absl::StrCat("manifest file ", p, " of ", file.size(),
                                                     " bytes has ", file.chunk_sha256_size(),
                                                     " chunk hashes"));
    }
    for (const std::string& h : file.chunk_sha256()) {
      if (h.size() != kShaBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("manifest file ", p, " has a chunk hash of ", h.size(), " bytes, not 32"));
      }
    }
    total += file.size();
  }
  if (total != manifest.total_bytes() || TreeSha256(manifest) != manifest.tree_sha256()) {
    return absl::InvalidArgumentError(
        "the manifest's total size or tree hash does not match its files");
  }
  return absl::OkStatus();
}

ChunkIndex::ChunkIndex(const v1::StageManifest& manifest) {
  const uint32_t chunk_bytes = manifest.chunk_bytes();
  for (int f = 0; f < manifest.files_size(); ++f) {
    first_.push_back(static_cast<uint32_t>(refs_.size()));
    const v1::StageFile& file = manifest.files(f);
    for (int c = 0; c < file.chunk_sha256_size(); ++c) {
      const uint64_t offset = static_cast<uint64_t>(c) * chunk_bytes;
      refs_.push_back(
          {.file = static_cast<uint32_t>(f),
           .chunk = static_cast<uint32_t>(c),
           .offset = offset,
           .length = static_cast<uint32_t>(std::min<uint64_t>(chunk_bytes, file.size() - offset))});
    }
  }
}

}  // namespace fleet::agent
