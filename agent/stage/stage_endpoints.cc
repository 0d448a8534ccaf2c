// The staging transfer: scanning, receiving with verification and forwarding, sending, and the
// rename into place.
#include "agent/stage/stage_endpoints.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "agent/stage/manifest.h"
#include "common/data_socket.h"
#include "common/files.h"
#include "common/host_port.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"

namespace fleet::agent {
namespace {

constexpr size_t kFrameHeader = 8;
// O_DIRECT writes need the buffer, the file offset and the length aligned to the file system's
// block: 4 KiB covers every block size of the disks agents write to.
constexpr size_t kDirectAlign = 4096;
// A data connection that moves nothing for this long is lost (a peer killed, a cable pulled).
constexpr absl::Duration kIdleTimeout = absl::Seconds(30);
// The upstream connects within this after Prepare answered.
constexpr absl::Duration kConnectTimeout = absl::Seconds(30);
constexpr absl::Duration kFinishWait = absl::Minutes(10);

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string PartialPath(const std::string& final_path) {
  std::filesystem::path p(final_path);
  return (p.parent_path() / absl::StrCat(".", p.filename().string(), ".fleet-partial")).string();
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The free bytes of the file system that will hold `path` (its nearest existing ancestor).
absl::StatusOr<uint64_t> FreeBytes(std::string path) {
  struct statvfs vfs {};
  while (::statvfs(path.c_str(), &vfs) != 0) {
    if (errno != ENOENT || path == "/" || path.empty()) return ErrnoStatus("statvfs " + path);
    path = std::filesystem::path(path).parent_path().string();
  }
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

absl::Status WriteAllAt(int fd, const char* data, size_t size, uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("write");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The test hook's path: the chunk read into memory and sent with its first byte flipped.
// OutOfRange when the file is shorter than the manifest says.
absl::Status SendCorrupted(int socket, int file, const ChunkRef& ref) {
  std::string bytes(ref.length, '\0');
  ASSIGN_OR_RETURN(size_t have, ReadAt(file, bytes.data(), ref.length, ref.offset, "the chunk"));
  if (have < ref.length) return absl::OutOfRangeError("the file ended early");
  if (!bytes.empty()) bytes[0] = static_cast<char>(bytes[0] ^ 0x01);
  return SendAll(socket, bytes.data(), bytes.size());
}

absl::Status FsyncDirectory(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open " + dir);
  RETURN_IF_ERRNO(::fsync(fd.get()), "fsync " + dir);
  return absl::OkStatus();
}

}  // namespace

// One receiving end: its files, its streams and their threads. Shared between the endpoints'
// map and the calls that use it, so a replaced transfer lives until its last call returns.
class StageEndpoints::Transfer {
 public:
  Transfer(const StageOptions& options, v1::StageManifest manifest, std::string real_dest)
      : options_(options),
        manifest_(std::move(manifest)),
        index_(manifest_),
        real_dest_(std::move(real_dest)),
        have_(index_.size()),
        forward_(index_.size(), 0),
        files_(manifest_.files_size()) {}

  ~Transfer() {
    Stop();
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& t : receivers_) t.join();
    for (std::thread& t : verifiers_) t.join();
    if (reserver_.joinable()) reserver_.join();
  }

  const std::string& real_dest() const { return real_dest_; }

  // Wakes every thread of this transfer: the data port and the incoming streams are shut down.
  void Stop() {
    stop_.store(true);
    // Waiters on the queue see stop_ when its lock is next released.
    { absl::MutexLock queue_lock(&queue_mu_); }
    absl::MutexLock lock(&mu_);
    if (listening_ >= 0) ::shutdown(listening_, SHUT_RDWR);
    for (UniqueFd& fd : incoming_) {
      if (fd.valid()) ::shutdown(fd.get(), SHUT_RDWR);
    }
  }

  // What is already here, the free-disk check, the temporary files, the forward connections and
  // the data port.
  absl::StatusOr<v1::StagePrepareResponse> Prepare(const v1::StagePrepareRequest& request) {
    ManifestCache cache(options_.cache_dir, real_dest_);
    uint64_t bytes_needed = 0;
    v1::StagePrepareResponse response;
    for (int f = 0; f < manifest_.files_size(); ++f) {
      const v1::StageFile& file = manifest_.files(f);
      FileState& state = files_[f];
      state.final_path = absl::StrCat(real_dest_, "/", file.path());
      state.partial_path = PartialPath(state.final_path);
      const uint32_t first = index_.first_of(f);
      struct stat st {};
      if (::stat(state.final_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        std::vector<std::string> hashes;
        const v1::StageFile* cached = cache.Lookup(file.path(), st.st_size, MtimeNs(st));
        if (cached != nullptr) {
          hashes.assign(cached->chunk_sha256().begin(), cached->chunk_sha256().end());
        } else {
          ASSIGN_OR_RETURN(hashes,
                           HashFileChunks(state.final_path, static_cast<uint64_t>(st.st_size),
                                          manifest_.chunk_bytes()));
        }
        const bool same = static_cast<uint64_t>(st.st_size) == file.size() &&
                          std::equal(hashes.begin(), hashes.end(), file.chunk_sha256().begin(),
                                     file.chunk_sha256().end());
        if (same) {
          state.complete = true;
          for (int c = 0; c < file.chunk_sha256_size(); ++c) have_[first + c] = 1;
          if (cached == nullptr) {
            v1::StageFile entry = file;
            entry.set_mtime_ns(MtimeNs(st));
            cache.Put(std::move(entry));
          }
          continue;
        }
        // An older version: its matching chunks seed the partial copy (a rename, no extra
        // disk), so the final name never holds a mix of two versions.
        if (::access(state.partial_path.c_str(), F_OK) != 0 &&
            ::rename(state.final_path.c_str(), state.partial_path.c_str()) != 0) {
          return ErrnoStatus(
              absl::StrCat("node ", options_.node_name, ": rename ", state.final_path));
        }
      }
      if (::stat(state.partial_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        ASSIGN_OR_RETURN(
            std::vector<std::string> hashes,
            HashFileChunks(state.partial_path, std::min<uint64_t>(st.st_size, file.size()),
                           manifest_.chunk_bytes()));
        for (size_t c = 0; c < hashes.size(); ++c) {
          if (hashes[c] == file.chunk_sha256(static_cast<int>(c))) have_[first + c] = 1;
        }
      }
      for (int c = 0; c < file.chunk_sha256_size(); ++c) {
        if (!have_[first + c]) {
          response.add_needed(first + c);
          missing_.fetch_add(1);
          bytes_needed += index_.at(first + c).length;
        }
      }
    }
    (void)cache.Save();
    // Free disk before the first byte: what the missing chunks take.
    ASSIGN_OR_RETURN(uint64_t free_bytes, FreeBytes(real_dest_));
    if (free_bytes < bytes_needed) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", options_.node_name, ": ", real_dest_, " has ", free_bytes,
                       " bytes free but the copy needs ", bytes_needed,
                       " more; free space there or pass --dest on a larger disk"));
    }
    for (int f = 0; f < manifest_.files_size(); ++f) {
      FileState& state = files_[f];
      if (state.complete) continue;
      RETURN_IF_ERROR(
          MakeDirectories(std::filesystem::path(state.final_path).parent_path().string(), 0755));
      state.fd = UniqueFd(::open(state.partial_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!state.fd.valid()) {
        return ErrnoStatus(
            absl::StrCat("node ", options_.node_name, ": open ", state.partial_path));
      }
      RETURN_IF_ERRNO(::ftruncate(state.fd.get(), static_cast<off_t>(manifest_.files(f).size())),
                      "truncate " + state.partial_path);
      // A file system without O_DIRECT (EINVAL) gets every chunk through the page cache.
      state.direct = UniqueFd(::open(state.partial_path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
    }
    // The blocks are reserved while the chain is planned and the first chunks travel (on a
    // tmpfs this zeroes every page: seconds for a large model, which one after another would
    // add up along the chain). Chunks are written only after it.
    reserver_ = std::thread([this] { Reserve(); });
    streams_ = request.streams();
    incoming_.resize(streams_);
    outgoing_.resize(streams_);
    StartVerifiers();
    if (request.has_forward()) {
      for (uint32_t g : request.forward().chunks()) {
        if (g >= index_.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("forward chunk ", g, " of ", index_.size()));
        }
        forward_[g] = 1;
      }
      ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(request.forward().target()));
      ASSIGN_OR_RETURN(sockaddr_in next, Ipv4Address(hp.host, hp.port, "next hop"));
      for (uint32_t i = 0; i < streams_; ++i) {
        absl::StatusOr<UniqueFd> fd = ConnectWithToken(request.forward().source_ip(), next,
                                                       request.forward().token(), kIdleTimeout);
        if (!fd.ok()) {
          return absl::UnavailableError(
              absl::StrCat("node ", options_.node_name, ": cannot reach the next hop ",
                           request.forward().target(), ": ", fd.status().message()));
        }
        outgoing_[i] = *std::move(fd);
      }
    }
    ASSIGN_OR_RETURN(DataListener listener, ListenForData(request.bind_ip()));
    listener_ = std::move(listener.fd);
    {
      absl::MutexLock lock(&mu_);
      listening_ = listener_.get();
    }
    response.set_port(listener.port);
    response.set_real_dest(real_dest_);
    response.set_bytes_needed(bytes_needed);
    acceptor_ = std::thread(
        [this, peer = request.peer_ip(), token = request.token()] { Accept(peer, token); });
    return response;
  }

  v1::StageFinishResponse Progress() {
    absl::MutexLock lock(&mu_);
    return ProgressLocked();
  }

  // Waits for every stream to end, then renames each complete file into place.
  v1::StageFinishResponse Finish() {
    {
      absl::MutexLock lock(&mu_);
      auto ended = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return ended_ == streams_; };
      if (!mu_.AwaitWithTimeout(absl::Condition(&ended), kFinishWait) && error_.empty()) {
        error_ = absl::StrCat("node ", options_.node_name, ": the upstream did not finish in ",
                              absl::FormatDuration(kFinishWait));
      }
    }
    // No file is committed while its blocks are still being reserved.
    reserved_.WaitForNotification();
    ManifestCache cache(options_.cache_dir, real_dest_);
    std::set<std::string> dirs;
    for (int f = 0; f < manifest_.files_size(); ++f) {
      FileState& state = files_[f];
      const v1::StageFile& file = manifest_.files(f);
      if (state.complete) continue;
      const uint32_t first = index_.first_of(f);
      bool whole = true;
      for (int c = 0; c < file.chunk_sha256_size(); ++c) whole = whole && have_[first + c];
      if (!whole) continue;
      if (absl::Status st = Commit(state, file, cache); !st.ok()) {
        absl::MutexLock lock(&mu_);
        if (error_.empty()) error_ = std::string(st.message());
        continue;
      }
      dirs.insert(std::filesystem::path(state.final_path).parent_path().string());
      ++files_completed_;
    }
    for (const std::string& dir : dirs) (void)FsyncDirectory(dir);
    (void)cache.Save();
    absl::MutexLock lock(&mu_);
    v1::StageFinishResponse response = ProgressLocked();
    response.set_done(true);
    return response;
  }

 private:
  struct FileState {
    std::string final_path;
    std::string partial_path;
    UniqueFd fd;  // the partial copy, while chunks are missing
    // The same file opened O_DIRECT where its file system allows: whole chunks are written
    // past the page cache, so a 150 GB model does not fill a Spark's memory (which its GPU
    // shares) with cached pages, and no core copies each byte into them.
    UniqueFd direct;
    bool complete = false;  // already whole under its final name
  };

  // Mode, fsync, rename, and the cache entry that spares hashing it again.
  absl::Status Commit(FileState& state, const v1::StageFile& file, ManifestCache& cache) {
    const std::string where = absl::StrCat("node ", options_.node_name, ": ");
    if (!state.fd.valid()) {
      state.fd = UniqueFd(
          ::open(state.partial_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!state.fd.valid()) return ErrnoStatus(where + "create " + state.partial_path);
    }
    RETURN_IF_ERRNO(::fchmod(state.fd.get(), file.mode()), where + "chmod " + state.partial_path);
    if (::fsync(state.fd.get()) != 0) {
      return ErrnoStatus(absl::StrCat(where, "fsync ", state.partial_path,
                                      " (a full disk? the partial copy stays for a re-run)"));
    }
    struct stat st {};
    RETURN_IF_ERRNO(::fstat(state.fd.get(), &st), where + "stat " + state.partial_path);
    state.direct.reset();
    state.fd.reset();
    RETURN_IF_ERRNO(::rename(state.partial_path.c_str(), state.final_path.c_str()),
                    where + "rename into " + state.final_path);
    v1::StageFile entry = file;
    entry.set_mtime_ns(MtimeNs(st));
    cache.Put(std::move(entry));
    return absl::OkStatus();
  }

  v1::StageFinishResponse ProgressLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::StageFinishResponse response;
    response.set_bytes_received(received_.load());
    response.set_bytes_written(written_.load());
    response.set_chunks_rejected(rejected_.load());
    response.set_chunks_missing(missing_.load());
    response.set_files_completed(files_completed_.load());
    response.set_error(error_);
    return response;
  }

  void Fail(std::string message) {
    absl::MutexLock lock(&mu_);
    if (error_.empty()) error_ = std::move(message);
  }

  void Accept(const std::string& peer, const std::string& token) {
    const absl::Time deadline = absl::Now() + kConnectTimeout;
    int refused = 0;
    for (uint32_t i = 0; i < streams_; ++i) {
      absl::StatusOr<UniqueFd> fd =
          AcceptWithToken(listener_.get(), peer, token, deadline - absl::Now(), &refused);
      if (!fd.ok()) {
        absl::MutexLock lock(&mu_);
        if (error_.empty() && !stop_.load()) {
          error_ = absl::StrCat("node ", options_.node_name, ": the upstream ", peer,
                                " did not connect: ", fd.status().message());
        }
        ended_ += streams_ - i;
        return;
      }
      (void)SetSocketTimeouts(fd->get(), kIdleTimeout);
      {
        absl::MutexLock lock(&mu_);
        incoming_[i] = *std::move(fd);
      }
      receivers_.emplace_back([this, i] { Receive(i); });
    }
    absl::MutexLock lock(&mu_);
    listening_ = -1;
    listener_.reset();
  }

  // One verifier per core up to two per stream, and the frame buffers: one being received and
  // one queued per stream, one per verifier. A stream whose frames wait for verifiers stops
  // reading, which slows its sender down.
  void StartVerifiers() {
    const uint32_t verifiers = std::clamp<uint32_t>(UsableCores(), 1, 2 * streams_);
    {
      absl::MutexLock lock(&queue_mu_);
      pending_.assign(streams_, 0);
      for (uint32_t i = 0; i < 2 * streams_ + verifiers; ++i) {
        // Not filled: a buffer's pages are touched only once a frame arrives in it. The frame
        // starts kFrameHeader bytes before an aligned address, so its chunk can be written
        // O_DIRECT.
        buffers_.push_back(std::unique_ptr<char, FreeDeleter>(static_cast<char*>(
            std::aligned_alloc(kDirectAlign, kDirectAlign + AlignUp(manifest_.chunk_bytes())))));
        free_.push_back(buffers_.back().get() + kDirectAlign - kFrameHeader);
      }
    }
    for (uint32_t i = 0; i < verifiers; ++i) verifiers_.emplace_back([this] { Verify(); });
  }

  // posix_fallocate of every file still to be written, so a disk that fills up meanwhile is
  // one clear error rather than a failure in the middle of a chunk; on failure nothing is
  // written (the chunks stay missing) and Finish reports it.
  void Reserve() {
    for (int f = 0; f < manifest_.files_size(); ++f) {
      const uint64_t size = manifest_.files(f).size();
      const FileState& state = files_[f];
      if (size == 0 || !state.fd.valid()) continue;
      if (int err = ::posix_fallocate(state.fd.get(), 0, static_cast<off_t>(size)); err != 0) {
        Fail(absl::StrCat("node ", options_.node_name, ": cannot reserve ", size, " bytes for ",
                          state.partial_path, ": ", std::strerror(err),
                          "; free space there or pass --dest on a larger disk"));
        reserve_failed_.store(true);
        break;
      }
    }
    reserved_.Notify();
  }

  // A frame buffer the pool lends, until a verifier gives it back.
  char* TakeBuffer() {
    absl::MutexLock lock(&queue_mu_);
    auto free = [this]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
      return !free_.empty() || stop_.load();
    };
    queue_mu_.Await(absl::Condition(&free));
    if (stop_.load()) return nullptr;
    char* buffer = free_.back();
    free_.pop_back();
    return buffer;
  }

