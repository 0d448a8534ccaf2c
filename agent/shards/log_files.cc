// Rotated, offset-addressed shard log files (log_files.h).
#include "agent/shards/log_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

std::optional<uint64_t> FileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

// Up to `length` bytes of `path` from `offset`; fewer when the file is shorter.
absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset, uint64_t length) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(absl::StrCat("open ", path));
  std::string out(length, '\0');
  absl::StatusOr<size_t> got = ReadAt(fd, out.data(), length, offset, path);
  ::close(fd);
  if (!got.ok()) return got.status();
  out.resize(*got);
  return out;
}

std::string Rotated(const std::string& path, int n) { return absl::StrCat(path, ".", n); }

// Shifts `path.1` .. `path.(kept-1)` up by one (the oldest falls off) and returns `path.1`,
// now free.
void ShiftRotated(const std::string& path, int kept) {
  ::unlink(Rotated(path, kept).c_str());
  for (int i = kept - 1; i >= 1; --i)
    ::rename(Rotated(path, i).c_str(), Rotated(path, i + 1).c_str());
}

// Start of the last `lines` lines of `text` (a final newline does not start an empty line);
// npos when `text` holds fewer.
size_t StartOfLastLines(absl::string_view text, int lines) {
  size_t end = text.size();
  if (end > 0 && text[end - 1] == '\n') --end;
  int seen = 0;
  for (size_t i = end; i > 0; --i) {
    if (text[i - 1] == '\n' && ++seen == lines) return i;
  }
  return absl::string_view::npos;
}

}  // namespace

ShardLog::ShardLog(ShardLogOptions options, uint64_t base)
    : options_(std::move(options)), base_(base) {
  absl::MutexLock lock(&mu_);
  uint64_t size = FileSize(options_.path).value_or(0);
  read_pos_ = size > kTailBytes ? size - kTailBytes : 0;
  PollLocked();
}

absl::Status ShardLog::StartFresh(const ShardLogOptions& options) {
  std::optional<uint64_t> size = FileSize(options.path);
  if (!size || *size == 0) return absl::OkStatus();
  if (options.files_kept <= 0) {
    RETURN_IF_ERRNO(::truncate(options.path.c_str(), 0), absl::StrCat("truncate ", options.path));
    return absl::OkStatus();
  }
  ShiftRotated(options.path, options.files_kept);
  RETURN_IF_ERRNO(::rename(options.path.c_str(), Rotated(options.path, 1).c_str()),
                  absl::StrCat("rename ", options.path));
  return absl::OkStatus();
}

bool ShardLog::Poll() {
  absl::MutexLock lock(&mu_);
  return PollLocked();
}

bool ShardLog::PollLocked() {
  std::optional<uint64_t> size = FileSize(options_.path);
  if (!size) return false;
  // Someone else truncated the file: follow it rather than wait for bytes that never come.
  if (*size < read_pos_) read_pos_ = 0;
  if (*size > read_pos_) {
    uint64_t from = std::max<uint64_t>(read_pos_, *size > kTailBytes ? *size - kTailBytes : 0);
    absl::StatusOr<std::string> bytes = ReadRange(options_.path, from, *size - from);
    if (bytes.ok()) {
      AppendToTail(*bytes);
      read_pos_ = from + bytes->size();
    }
  }
  if (*size <= options_.max_bytes) return false;
  return RotateLocked();
}

void ShardLog::AppendToTail(const std::string& bytes) {
  tail_ += bytes;
  // Trim in large steps so appending stays amortised O(1).
  if (tail_.size() > 2 * kTailBytes) tail_.erase(0, tail_.size() - kTailBytes);
}

