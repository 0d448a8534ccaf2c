// RDMA devices, ports and GIDs from sysfs, and the libibverbs cross-check on the live system.
#include "agent/probes/rdma.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent/probes/root_files.h"
#include "agent/probes/verbs_loader.h"
#include "common/files.h"

namespace fleet::agent {
namespace {

using Gid = std::array<uint8_t, 16>;

// Entries of `dir` whose names are decimal numbers, ascending; empty when `dir` is unreadable.
std::vector<uint32_t> NumberedEntries(const std::string& dir, std::error_code& ec) {
  std::vector<uint32_t> numbers;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    uint32_t n = 0;
    if (absl::SimpleAtoi(entry.path().filename().string(), &n)) numbers.push_back(n);
  }
  std::sort(numbers.begin(), numbers.end());
  return numbers;
}

// sysfs writes "4: ACTIVE" and "5: LinkUp"; the name is what people and ibv_devinfo use.
std::string AfterCode(absl::string_view text) {
  size_t colon = text.find(':');
  if (colon == absl::string_view::npos) return std::string(text);
  return std::string(absl::StripAsciiWhitespace(text.substr(colon + 1)));
}

// A GID as sysfs prints it: eight groups of four hex digits separated by ':'.
std::optional<Gid> ParseGid(absl::string_view text) {
  std::vector<absl::string_view> groups = absl::StrSplit(text, ':');
  if (groups.size() != 8) return std::nullopt;
  Gid gid{};
  for (size_t i = 0; i < 8; ++i) {
    uint32_t value = 0;
    if (groups[i].size() != 4 || !absl::SimpleHexAtoi(groups[i], &value)) return std::nullopt;
    gid[2 * i] = static_cast<uint8_t>(value >> 8);
    gid[2 * i + 1] = static_cast<uint8_t>(value & 0xff);
  }
  return gid;
}

bool IsZero(const Gid& gid) {
  return std::all_of(gid.begin(), gid.end(), [](uint8_t b) { return b == 0; });
}

// ::ffff:a.b.c.d (RFC 4291 2.5.5.2), the form RoCE v2 gives an IPv4 address.
bool IsIpv4Mapped(const Gid& gid) {
  return std::all_of(gid.begin(), gid.begin() + 10, [](uint8_t b) { return b == 0; }) &&
         gid[10] == 0xff && gid[11] == 0xff;
}

// NCCL's configuredGid() && !linkLocalGid(): not zero, and not fe80::/64.
bool NcclValidGid(const Gid& gid) {
  bool fe80 = gid[0] == 0xfe && gid[1] == 0x80 && gid[2] == 0 && gid[3] == 0;
  bool rest_zero = std::all_of(gid.begin() + 4, gid.end(), [](uint8_t b) { return b == 0; });
  bool configured = !IsZero(gid) && !(fe80 && rest_zero);
  bool link_local = fe80 && gid[4] == 0 && gid[5] == 0 && gid[6] == 0 && gid[7] == 0;
  return configured && !link_local;
}

// NCCL's ncclIbRoceGetVersionNum: 1 for "IB/RoCE v1" or "RoCE v1", 2 for "RoCE v2", else -1.
int RoceVersion(absl::string_view type) {
  if (absl::StartsWith(type, "IB/RoCE v1") || absl::StartsWith(type, "RoCE v1")) return 1;
  if (absl::StartsWith(type, "RoCE v2")) return 2;
  return -1;
}

// The IB MTU the kernel gives a RoCE port for its netdev's MTU: iboe_get_mtu() in the Linux
// kernel's include/rdma/ib_addr.h subtracts the largest RoCE headers, with sizes from
// include/rdma/ib_pack.h: GRH 40 + UDP 8 + BTH 12 + XRC ext 4 + AtomicETH 28 + ICRC 4 = 96,
// then takes the largest IB MTU that fits. mlx5 reports min(max_mtu 4096, that).
uint32_t IboeMtu(uint32_t netdev_mtu) {
  constexpr uint32_t kRoceHeaderBytes = 40 + 8 + 12 + 4 + 28 + 4;
  if (netdev_mtu < kRoceHeaderBytes) return 0;
  uint32_t payload = netdev_mtu - kRoceHeaderBytes;
  for (uint32_t mtu : {4096u, 2048u, 1024u, 512u, 256u}) {
    if (payload >= mtu) return mtu;
  }
  return 0;
}

// The RoCE GID index NCCL picks with its defaults (NCCL_IB_GID_INDEX unset,
// NCCL_IB_ADDR_FAMILY AF_INET, NCCL_IB_ROCE_VERSION_NUM 2, no NCCL_IB_ADDR_RANGE): the loop of
// ncclIbGetGidIndex over ncclUpdateGidIndex in NVIDIA/nccl src/transport/net_ib.cc. NCCL falls
// back to index 0 when nothing qualifies; that is reported as -1 unless index 0 is itself an
// IPv4-mapped RoCE v2 GID, since only such a GID carries RoCE v2 traffic over IPv4.
int32_t NcclRoceV2GidIndex(const v1::RdmaPort& port, uint32_t table_length) {
  struct Entry {
    Gid gid{};
    int version = -1;
  };
  std::map<uint32_t, Entry> table;
  for (const v1::RdmaGid& g : port.gids()) {
    std::optional<Gid> gid = ParseGid(g.gid());
    if (gid) table[g.index()] = Entry{*gid, RoceVersion(g.type())};
  }
  auto at = [&](uint32_t index) { return table.count(index) ? table[index] : Entry{}; };
  uint32_t chosen = 0;
  for (uint32_t candidate = 1; candidate < table_length; ++candidate) {
    Entry current = at(chosen);
    Entry next = at(candidate);
    bool current_v4 = IsIpv4Mapped(current.gid);
    bool next_v4 = IsIpv4Mapped(next.gid);
    if (next_v4 != current_v4 && next_v4) {
      chosen = candidate;
      continue;
    }
    if (!next_v4 || !NcclValidGid(next.gid)) continue;
    if ((current.version != next.version || !NcclValidGid(current.gid)) && next.version == 2) {
      chosen = candidate;
    }
  }
  Entry picked = at(chosen);
  if (IsIpv4Mapped(picked.gid) && NcclValidGid(picked.gid) && picked.version == 2) {
    return static_cast<int32_t>(chosen);
  }
  return -1;
}

// What ibdev2netdev prints for a port: the netdev under DEV/device/net whose dev_port is
// port - 1, else the netdev the port's GIDs name.
std::string PortNetdev(const std::string& dev_dir, const v1::RdmaPort& port) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dev_dir + "/device/net", ec)) {
    names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    absl::StatusOr<std::string> dev_port =
        ReadTrimmed(absl::StrCat(dev_dir, "/device/net/", name, "/dev_port"));
    uint32_t n = 0;
    if (dev_port.ok() && absl::SimpleAtoi(*dev_port, &n) && n + 1 == port.port()) return name;
  }
  for (const v1::RdmaGid& gid : port.gids()) {
    if (!gid.netdev().empty()) return gid.netdev();
  }
  return "";
}