  // One incoming stream: each frame is forwarded as it came when nodes further down need its
  // chunk (each of them checks it for itself), then handed to the verifiers, so the chain does
  // not wait for this node's hashing or disk.
  void Receive(uint32_t stream) {
    const int in = incoming_[stream].get();
    UniqueFd& out = outgoing_[stream];
    while (!stop_.load()) {
      char* frame = TakeBuffer();
      if (frame == nullptr) break;
      absl::Status st = ReceiveFrame(in, frame);
      if (st.ok() && out.valid() && forward_[GetU32(frame)]) {
        const size_t size = kFrameHeader + GetU32(frame + 4);
        if (absl::Status s = SendAll(out.get(), frame, size); !s.ok()) {
          Fail(absl::StrCat("node ", options_.node_name,
                            ": forwarding to the next hop: ", s.message()));
          out.reset();
        }
      }
      absl::MutexLock lock(&queue_mu_);
      if (!st.ok()) {
        free_.push_back(frame);
        if (!absl::IsOutOfRange(st)) Fail(std::string(st.message()));
        break;
      }
      work_.push_back({stream, frame});
      ++pending_[stream];
    }
    // The next hop sees the end of this stream; the stream counts as ended once its chunks
    // are verified and written.
    out.reset();
    {
      absl::MutexLock lock(&queue_mu_);
      auto drained = [this, stream]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
        return pending_[stream] == 0 || stop_.load();
      };
      queue_mu_.Await(absl::Condition(&drained));
    }
    absl::MutexLock lock(&mu_);
    ++ended_;
  }

