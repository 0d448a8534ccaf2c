// Limits, memory and disks from /proc under a root, and statvfs on the live system.
#include "agent/probes/limits.h"

#include <sys/statvfs.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/probes/root_files.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();
// CAP_SYS_RESOURCE (linux/capability.h): lets a process raise a hard rlimit.
constexpr int kCapSysResource = 24;

// "unlimited" or a decimal number of bytes, as proc/self/limits prints a limit.
std::optional<uint64_t> ParseLimit(absl::string_view text) {
  if (text == "unlimited") return kUnlimited;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) return std::nullopt;
  return value;
}

void ReadMemlock(const std::string& root, v1::LimitsProbe& limits, v1::NodeProbe& out) {
  std::string path = Under(root, "/proc/self/limits");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    out.add_unavailable(absl::StrCat("memlock: ", text.status().message()));
    return;
  }
  // "Max locked memory         8388608              8388608              bytes"
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::ConsumePrefix(&line, "Max locked memory")) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    std::optional<uint64_t> soft = f.size() >= 2 ? ParseLimit(f[0]) : std::nullopt;
    std::optional<uint64_t> hard = f.size() >= 2 ? ParseLimit(f[1]) : std::nullopt;
    if (!soft || !hard) {
      out.add_unavailable(
          absl::StrCat("memlock: unreadable line in ", path, ": Max locked memory", line));
      return;
    }
    limits.set_memlock_soft(*soft);
    limits.set_memlock_hard(*hard);
    return;
  }
  out.add_unavailable(absl::StrCat("memlock: no \"Max locked memory\" line in ", path));
}

void ReadCapabilities(const std::string& root, v1::LimitsProbe& limits, v1::NodeProbe& out) {
  std::string path = Under(root, "/proc/self/status");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    out.add_unavailable(absl::StrCat("can raise memlock: ", text.status().message()));
    return;
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::ConsumePrefix(&line, "CapEff:")) continue;
    uint64_t caps = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line), &caps)) {
      out.add_unavailable(absl::StrCat("can raise memlock: bad CapEff in ", path, ":", line));
      return;
    }
    limits.set_can_raise_memlock((caps >> kCapSysResource) & 1);
    return;
  }
  out.add_unavailable(absl::StrCat("can raise memlock: no CapEff line in ", path));
}

// tmpfs size= takes a number with an optional k, m, g (binary) suffix (Documentation/
// filesystems/tmpfs.rst); a percentage of RAM would need the kernel's page accounting.
std::optional<uint64_t> ParseTmpfsSize(absl::string_view size) {
  uint64_t scale = 1;
  if (!size.empty()) {
    switch (absl::ascii_tolower(size.back())) {
      case 'k':
        scale = 1ull << 10;
        break;
      case 'm':
        scale = 1ull << 20;
        break;
      case 'g':
        scale = 1ull << 30;
        break;
      default:
        break;
    }
  }
  if (scale != 1) size.remove_suffix(1);
  uint64_t value = 0;
  if (!absl::SimpleAtoi(size, &value)) return std::nullopt;
  return value * scale;
}

struct Space {
  uint64_t total = 0;
  uint64_t free = 0;
};

absl::StatusOr<Space> StatVfs(const std::string& path) {
  struct statvfs st;
  RETURN_IF_ERRNO(::statvfs(path.c_str(), &st), absl::StrCat("statvfs ", path));
  // f_bavail: what an unprivileged process may still write, the figure a shard sees.
  return Space{.total = static_cast<uint64_t>(st.f_blocks) * st.f_frsize,
               .free = static_cast<uint64_t>(st.f_bavail) * st.f_frsize};
}