void ReadGids(const std::string& port_dir, const std::string& where, v1::RdmaPort& port,
              v1::NodeProbe& out) {
  std::error_code ec;
  std::vector<uint32_t> indexes = NumberedEntries(port_dir + "/gids", ec);
  if (ec) {
    out.add_unavailable(absl::StrCat(where, ": GID table ", port_dir, "/gids: ", ec.message()));
    return;
  }
  for (uint32_t index : indexes) {
    absl::StatusOr<std::string> text = ReadTrimmed(absl::StrCat(port_dir, "/gids/", index));
    std::optional<Gid> gid = text.ok() ? ParseGid(*text) : std::nullopt;
    if (!gid) {
      out.add_unavailable(
          absl::StrCat(where, ": GID ", index, ": ",
                       text.ok() ? "not a GID: " + *text : std::string(text.status().message())));
      continue;
    }
    if (IsZero(*gid)) continue;
    v1::RdmaGid& g = *port.add_gids();
    g.set_index(index);
    g.set_gid(*text);
    // The kernel answers EINVAL for the type of an entry it does not hold; a populated GID
    // without a type is reported rather than guessed.
    absl::StatusOr<std::string> type =
        ReadTrimmed(absl::StrCat(port_dir, "/gid_attrs/types/", index));
    if (type.ok()) {
      g.set_type(*type);
    } else {
      out.add_unavailable(
          absl::StrCat(where, ": type of GID ", index, ": ", type.status().message()));
    }
    // InfiniBand GIDs have no netdev; an empty ndevs entry is a fact, not a failure.
    absl::StatusOr<std::string> ndev =
        ReadTrimmed(absl::StrCat(port_dir, "/gid_attrs/ndevs/", index));
    if (ndev.ok()) g.set_netdev(*ndev);
    if (IsIpv4Mapped(*gid)) {
      g.set_ipv4(absl::StrFormat("%d.%d.%d.%d", (*gid)[12], (*gid)[13], (*gid)[14], (*gid)[15]));
    }
  }
}