  // A frame's header and bytes, checked against the manifest's chunk lengths. OutOfRange at
  // the stream's clean end.
  absl::Status ReceiveFrame(int in, char* frame) {
    absl::Status st = RecvAll(in, frame, kFrameHeader);
    if (absl::IsOutOfRange(st)) return st;
    if (!st.ok()) {
      return absl::UnavailableError(absl::StrCat("node ", options_.node_name, ": ", st.message()));
    }
    const uint32_t g = GetU32(frame);
    const uint32_t length = GetU32(frame + 4);
    if (g >= index_.size() || length != index_.at(g).length) {
      return absl::InvalidArgumentError(absl::StrCat("node ", options_.node_name,
                                                     ": a frame for chunk ", g, " of ", length,
                                                     " bytes does not fit the manifest"));
    }
    if (absl::Status data = RecvAll(in, frame + kFrameHeader, length); !data.ok()) {
      return absl::UnavailableError(
          absl::StrCat("node ", options_.node_name, ": ", data.message()));
    }
    return absl::OkStatus();
  }

  // A verifier: checks each received chunk's SHA-256 against the manifest and writes the chunks
  // this node lacks; several run at once, so hashing is not bound to one core per stream.
  void Verify() {
    while (true) {
      Work work;
      {
        absl::MutexLock lock(&queue_mu_);
        auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(queue_mu_) {
          return !work_.empty() || stop_.load();
        };
        queue_mu_.Await(absl::Condition(&ready));
        if (stop_.load()) return;
        work = work_.front();
        work_.pop_front();
      }
      VerifyAndWrite(work.frame);
      absl::MutexLock lock(&queue_mu_);
      free_.push_back(work.frame);
      --pending_[work.stream];
    }
  }