void ReadShm(const ProbeContext& ctx, v1::LimitsProbe& limits, v1::NodeProbe& out) {
  if (ctx.live) {
    absl::StatusOr<Space> space = StatVfs(Under(ctx.root, "/dev/shm"));
    if (!space.ok()) {
      out.add_unavailable(absl::StrCat("/dev/shm: ", space.status().message()));
      return;
    }
    limits.set_shm_total_bytes(space->total);
    limits.set_shm_free_bytes(space->free);
    return;
  }
  out.add_unavailable("/dev/shm free: only measurable on the live system (statvfs)");
  std::string path = Under(ctx.root, "/proc/mounts");
  absl::StatusOr<std::string> mounts = ReadFileToString(path);
  if (!mounts.ok()) {
    out.add_unavailable(absl::StrCat("/dev/shm size: ", mounts.status().message()));
    return;
  }
  // "tmpfs /dev/shm tmpfs rw,nosuid,nodev,size=65536k,inode64 0 0"
  for (absl::string_view line : absl::StrSplit(*mounts, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 4 || f[1] != "/dev/shm") continue;
    for (absl::string_view option : absl::StrSplit(f[3], ',')) {
      if (!absl::ConsumePrefix(&option, "size=")) continue;
      if (std::optional<uint64_t> size = ParseTmpfsSize(option)) {
        limits.set_shm_total_bytes(*size);
        return;
      }
    }
  }
  out.add_unavailable(absl::StrCat("/dev/shm size: no /dev/shm mount with a size= option in ", path,
                                   " (a tmpfs without one gets half of RAM)"));
}

void ReadMeminfo(const std::string& root, v1::LimitsProbe& limits, v1::NodeProbe& out) {
  std::string path = Under(root, "/proc/meminfo");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    out.add_unavailable(absl::StrCat("memory: ", text.status().message()));
    return;
  }
  std::vector<std::string> missing = {"MemTotal", "MemAvailable",    "SwapTotal",
                                      "SwapFree", "HugePages_Total", "Hugepagesize"};
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t n = 0;
    if (f.size() < 2 || !absl::ConsumeSuffix(&f[0], ":") || !absl::SimpleAtoi(f[1], &n)) continue;
    // Sizes are in kB (KiB); HugePages_Total is a count.
    uint64_t bytes = f.size() >= 3 && f[2] == "kB" ? n * 1024 : n;
    if (f[0] == "MemTotal") {
      limits.set_memory_total_bytes(bytes);
    } else if (f[0] == "MemAvailable") {
      limits.set_memory_available_bytes(bytes);
    } else if (f[0] == "SwapTotal") {
      limits.set_swap_total_bytes(bytes);
    } else if (f[0] == "SwapFree") {
      limits.set_swap_free_bytes(bytes);
    } else if (f[0] == "HugePages_Total") {
      limits.set_hugepages_total(n);
    } else if (f[0] == "Hugepagesize") {
      limits.set_hugepage_size_bytes(bytes);
    } else {
      continue;
    }
    std::erase(missing, std::string(f[0]));
  }
  if (!missing.empty()) {
    out.add_unavailable(absl::StrCat("memory: no ", absl::StrJoin(missing, ", "), " in ", path));
  }
}

void ReadDisks(const ProbeContext& ctx, v1::NodeProbe& out) {
  if (ctx.request.disk_paths().empty()) return;
  if (!ctx.live) {
    out.add_unavailable(
        absl::StrCat("disks: free space only measurable on the live system ",
                     "(statvfs); not measured: ", absl::StrJoin(ctx.request.disk_paths(), ", ")));
    return;
  }
  for (const std::string& path : ctx.request.disk_paths()) {
    v1::DiskProbe& disk = *out.add_disks();
    disk.set_path(path);
    absl::StatusOr<Space> space = StatVfs(Under(ctx.root, path));
    if (!space.ok()) {
      disk.set_error(std::string(space.status().message()));
      continue;
    }
    disk.set_present(true);
    disk.set_total_bytes(space->total);
    disk.set_free_bytes(space->free);
  }
}

}  // namespace

void ProbeLimits(const ProbeContext& ctx, v1::NodeProbe* out) {
  v1::LimitsProbe& limits = *out->mutable_limits();
  ReadMemlock(ctx.root, limits, *out);
  ReadCapabilities(ctx.root, limits, *out);
  ReadShm(ctx, limits, *out);
  ReadMeminfo(ctx.root, limits, *out);
  ReadDisks(ctx, *out);
}

}  // namespace fleet::agent