// "100 Gb/sec (4X EDR)" -> 100; "2.5 Gb/sec (1X SDR)" -> 2.5.
double RateGbps(absl::string_view rate) {
  std::vector<absl::string_view> words = absl::StrSplit(rate, ' ', absl::SkipEmpty());
  double gbps = 0;
  if (words.size() < 2 || words[1] != "Gb/sec" || !absl::SimpleAtod(words[0], &gbps)) return 0;
  return gbps;
}

void ReadPort(const ProbeContext& ctx, const std::string& device, const std::string& dev_dir,
              uint32_t number, v1::RdmaDevice& dev, v1::NodeProbe& out) {
  std::string port_dir = absl::StrCat(dev_dir, "/ports/", number);
  std::string where = absl::StrCat("rdma ", device, " port ", number);
  v1::RdmaPort& port = *dev.add_ports();
  port.set_port(number);
  port.set_roce_v2_gid_index(-1);
  auto read = [&](const char* file) -> std::optional<std::string> {
    absl::StatusOr<std::string> text = ReadTrimmed(absl::StrCat(port_dir, "/", file));
    if (text.ok()) return *text;
    out.add_unavailable(absl::StrCat(where, ": ", file, ": ", text.status().message()));
    return std::nullopt;
  };
  if (std::optional<std::string> s = read("state")) port.set_state(AfterCode(*s));
  if (std::optional<std::string> s = read("phys_state")) port.set_phys_state(AfterCode(*s));
  if (std::optional<std::string> s = read("link_layer")) port.set_link_layer(*s);
  if (std::optional<std::string> s = read("rate")) {
    port.set_rate(*s);
    port.set_rate_gbps(RateGbps(*s));
  }
  ReadGids(port_dir, where, port, out);
  port.set_netdev(PortNetdev(dev_dir, port));
  if (port.link_layer() != "Ethernet") {
    // Only a RoCE port's MTU follows from a file (its netdev's); InfiniBand's comes from verbs.
    if (!ctx.live) out.add_unavailable(absl::StrCat(where, ": active MTU: only verbs tell it"));
    return;
  }
  std::error_code ec;
  uint32_t table_length = 0;
  for (const auto& entry : std::filesystem::directory_iterator(port_dir + "/gids", ec)) {
    uint32_t n = 0;
    if (absl::SimpleAtoi(entry.path().filename().string(), &n)) {
      table_length = std::max(table_length, n + 1);
    }
  }
  port.set_roce_v2_gid_index(NcclRoceV2GidIndex(port, table_length));
  if (port.netdev().empty()) {
    out.add_unavailable(absl::StrCat(where, ": active MTU: no netdev found for the port"));
    return;
  }
  std::string mtu_path = Under(ctx.root, absl::StrCat("/sys/class/net/", port.netdev(), "/mtu"));
  absl::StatusOr<std::string> mtu_text = ReadTrimmed(mtu_path);
  uint32_t mtu = 0;
  if (mtu_text.ok() && absl::SimpleAtoi(*mtu_text, &mtu)) {
    port.set_active_mtu(IboeMtu(mtu));
  } else {
    out.add_unavailable(absl::StrCat(where, ": active MTU: ",
                                     mtu_text.ok()
                                         ? absl::StrCat(mtu_path, ": not a number: ", *mtu_text)
                                         : std::string(mtu_text.status().message())));
  }
}

// The names the kernel's ib_port_state_str() writes after the code, indexed by ibv_port_state.
constexpr std::array<absl::string_view, 6> kPortStates = {"NOP",   "DOWN",   "INIT",
                                                          "ARMED", "ACTIVE", "ACTIVE_DEFER"};