  // A whole aligned chunk goes O_DIRECT where the file allows it (a file system that refuses
  // this one write with EINVAL gets it through the page cache); the rest through the page
  // cache, its write-back started at once rather than at the final fsync, so the disk works
  // while the network does (an error shows at that fsync).
  static absl::Status WriteChunk(const FileState& state, const char* data, size_t length,
                                 uint64_t offset) {
    if (state.direct.valid() && length % kDirectAlign == 0 && offset % kDirectAlign == 0 &&
        reinterpret_cast<uintptr_t>(data) % kDirectAlign == 0) {
      absl::Status direct = WriteAllAt(state.direct.get(), data, length, offset);
      if (direct.ok() || !absl::IsInvalidArgument(direct)) return direct;
    }
    RETURN_IF_ERROR(WriteAllAt(state.fd.get(), data, length, offset));
    (void)::sync_file_range(state.fd.get(), static_cast<off_t>(offset), length,
                            SYNC_FILE_RANGE_WRITE);
    return absl::OkStatus();
  }

  void VerifyAndWrite(const char* frame) {
    const uint32_t g = GetU32(frame);
    const ChunkRef& ref = index_.at(g);
    const absl::string_view bytes(frame + kFrameHeader, ref.length);
    if (Sha256(bytes) != manifest_.files(ref.file).chunk_sha256(ref.chunk)) {
      rejected_.fetch_add(1);
      return;
    }
    received_.fetch_add(ref.length);
    FileState& state = files_[ref.file];
    if (have_[g] || !state.fd.valid()) return;
    reserved_.WaitForNotification();
    if (reserve_failed_.load()) return;
    if (absl::Status w = WriteChunk(state, bytes.data(), ref.length, ref.offset); !w.ok()) {
      Fail(absl::StrCat("node ", options_.node_name, ": writing ", state.partial_path, ": ",
                        w.message(),
                        "; nothing under a final name is half-written, free space "
                        "and stage again to resume"));
      return;
    }
    // A chunk sent twice is counted once.
    if (have_[g].exchange(1) == 0) {
      missing_.fetch_sub(1);
      written_.fetch_add(ref.length);
    }
  }

