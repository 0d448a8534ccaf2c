// Network interfaces from ROOT/sys/class/net, their addresses, and which of them carry RDMA.
#include "agent/probes/network.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
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

namespace fleet::agent {
namespace {

// ARPHRD_LOOPBACK (linux/if_arp.h), as sysfs `type` prints it.
constexpr absl::string_view kLoopbackType = "772";

int PrefixLength(const uint8_t* mask, int bytes) {
  int prefix = 0;
  for (int i = 0; i < bytes; ++i) prefix += __builtin_popcount(mask[i]);
  return prefix;
}

// name -> "ADDR/PREFIX" from getifaddrs(3).
absl::Status LiveAddresses(std::map<std::string, std::vector<std::string>>& addresses) {
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return absl::InternalError("getifaddrs failed");
  for (struct ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    int family = a->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    auto raw = [family](const sockaddr* sa) -> const uint8_t* {
      return family == AF_INET ? reinterpret_cast<const uint8_t*>(
                                     &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr)
                               : reinterpret_cast<const uint8_t*>(
                                     &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr);
    };
    char text[INET6_ADDRSTRLEN] = {};
    if (::inet_ntop(family, raw(a->ifa_addr), text, sizeof text) == nullptr) continue;
    int prefix = a->ifa_netmask == nullptr
                     ? 0
                     : PrefixLength(raw(a->ifa_netmask), family == AF_INET ? 4 : 16);
    addresses[a->ifa_name].push_back(absl::StrCat(text, "/", prefix));
  }
  ::freeifaddrs(list);
  return absl::OkStatus();
}

struct LinkRoute {
  std::string iface;
  uint32_t destination = 0;  // host order
  uint32_t mask = 0;         // host order
};

// /proc/net/route prints each __be32 with %08X as the CPU reads it; recorded trees come from
// little-endian machines (aarch64 DGX Spark, x86-64), so byte 0 of the address is the low byte.
uint32_t RouteHexToHost(absl::string_view hex, bool* ok) {
  uint32_t v = 0;
  *ok = absl::SimpleHexAtoi(hex, &v);
  return (v & 0xff) << 24 | ((v >> 8) & 0xff) << 16 | ((v >> 16) & 0xff) << 8 | (v >> 24);
}

// The main table's routes without a gateway (RTF_GATEWAY 0x2): the prefixes on each link.
std::vector<LinkRoute> ReadLinkRoutes(const std::string& text) {
  std::vector<LinkRoute> routes;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    uint32_t flags = 0;
    if (f.size() < 8 || f[0] == "Iface" || !absl::SimpleHexAtoi(f[3], &flags)) continue;
    if (flags & 0x2) continue;
    bool dest_ok = false, mask_ok = false;
    LinkRoute route{std::string(f[0]), RouteHexToHost(f[1], &dest_ok),
                    RouteHexToHost(f[7], &mask_ok)};
    if (dest_ok && mask_ok && route.mask != 0) routes.push_back(route);
  }
  return routes;
}

// The addresses of the "/32 host LOCAL" leaves of /proc/net/fib_trie: the node's own IPv4
// addresses, in the order the trie lists them.
std::vector<std::string> ReadLocalAddresses(const std::string& text) {
  std::vector<std::string> local;
  std::string leaf;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (absl::ConsumePrefix(&t, "|-- ")) {
      leaf = std::string(t);
    } else if (absl::StartsWith(t, "/32 host LOCAL") && !leaf.empty() &&
               std::find(local.begin(), local.end(), leaf) == local.end()) {
      local.push_back(leaf);
    }
  }
  return local;
}