void CheckWithVerbs(const VerbsLibrary& verbs, const std::vector<std::string>& verbs_devices,
                    v1::RdmaDevice& dev, v1::NodeProbe& out) {
  if (std::find(verbs_devices.begin(), verbs_devices.end(), dev.name()) == verbs_devices.end()) {
    out.add_unavailable(
        absl::StrCat("rdma verbs: ", dev.name(), " is in sysfs but not in ibv_get_device_list"));
    return;
  }
  for (v1::RdmaPort& port : *dev.mutable_ports()) {
    std::vector<uint32_t> indexes;
    for (const v1::RdmaGid& g : port.gids()) indexes.push_back(g.index());
    std::vector<ibv_gid> gids;
    absl::StatusOr<VerbsPort> attr =
        verbs.QueryPort(dev.name(), static_cast<uint8_t>(port.port()), indexes, &gids);
    if (!attr.ok()) {
      out.add_unavailable(absl::StrCat("rdma verbs: ", attr.status().message()));
      continue;
    }
    port.set_verbs_checked(true);
    absl::string_view state = attr->state >= 0 && attr->state < static_cast<int>(kPortStates.size())
                                  ? kPortStates[attr->state]
                                  : "unknown";
    if (state != port.state()) {
      port.add_verbs_mismatches(
          absl::StrCat("state: sysfs ", port.state(), ", verbs ", state, " (", attr->state, ")"));
    }
    // ibv_devinfo prints IBV_LINK_LAYER_UNSPECIFIED (0) as InfiniBand, as we do.
    absl::string_view layer =
        attr->link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
    if (layer != port.link_layer()) {
      port.add_verbs_mismatches(
          absl::StrCat("link_layer: sysfs ", port.link_layer(), ", verbs ", layer));
    }
    if (port.active_mtu() == 0) {
      port.set_active_mtu(attr->active_mtu);
    } else if (port.active_mtu() != attr->active_mtu) {
      port.add_verbs_mismatches(absl::StrCat("active_mtu: from the netdev's MTU ",
                                             port.active_mtu(), ", verbs ", attr->active_mtu));
    }
    for (int i = 0; i < port.gids_size(); ++i) {
      std::optional<Gid> sysfs = ParseGid(port.gids(i).gid());
      if (!sysfs || std::memcmp(sysfs->data(), gids[i].raw, sysfs->size()) != 0) {
        std::string hex;
        for (int b = 0; b < 16; b += 2) {
          absl::StrAppend(&hex, b == 0 ? "" : ":",
                          absl::StrFormat("%02x%02x", gids[i].raw[b], gids[i].raw[b + 1]));
        }
        port.add_verbs_mismatches(absl::StrCat("gid ", port.gids(i).index(), ": sysfs ",
                                               port.gids(i).gid(), ", verbs ", hex));
      }
    }
  }
}

}  // namespace

void ProbeRdma(const ProbeContext& ctx, v1::NodeProbe* out) {
  std::string class_dir = Under(ctx.root, "/sys/class/infiniband");
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(class_dir, ec)) {
    names.push_back(entry.path().filename());
  }
  if (ec) {
    // No class directory means no RDMA driver is loaded, so the node has no RDMA device.
    out->add_unavailable(
        absl::StrCat("rdma: ", class_dir, ": ", ec.message(), " (no RDMA device)"));
    return;
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    v1::RdmaDevice& dev = *out->add_rdma();
    dev.set_name(name);
    std::string dev_dir = absl::StrCat(class_dir, "/", name);
    std::vector<uint32_t> ports = NumberedEntries(dev_dir + "/ports", ec);
    if (ec) {
      out->add_unavailable(absl::StrCat("rdma ", name, ": ", dev_dir, "/ports: ", ec.message()));
      continue;
    }
    for (uint32_t number : ports) ReadPort(ctx, name, dev_dir, number, dev, *out);
  }
  if (!ctx.live || names.empty()) return;
  absl::StatusOr<VerbsLibrary> verbs = VerbsLibrary::Load();
  absl::StatusOr<std::vector<std::string>> verbs_devices =
      verbs.ok() ? verbs->DeviceNames() : absl::StatusOr<std::vector<std::string>>(verbs.status());
  if (!verbs_devices.ok()) {
    out->add_unavailable(absl::StrCat("rdma verbs: ", verbs_devices.status().message(),
                                      " (sysfs values reported unchecked)"));
    return;
  }
  for (v1::RdmaDevice& dev : *out->mutable_rdma())
    CheckWithVerbs(*verbs, *verbs_devices, dev, *out);
}

}  // namespace fleet::agent