  const StageOptions& options_;
  const v1::StageManifest manifest_;
  const ChunkIndex index_;
  const std::string real_dest_;
  // Per chunk: 1 once verified and written here (verifiers work on several chunks at once).
  std::vector<std::atomic<uint8_t>> have_;
  std::vector<uint8_t> forward_;
  std::vector<FileState> files_;
  uint32_t streams_ = 0;
  std::vector<UniqueFd> outgoing_;
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint32_t> rejected_{0};
  std::atomic<uint32_t> missing_{0};
  std::atomic<uint32_t> files_completed_{0};

  absl::Mutex mu_;
  std::vector<UniqueFd> incoming_ ABSL_GUARDED_BY(mu_);
  int listening_ ABSL_GUARDED_BY(mu_) = -1;  // listener_ while the acceptor uses it
  uint32_t ended_ ABSL_GUARDED_BY(mu_) = 0;
  std::string error_ ABSL_GUARDED_BY(mu_);

  // Received frames waiting for a verifier, and the buffers they travel in.
  struct Work {
    uint32_t stream = 0;
    char* frame = nullptr;
  };
  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  static size_t AlignUp(size_t n) { return (n + kDirectAlign - 1) / kDirectAlign * kDirectAlign; }
  std::vector<std::unique_ptr<char, FreeDeleter>> buffers_;
  absl::Mutex queue_mu_;
  std::vector<char*> free_ ABSL_GUARDED_BY(queue_mu_);
  std::deque<Work> work_ ABSL_GUARDED_BY(queue_mu_);
  std::vector<uint32_t> pending_ ABSL_GUARDED_BY(queue_mu_);  // per stream, not yet verified