// IPv4 from fib_trie and route, IPv6 from if_inet6, as the header describes.
void RecordedAddresses(const std::string& root, const std::set<std::string>& loopbacks,
                       std::map<std::string, std::vector<std::string>>& addresses,
                       v1::NodeProbe& out) {
  absl::StatusOr<std::string> trie = ReadFileToString(Under(root, "/proc/net/fib_trie"));
  absl::StatusOr<std::string> route = ReadFileToString(Under(root, "/proc/net/route"));
  if (!trie.ok() || !route.ok()) {
    out.add_unavailable(absl::StrCat("interface IPv4 addresses: ",
                                     (!trie.ok() ? trie.status() : route.status()).message()));
  } else {
    std::vector<LinkRoute> routes = ReadLinkRoutes(*route);
    std::vector<std::string> unplaced;
    for (const std::string& text : ReadLocalAddresses(*trie)) {
      in_addr addr;
      if (::inet_pton(AF_INET, text.c_str(), &addr) != 1) continue;
      uint32_t host = ntohl(addr.s_addr);
      const LinkRoute* best = nullptr;
      for (const LinkRoute& r : routes) {
        if ((host & r.mask) != r.destination) continue;
        if (best == nullptr || __builtin_popcount(r.mask) > __builtin_popcount(best->mask)) {
          best = &r;
        }
      }
      if (best != nullptr) {
        addresses[best->iface].push_back(absl::StrCat(text, "/", __builtin_popcount(best->mask)));
      } else if (host >> 24 == 127 && loopbacks.size() == 1) {
        addresses[*loopbacks.begin()].push_back(absl::StrCat(text, "/8"));
      } else {
        unplaced.push_back(text);
      }
    }
    if (!unplaced.empty()) {
      out.add_unavailable(absl::StrCat("interface IPv4 addresses: no link route in ",
                                       "proc/net/route holds ", absl::StrJoin(unplaced, ", "),
                                       ", so their interface is unknown"));
    }
  }
  absl::StatusOr<std::string> inet6 = ReadFileToString(Under(root, "/proc/net/if_inet6"));
  if (!inet6.ok()) {
    out.add_unavailable(absl::StrCat("interface IPv6 addresses: ", inet6.status().message()));
    return;
  }
  // "fe800000000000003e6d66fffeccb3b7 04 40 20 80 enp1s0f1np1": address, ifindex, prefix
  // length, scope, flags (all hex), name.
  for (absl::string_view line : absl::StrSplit(*inet6, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    uint32_t prefix = 0;
    if (f.size() < 6 || f[0].size() != 32 || !absl::SimpleHexAtoi(f[2], &prefix)) continue;
    in6_addr addr;
    bool ok = true;
    for (int i = 0; i < 16 && ok; ++i) {
      uint32_t byte = 0;
      ok = absl::SimpleHexAtoi(f[0].substr(2 * i, 2), &byte);
      addr.s6_addr[i] = static_cast<uint8_t>(byte);
    }
    char text[INET6_ADDRSTRLEN] = {};
    if (!ok || ::inet_ntop(AF_INET6, &addr, text, sizeof text) == nullptr) continue;
    addresses[std::string(f[5])].push_back(absl::StrCat(text, "/", prefix));
  }
}

}  // namespace

void ProbeNetwork(const ProbeContext& ctx, v1::NodeProbe* out) {
  std::string net = Under(ctx.root, "/sys/class/net");
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(net, ec)) {
    names.push_back(entry.path().filename());
  }
  if (ec) {
    out->add_unavailable(absl::StrCat("interfaces: ", net, ": ", ec.message()));
    return;
  }
  std::sort(names.begin(), names.end());

  std::map<std::string, std::vector<std::string>> rdma_by_netdev;
  for (const v1::RdmaDevice& dev : out->rdma()) {
    for (const v1::RdmaPort& port : dev.ports()) {
      std::vector<std::string>& devs = rdma_by_netdev[port.netdev()];
      if (!port.netdev().empty() && std::find(devs.begin(), devs.end(), dev.name()) == devs.end()) {
        devs.push_back(dev.name());
      }
    }
  }

  std::set<std::string> loopbacks;
  for (const std::string& name : names) {
    absl::StatusOr<std::string> type = ReadTrimmed(absl::StrCat(net, "/", name, "/type"));
    if (type.ok() && *type == kLoopbackType) loopbacks.insert(name);
  }
  std::map<std::string, std::vector<std::string>> addresses;
  if (ctx.live) {
    if (absl::Status s = LiveAddresses(addresses); !s.ok()) {
      out->add_unavailable(absl::StrCat("interface addresses: ", s.message()));
    }
  } else {
    RecordedAddresses(ctx.root, loopbacks, addresses, *out);
  }

  for (const std::string& name : names) {
    v1::ProbedInterface& itf = *out->add_interfaces();
    itf.set_name(name);
    std::string dir = absl::StrCat(net, "/", name);
    absl::StatusOr<std::string> mtu = ReadTrimmed(dir + "/mtu");
    uint32_t mtu_value = 0;
    if (mtu.ok() && absl::SimpleAtoi(*mtu, &mtu_value)) {
      itf.set_mtu(mtu_value);
    } else {
      out->add_unavailable(absl::StrCat(
          "interface ", name,
          ": mtu: ", mtu.ok() ? "not a number: " + *mtu : std::string(mtu.status().message())));
    }
    absl::StatusOr<std::string> oper = ReadTrimmed(dir + "/operstate");
    if (oper.ok()) {
      itf.set_operstate(*oper);
    } else {
      out->add_unavailable(
          absl::StrCat("interface ", name, ": operstate: ", oper.status().message()));
    }
    // The kernel prints -1 (or fails the read with EINVAL) while the link is down; 0 is the
    // proto's "unknown".
    absl::StatusOr<std::string> speed = ReadTrimmed(dir + "/speed");
    int64_t speed_value = 0;
    if (speed.ok() && absl::SimpleAtoi(*speed, &speed_value) && speed_value > 0 &&
        speed_value <= UINT32_MAX) {
      itf.set_speed_mbps(static_cast<uint32_t>(speed_value));
    }
    for (const std::string& a : addresses[name]) itf.add_addresses(a);
    auto rdma = rdma_by_netdev.find(name);
    if (rdma != rdma_by_netdev.end() && !rdma->second.empty()) {
      itf.set_fabric(true);
      for (const std::string& dev : rdma->second) itf.add_rdma_devices(dev);
    }
  }
}

}  // namespace fleet::agent