bool ShardLog::RotateLocked() {
  int src = ::open(options_.path.c_str(), O_RDWR | O_CLOEXEC);
  if (src < 0) return false;
  int dst = -1;
  if (options_.files_kept > 0) {
    ShiftRotated(options_.path, options_.files_kept);
    dst = ::open(Rotated(options_.path, 1).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  // Copy up to the end as it is now, including what the writer appends meanwhile, so only the
  // bytes between the last read and ftruncate can be lost.
  uint64_t copied = 0;
  char buf[64 << 10];
  for (;;) {
    ssize_t n = ::pread(src, buf, sizeof buf, static_cast<off_t>(copied));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (dst >= 0) {
      ssize_t written = 0;
      while (written < n) {
        ssize_t w = ::write(dst, buf + written, static_cast<size_t>(n - written));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) break;
        written += w;
      }
    }
    if (copied + static_cast<uint64_t>(n) > read_pos_) {
      uint64_t skip = read_pos_ > copied ? read_pos_ - copied : 0;
      AppendToTail(std::string(buf + skip, static_cast<size_t>(n) - skip));
      read_pos_ = copied + static_cast<uint64_t>(n);
    }
    copied += static_cast<uint64_t>(n);
  }
  bool truncated = ::ftruncate(src, 0) == 0;
  ::close(src);
  if (dst >= 0) ::close(dst);
  if (!truncated) return false;
  base_ += copied;
  read_pos_ = 0;
  return true;
}

uint64_t ShardLog::base() const {
  absl::MutexLock lock(&mu_);
  return base_;
}

std::string ShardLog::tail() const {
  absl::MutexLock lock(&mu_);
  return tail_.size() > kTailBytes ? tail_.substr(tail_.size() - kTailBytes) : tail_;
}

std::vector<ShardLog::Segment> ShardLog::SegmentsLocked() const {
  std::vector<Segment> segments;
  uint64_t size = FileSize(options_.path).value_or(0);
  segments.push_back({options_.path, base_, size});
  uint64_t next_start = base_;
  for (int i = 1; i <= options_.files_kept; ++i) {
    std::string path = Rotated(options_.path, i);
    std::optional<uint64_t> rotated = FileSize(path);
    // A file larger than the offsets before it holds an earlier shard's output (StartFresh).
    if (!rotated || *rotated > next_start) break;
    next_start -= *rotated;
    segments.push_back({std::move(path), next_start, *rotated});
  }
  return segments;
}

absl::StatusOr<LogChunk> ShardLog::Read(uint64_t offset, size_t max_bytes) {
  absl::MutexLock lock(&mu_);
  PollLocked();
  std::vector<Segment> segments = SegmentsLocked();
  uint64_t oldest = segments.back().start;
  uint64_t end = segments.front().start + segments.front().size;
  LogChunk chunk;
  if (offset < oldest) {
    chunk.truncated = true;
    offset = oldest;
  }
  // An offset past the end came from an earlier shard of this rank: start over from the end.
  if (offset > end) offset = end;
  chunk.start_offset = offset;
  uint64_t want = end - offset;
  if (max_bytes > 0) want = std::min<uint64_t>(want, max_bytes);
  for (auto it = segments.rbegin(); it != segments.rend() && chunk.data.size() < want; ++it) {
    uint64_t at = offset + chunk.data.size();
    if (at >= it->start + it->size) continue;
    uint64_t length = std::min<uint64_t>(it->start + it->size - at, want - chunk.data.size());
    ASSIGN_OR_RETURN(std::string bytes, ReadRange(it->path, at - it->start, length));
    bool short_read = bytes.size() < length;
    chunk.data += bytes;
    if (short_read) break;
  }
  chunk.next_offset = chunk.start_offset + chunk.data.size();
  return chunk;
}

absl::StatusOr<LogChunk> ShardLog::Tail(int lines, size_t max_bytes) {
  absl::MutexLock lock(&mu_);
  PollLocked();
  std::vector<Segment> segments = SegmentsLocked();
  uint64_t end = segments.front().start + segments.front().size;
  uint64_t oldest = segments.back().start;
  std::string text;
  // The in-memory tail answers most requests (`fleet logs` shows a screenful) without reading
  // the files; it ends where the poll above stopped reading.
  if (lines > 0 && StartOfLastLines(tail_, lines) != absl::string_view::npos) {
    text = tail_;
    end = base_ + read_pos_;
  } else {
    for (const Segment& segment : segments) {
      ASSIGN_OR_RETURN(std::string bytes, ReadRange(segment.path, 0, segment.size));
      text.insert(0, bytes);
      if (lines > 0 && StartOfLastLines(text, lines) != absl::string_view::npos) break;
      if (max_bytes > 0 && text.size() >= max_bytes) break;
    }
  }
  size_t start = lines > 0 ? StartOfLastLines(text, lines) : 0;
  if (start == absl::string_view::npos) start = 0;
  LogChunk chunk;
  if (max_bytes > 0 && text.size() - start > max_bytes) {
    start = text.size() - max_bytes;
    chunk.truncated = true;
  }
  chunk.data = text.substr(start);
  chunk.next_offset = end;
  chunk.start_offset = end - chunk.data.size();
  if (lines == 0 && oldest > 0) chunk.truncated = true;
  return chunk;
}

}  // namespace fleet::agent