  std::thread acceptor_;
  std::vector<std::thread> receivers_;  // written by the acceptor only, joined after it
  std::vector<std::thread> verifiers_;
  std::thread reserver_;
  absl::Notification reserved_;
  std::atomic<bool> reserve_failed_{false};
};

StageEndpoints::StageEndpoints(StageOptions options)
    : options_(std::move(options)), corrupt_left_(options_.corrupt_chunks) {}

StageEndpoints::~StageEndpoints() = default;

absl::StatusOr<v1::StageScanResponse> StageEndpoints::Scan(const v1::StageScanRequest& request,
                                                           std::function<bool()> cancelled) {
  if (options_.scan_chunk_delay > absl::ZeroDuration()) {
    cancelled = [delay = options_.scan_chunk_delay, asked = std::move(cancelled)] {
      absl::SleepFor(delay);
      return asked();
    };
  }
  ASSIGN_OR_RETURN(ScannedTree tree,
                   BuildManifest(request.path(), {.cache_dir = options_.cache_dir,
                                                  .cancelled = std::move(cancelled)}));
  v1::StageScanResponse response;
  *response.mutable_manifest() = std::move(tree.manifest);
  response.set_from_cache(tree.from_cache);
  return response;
}

absl::StatusOr<v1::StagePrepareResponse> StageEndpoints::Prepare(
    const v1::StagePrepareRequest& request) {
  RETURN_IF_ERROR(ValidateManifest(request.manifest()));
  if (request.dest().empty() || request.dest()[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("the destination must be absolute; got `", request.dest(), "`"));
  }
  if (request.token().size() != kDataTokenBytes || request.streams() < 1 ||
      request.streams() > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("a transfer needs a 32-byte token and 1..16 streams; got ",
                     request.token().size(), " bytes and ", request.streams(), " streams"));
  }
  std::string dest = request.dest();
  while (dest.size() > 1 && dest.back() == '/') dest.pop_back();
  std::string prefix = options_.prefix;
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  const std::string real_dest = prefix + dest;
  std::shared_ptr<Transfer> replaced;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = transfers_.begin(); it != transfers_.end(); ++it) {
      if (it->second->real_dest() == real_dest || it->first == request.transfer_id()) {
        replaced = std::move(it->second);
        transfers_.erase(it);
        break;
      }
    }
  }
  // The older transfer's threads stop before this one touches the same files.
  replaced.reset();
  auto transfer = std::make_shared<Transfer>(options_, request.manifest(), real_dest);
  ASSIGN_OR_RETURN(v1::StagePrepareResponse response, transfer->Prepare(request));
  absl::MutexLock lock(&mu_);
  transfers_[request.transfer_id()] = std::move(transfer);
  return response;
}

