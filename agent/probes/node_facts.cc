// Node facts from /proc, /sys and /etc under a root directory.
#include "agent/probes/node_facts.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "agent/probes/root_files.h"
#include "common/files.h"

namespace fleet::agent {
namespace {

// Counts CPUs in a kernel CPU list such as "0-3,8-11".
absl::StatusOr<uint32_t> CountCpuList(absl::string_view list) {
  uint32_t count = 0;
  for (absl::string_view range : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> ends = absl::StrSplit(range, '-');
    uint32_t lo = 0, hi = 0;
    if (!absl::SimpleAtoi(ends.first, &lo)) {
      return absl::InvalidArgumentError(absl::StrCat("bad CPU list \"", list, "\""));
    }
    hi = lo;
    if (!ends.second.empty() && !absl::SimpleAtoi(ends.second, &hi)) {
      return absl::InvalidArgumentError(absl::StrCat("bad CPU list \"", list, "\""));
    }
    if (hi < lo) return absl::InvalidArgumentError(absl::StrCat("bad CPU list \"", list, "\""));
    count += hi - lo + 1;
  }
  return count;
}

void ReadMemory(const std::string& root, v1::NodeFacts& facts) {
  std::string path = Under(root, "/proc/meminfo");
  absl::StatusOr<std::string> meminfo = ReadFileToString(path);
  if (!meminfo.ok()) {
    facts.add_unavailable(absl::StrCat("memory: ", meminfo.status().message()));
    return;
  }
  bool total = false;
  for (absl::string_view line : absl::StrSplit(*meminfo, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint64_t kib = 0;
    if (f.size() < 2 || !absl::SimpleAtoi(f[1], &kib)) continue;
    if (f[0] == "MemTotal:") {
      facts.set_memory_total_bytes(kib * 1024);
      total = true;
    }
    if (f[0] == "MemAvailable:") facts.set_memory_available_bytes(kib * 1024);
  }
  if (!total) facts.add_unavailable(absl::StrCat("memory: no MemTotal line in ", path));
}

void ReadOs(const std::string& root, v1::NodeFacts& facts) {
  // os-release(5): /etc/os-release, falling back to /usr/lib/os-release.
  absl::StatusOr<std::string> text = ReadFileToString(Under(root, "/etc/os-release"));
  if (!text.ok()) text = ReadFileToString(Under(root, "/usr/lib/os-release"));
  if (!text.ok()) {
    facts.add_unavailable(absl::StrCat("os: ", text.status().message()));
    return;
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::ConsumePrefix(&line, "PRETTY_NAME=")) continue;
    line = absl::StripAsciiWhitespace(line);
    if (line.size() >= 2 && (line.front() == '"' || line.front() == '\'')) {
      line = line.substr(1, line.size() - 2);
    }
    facts.set_os(std::string(line));
    return;
  }
  facts.add_unavailable("os: no PRETTY_NAME in os-release");
}

void ReadInterfaces(const std::string& root, v1::NodeFacts& facts) {
  std::string net = Under(root, "/sys/class/net");
  std::error_code ec;
  std::map<std::string, v1::NetworkInterface> by_name;
  for (const auto& entry : std::filesystem::directory_iterator(net, ec)) {
    std::string name = entry.path().filename();
    v1::NetworkInterface& itf = by_name[name];
    itf.set_name(name);
    uint32_t mtu = 0;
    absl::StatusOr<std::string> mtu_text = ReadTrimmed(absl::StrCat(net, "/", name, "/mtu"));
    if (mtu_text.ok() && absl::SimpleAtoi(*mtu_text, &mtu)) itf.set_mtu(mtu);
    absl::StatusOr<std::string> oper = ReadTrimmed(absl::StrCat(net, "/", name, "/operstate"));
    if (oper.ok()) itf.set_operstate(*oper);
    absl::StatusOr<std::string> type = ReadTrimmed(absl::StrCat(net, "/", name, "/type"));
    // ARPHRD_LOOPBACK is 772 (linux/if_arp.h).
    itf.set_loopback(type.ok() && *type == "772");
  }
  if (ec) {
    facts.add_unavailable(absl::StrCat("interfaces: ", net, ": ", ec.message()));
    return;
  }
  if (root != "/") {
    facts.add_unavailable("interface addresses: only readable on the live system (root /)");
  } else {
    struct ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) {
      facts.add_unavailable("interface addresses: getifaddrs failed");
    } else {
      for (struct ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
        if (a->ifa_addr == nullptr) continue;
        int family = a->ifa_addr->sa_family;
        if (family != AF_INET && family != AF_INET6) continue;
        char text[INET6_ADDRSTRLEN] = {};
        const void* raw =
            family == AF_INET
                ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr)
                : static_cast<const void*>(
                      &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr);
        if (::inet_ntop(family, raw, text, sizeof text) == nullptr) continue;
        int prefix = 0;
        if (a->ifa_netmask != nullptr) {
          const auto* bytes =
              family == AF_INET ? reinterpret_cast<const uint8_t*>(
                                      &reinterpret_cast<sockaddr_in*>(a->ifa_netmask)->sin_addr)
                                : reinterpret_cast<const uint8_t*>(
                                      &reinterpret_cast<sockaddr_in6*>(a->ifa_netmask)->sin6_addr);
          for (int i = 0; i < (family == AF_INET ? 4 : 16); ++i) {
            prefix += __builtin_popcount(bytes[i]);
          }
        }
        v1::NetworkInterface& itf = by_name[a->ifa_name];
        itf.set_name(a->ifa_name);
        itf.add_addresses(absl::StrCat(text, "/", prefix));
      }
      ::freeifaddrs(list);
    }
  }
  for (auto& [name, itf] : by_name) *facts.add_interfaces() = std::move(itf);
}