absl::StatusOr<v1::StageSendResponse> StageEndpoints::Send(const v1::StageSendRequest& request) {
  RETURN_IF_ERROR(ValidateManifest(request.manifest()));
  const v1::StageManifest& manifest = request.manifest();
  const ChunkIndex index(manifest);
  const uint32_t streams = request.streams();
  if (streams < 1 || streams > 16) {
    return absl::InvalidArgumentError(absl::StrCat("streams must be 1..16; got ", streams));
  }
  for (uint32_t g : request.chunks()) {
    if (g >= index.size()) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", g, " of ", index.size()));
    }
  }
  std::vector<UniqueFd> files(manifest.files_size());
  for (uint32_t g : request.chunks()) {
    const uint32_t f = index.at(g).file;
    if (files[f].valid()) continue;
    const std::string path = absl::StrCat(manifest.root(), "/", manifest.files(f).path());
    files[f] = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!files[f].valid())
      return ErrnoStatus(absl::StrCat("node ", options_.node_name, ": open ", path));
  }
  ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(request.target()));
  ASSIGN_OR_RETURN(sockaddr_in target, Ipv4Address(hp.host, hp.port, "first hop"));
  std::vector<UniqueFd> conns;
  for (uint32_t i = 0; i < streams; ++i) {
    absl::StatusOr<UniqueFd> fd =
        ConnectWithToken(request.source_ip(), target, request.token(), kIdleTimeout);
    if (!fd.ok()) {
      return absl::UnavailableError(absl::StrCat("node ", options_.node_name,
                                                 ": cannot reach the first hop ", request.target(),
                                                 ": ", fd.status().message()));
    }
    conns.push_back(*std::move(fd));
  }
  const auto start = std::chrono::steady_clock::now();
  std::atomic<uint64_t> sent{0};
  std::vector<absl::Status> results(streams);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      std::string frame(kFrameHeader, '\0');
      for (int k = static_cast<int>(i); k < request.chunks_size(); k += streams) {
        const uint32_t g = request.chunks(k);
        const ChunkRef& ref = index.at(g);
        const int file = files[ref.file].get();
        PutU32(frame.data(), g);
        PutU32(frame.data() + 4, ref.length);
        absl::Status st = SendAll(conns[i].get(), frame.data(), kFrameHeader);
        if (st.ok() && corrupt_left_.load() > 0 && corrupt_left_.fetch_sub(1) > 0) {
          st = SendCorrupted(conns[i].get(), file, ref);
        } else if (st.ok()) {
          // The chunk goes from the page cache to the socket without a copy through here.
          st = SendFileRange(conns[i].get(), file, ref.offset, ref.length);
        }
        if (absl::IsOutOfRange(st)) {
          results[i] = absl::DataLossError(
              absl::StrCat("node ", options_.node_name, ": ", manifest.files(ref.file).path(),
                           " is shorter than its manifest says; did it change? stage it again"));
          return;
        }
        if (!st.ok()) {
          results[i] = absl::UnavailableError(absl::StrCat(
              "node ", options_.node_name, ": sending to ", request.target(), ": ", st.message()));
          return;
        }
        sent.fetch_add(ref.length);
      }
      ::shutdown(conns[i].get(), SHUT_WR);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& st : results) RETURN_IF_ERROR(st);
  v1::StageSendResponse response;
  response.set_bytes_sent(sent.load());
  response.set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return response;
}