void ReadRdmaDevices(const std::string& root, v1::NodeFacts& facts) {
  std::string dir = Under(root, "/sys/class/infiniband");
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename());
  }
  if (ec) {
    // No class directory: no RDMA driver loaded, so no device to list.
    facts.add_unavailable(absl::StrCat("rdma devices: ", dir, ": ", ec.message()));
    return;
  }
  std::sort(names.begin(), names.end());
  for (std::string& name : names) facts.add_rdma_devices(std::move(name));
}

// Device nodes a container needs passed through. Their absence is a fact, not an error.
void ReadDeviceFiles(const std::string& root, v1::NodeFacts& facts) {
  std::error_code ec;
  facts.set_nvidia_devices(std::filesystem::exists(Under(root, "/dev/nvidiactl"), ec));
  facts.set_infiniband_devices(std::filesystem::is_directory(Under(root, "/dev/infiniband"), ec));
}

}  // namespace

v1::NodeFacts ReadNodeFacts(const std::string& root) {
  v1::NodeFacts facts;
  if (absl::StatusOr<std::string> h = ReadTrimmed(Under(root, "/proc/sys/kernel/hostname"));
      h.ok()) {
    facts.set_hostname(*h);
  } else {
    facts.add_unavailable(absl::StrCat("hostname: ", h.status().message()));
  }
  absl::StatusOr<std::string> online = ReadTrimmed(Under(root, "/sys/devices/system/cpu/online"));
  absl::StatusOr<uint32_t> cpus =
      online.ok() ? CountCpuList(*online) : absl::StatusOr<uint32_t>(online.status());
  if (cpus.ok()) {
    facts.set_cpu_count(*cpus);
  } else {
    facts.add_unavailable(absl::StrCat("cpu count: ", cpus.status().message()));
  }
  ReadMemory(root, facts);
  ReadOs(root, facts);
  if (absl::StatusOr<std::string> k = ReadTrimmed(Under(root, "/proc/sys/kernel/osrelease"));
      k.ok()) {
    facts.set_kernel(*k);
  } else {
    facts.add_unavailable(absl::StrCat("kernel: ", k.status().message()));
  }
  // The machine type has no file under /proc; under another root it is unknown.
  struct utsname uts;
  if (root == "/" && ::uname(&uts) == 0) {
    facts.set_arch(uts.machine);
  } else {
    facts.add_unavailable("arch: only readable on the live system (root /)");
  }
  ReadInterfaces(root, facts);
  ReadRdmaDevices(root, facts);
  ReadDeviceFiles(root, facts);
  return facts;
}

}  // namespace fleet::agent