void StageEndpoints::Shutdown() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, transfer] : transfers_) transfer->Stop();
}

absl::StatusOr<v1::StageFinishResponse> StageEndpoints::Finish(
    const v1::StageFinishRequest& request) {
  std::shared_ptr<Transfer> transfer;
  {
    absl::MutexLock lock(&mu_);
    auto it = transfers_.find(request.transfer_id());
    if (it == transfers_.end()) {
      return absl::NotFoundError(absl::StrCat("node ", options_.node_name, " has no transfer ",
                                              request.transfer_id(),
                                              " (the agent restarted?); stage again to resume"));
    }
    transfer = it->second;
    // Cancelled: forgotten now, so the streams end and the data port closes once the last call
    // holding it returns. Verified chunks stay in the partial files for the next run.
    if (request.abort()) transfers_.erase(it);
  }
  if (request.abort()) {
    transfer->Stop();
    v1::StageFinishResponse response = transfer->Progress();
    response.set_done(true);
    return response;
  }
  if (!request.wait()) return transfer->Progress();
  v1::StageFinishResponse response = transfer->Finish();
  absl::MutexLock lock(&mu_);
  auto it = transfers_.find(request.transfer_id());
  if (it != transfers_.end() && it->second == transfer) transfers_.erase(it);
  return response;
}

}  // namespace fleet::agent
