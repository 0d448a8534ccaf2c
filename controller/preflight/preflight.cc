// Preflight policy: the checks of a planned group against its nodes' probes, and the check of
// the engine's log after launch.
#include "controller/preflight/preflight.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "launch/docker_run.h"

namespace fleet::controller {
namespace {

constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

// The NCCL every fix recommends: DESIGN.md's cure for 2.28.x wedging long generations at 4 or
// more ranks.
constexpr absl::string_view kGoodNccl = "2.30.4";

// Rows come in this order, then by rank.
constexpr absl::string_view kCheckOrder[] = {
    "nccl",       "nccl-same", "nccl-2.28", "memlock", "shm",    "rdma-device",
    "rdma-port",  "rdma-gid",  "rdma-rate", "mtu",     "subnet", "gpu",
    "gpu-driver", "gpu-cuda",  "image",     "model",   "disk",   "cache-dirs"};

int CheckIndex(absl::string_view check) {
  for (size_t i = 0; i < std::size(kCheckOrder); ++i) {
    if (kCheckOrder[i] == check) return static_cast<int>(i);
  }
  return static_cast<int>(std::size(kCheckOrder));
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes == kUnlimited) return "unlimited";
  constexpr std::pair<uint64_t, absl::string_view> kUnits[] = {{uint64_t{1} << 40, "TiB"},
                                                               {uint64_t{1} << 30, "GiB"},
                                                               {uint64_t{1} << 20, "MiB"},
                                                               {uint64_t{1} << 10, "KiB"}};
  for (const auto& [size, unit] : kUnits) {
    if (bytes < size) continue;
    if (bytes % size == 0) return absl::StrCat(bytes / size, " ", unit);
    return absl::StrFormat("%.1f %s", static_cast<double>(bytes) / static_cast<double>(size), unit);
  }
  return absl::StrCat(bytes, " bytes");
}

// The last value of `name` in the spec's environment (a later entry wins, as at launch).
std::optional<std::string> Env(const v1::ShardSpec& spec, absl::string_view name) {
  std::optional<std::string> value;
  for (const v1::EnvVar& var : spec.env()) {
    if (var.name() == name) value = var.value();
  }
  return value;
}

// ---- Probe sections that could not be read ----

enum class Section { kNccl, kLimits, kRdma, kNetwork, kAddresses, kGpu, kImage, kModel, kDisk };

// The words an `unavailable` line starts with ("gpu: ...", "rdma devices: ...") per section.
// "probe" is the controller's own line for an agent that did not answer: every section.
std::vector<absl::string_view> SectionKeys(Section section) {
  switch (section) {
    case Section::kNccl:
      return {"nccl"};
    case Section::kLimits:
      return {"limits", "memlock", "shm"};
    case Section::kRdma:
      return {"rdma"};
    case Section::kNetwork:
      return {"network", "interfaces"};
    case Section::kAddresses:
      return {"network", "interfaces", "interface"};
    case Section::kGpu:
      return {"gpu", "nvml", "cuda"};
    case Section::kImage:
      return {"image", "docker"};
    case Section::kModel:
      return {"model"};
    case Section::kDisk:
      return {"disk"};
  }
  return {};
}

absl::string_view VisibleFix(Section section) {
  switch (section) {
    case Section::kNccl:
      return "make libnccl.so.2 loadable the way the shard loads it (install NCCL in the image, "
             "or set LD_LIBRARY_PATH/LD_PRELOAD in the recipe's env) and probe again";
    case Section::kLimits:
      return "run the agent on the live system (root /) so it can read RLIMIT_MEMLOCK and "
             "/dev/shm, and probe again";
    case Section::kRdma:
      return "load the RDMA driver (`modprobe mlx5_ib`) until `rdma link show` lists the "
             "devices, and let the agent read /sys/class/infiniband";
    case Section::kNetwork:
    case Section::kAddresses:
      return "run the agent on the live system (root /) so it can read /sys/class/net and the "
             "interface addresses, and probe again";
    case Section::kGpu:
      return "install the NVIDIA driver so the agent can dlopen libnvidia-ml.so.1, and run it "
             "where /dev/nvidia* is visible";
    case Section::kImage:
      return "start dockerd on the node and let the agent's user run `docker image inspect` "
             "(the docker group)";
    case Section::kModel:
      return "let the agent read the model directory at the same path on every node, or copy "
             "it there with `fleet stage model`";
    case Section::kDisk:
      return "create the path or let the agent's user stat it, and probe again";
  }
  return "";
}

// The `unavailable` line that hides `section` on this node, if any.
std::optional<std::string> NotProbed(const v1::NodeProbe& probe, Section section) {
  std::vector<absl::string_view> keys = SectionKeys(section);
  keys.push_back("probe");
  for (const std::string& line : probe.unavailable()) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string head =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(absl::string_view(line).substr(0, colon)));
    for (absl::string_view key : keys) {
      if (head == key || absl::StartsWith(head, absl::StrCat(key, " "))) return line;
    }
  }
  return std::nullopt;
}

// ---- Versions ----

absl::StatusOr<std::vector<int>> ParseVersion(absl::string_view text) {
  absl::string_view v = absl::StripAsciiWhitespace(text);
  // "2.30.4+cuda13.0" (NCCL's banner) and "2.30.4-1" (a package release) compare as 2.30.4.
  v = v.substr(0, std::min(v.find('+'), v.find('-')));
  std::vector<absl::string_view> parts = absl::StrSplit(v, '.');
  if (v.empty() || parts.size() > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a version such as 2.30.4"));
  }
  std::vector<int> out(3, 0);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].empty() || !std::all_of(parts[i].begin(), parts[i].end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(parts[i], &out[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" is not a version such as 2.30.4"));
    }
  }
  return out;
}

bool SameNccl(absl::string_view a, absl::string_view b) {
  absl::StatusOr<std::vector<int>> va = ParseVersion(a);
  absl::StatusOr<std::vector<int>> vb = ParseVersion(b);
  if (!va.ok() || !vb.ok()) return a == b;
  return *va == *vb;
}

// ---- IPv4 ----

std::optional<uint32_t> ParseIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 4) return std::nullopt;
  uint32_t addr = 0;
  for (absl::string_view part : parts) {
    uint32_t octet = 0;
    if (part.empty() || !absl::SimpleAtoi(part, &octet) || octet > 255) return std::nullopt;
    addr = (addr << 8) | octet;
  }
  return addr;
}

std::string FormatIpv4(uint32_t addr) {
  return absl::StrCat(addr >> 24, ".", (addr >> 16) & 255, ".", (addr >> 8) & 255, ".", addr & 255);
}

// ---- Fabric of one rank ----

struct UsedDevice {
  std::string name;
  uint32_t port = 0;  // 0: NCCL_IB_HCA named no port, so NCCL uses each active one
};

// The RDMA devices NCCL will use: NCCL_IB_HCA without its leading "=" (exact match) or "^"
// (exclusion) and ":port" suffixes. Empty when RDMA is off (unset, or NCCL_IB_DISABLE=1).
std::vector<UsedDevice> UsedRdma(const PreflightNode& node) {
  std::optional<std::string> hca = Env(node.spec, "NCCL_IB_HCA");
  if (!hca.has_value() || Env(node.spec, "NCCL_IB_DISABLE") == "1") return {};
  absl::string_view list = *hca;
  const bool exclude = absl::ConsumePrefix(&list, "^");
  absl::ConsumePrefix(&list, "=");
  std::vector<UsedDevice> named;
  for (absl::string_view entry : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    UsedDevice device;
    std::vector<absl::string_view> parts = absl::StrSplit(entry, absl::MaxSplits(':', 1));
    device.name = std::string(parts[0]);
    if (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &device.port)) device.port = 0;
    named.push_back(std::move(device));
  }
  if (!exclude) return named;
  std::vector<UsedDevice> used;
  for (const v1::RdmaDevice& device : node.probe.rdma()) {
    if (std::none_of(named.begin(), named.end(),
                     [&](const UsedDevice& d) { return d.name == device.name(); })) {
      used.push_back({device.name(), 0});
    }
  }
  return used;
}

const v1::RdmaDevice* FindDevice(const v1::NodeProbe& probe, absl::string_view name) {
  for (const v1::RdmaDevice& device : probe.rdma()) {
    if (device.name() == name) return &device;
  }
  return nullptr;
}

// The port NCCL uses: the one named, else the device's first ACTIVE port, else its first.
const v1::RdmaPort* FindPort(const v1::RdmaDevice& device, uint32_t port) {
  for (const v1::RdmaPort& p : device.ports()) {
    if (port != 0 && p.port() == port) return &p;
    if (port == 0 && absl::StrContains(p.state(), "ACTIVE")) return &p;
  }
  if (port == 0 && device.ports_size() > 0) return &device.ports(0);
  return nullptr;
}

bool PortUp(const v1::RdmaPort& port) {
  return absl::StrContains(port.state(), "ACTIVE") &&
         absl::StrContains(port.phys_state(), "LinkUp");
}

const v1::ProbedInterface* FindInterface(const v1::NodeProbe& probe, absl::string_view name) {
  for (const v1::ProbedInterface& iface : probe.interfaces()) {
    if (iface.name() == name) return &iface;
  }
  return nullptr;
}

// The interface backing an RDMA port: what ibdev2netdev printed, else the interface that lists
// the device.
std::string NetdevOf(const v1::NodeProbe& probe, const v1::RdmaDevice& device,
                     const v1::RdmaPort& port) {
  if (!port.netdev().empty()) return port.netdev();
  for (const v1::ProbedInterface& iface : probe.interfaces()) {
    for (const std::string& name : iface.rdma_devices()) {
      if (name == device.name()) return iface.name();
    }
  }
  return "";
}

// The interfaces named by NCCL_SOCKET_IFNAME ("=eth0,eth1" exact, "eth" a prefix; "^" excludes
// and names nothing to check).
std::vector<std::string> SocketInterfaces(const v1::ShardSpec& spec) {
  std::optional<std::string> value = Env(spec, "NCCL_SOCKET_IFNAME");
  if (!value.has_value() || absl::StartsWith(*value, "^")) return {};
  absl::string_view list = *value;
  absl::ConsumePrefix(&list, "=");
  std::vector<std::string> out;
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    out.emplace_back(absl::StripAsciiWhitespace(name));
  }
  return out;
}

// One end of a fabric link on one node: link i of a rank is its i-th NCCL_IB_HCA device (both
// halves of a CX-7 port are cabled to the same halves of the peer), or its socket interface.
struct LinkEnd {
  std::string label;   // "rocep1s0f1" or "enp1s0f1np1"
  std::string netdev;  // "" when unknown
  const v1::RdmaPort* port = nullptr;
  std::string ipv4;  // "" when none
  int prefix = -1;   // -1 when the address is on no probed interface
};

// The prefix length of `ipv4` on `iface`, from its "ADDR/PREFIX" addresses.
int PrefixOf(const v1::ProbedInterface* iface, absl::string_view ipv4) {
  if (iface == nullptr) return -1;
  for (const std::string& address : iface->addresses()) {
    std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(address, '/');
    int prefix = 0;
    if (parts.first == ipv4 && absl::SimpleAtoi(parts.second, &prefix) && prefix >= 0 &&
        prefix <= 32) {
      return prefix;
    }
  }
  return -1;
}

std::vector<LinkEnd> Links(const PreflightNode& node) {
  std::vector<LinkEnd> links;
  std::vector<UsedDevice> used = UsedRdma(node);
  for (const UsedDevice& d : used) {
    LinkEnd& end = links.emplace_back();
    end.label = d.name;
    const v1::RdmaDevice* device = FindDevice(node.probe, d.name);
    end.port = device == nullptr ? nullptr : FindPort(*device, d.port);
    if (end.port == nullptr) continue;
    end.netdev = NetdevOf(node.probe, *device, *end.port);
    for (const v1::RdmaGid& gid : end.port->gids()) {
      if (static_cast<int32_t>(gid.index()) == end.port->roce_v2_gid_index()) end.ipv4 = gid.ipv4();
    }
    end.prefix = PrefixOf(FindInterface(node.probe, end.netdev), end.ipv4);
  }
  if (!used.empty()) return links;
  for (const std::string& name : SocketInterfaces(node.spec)) {
    LinkEnd& end = links.emplace_back();
    end.label = name;
    end.netdev = name;
    const v1::ProbedInterface* iface = FindInterface(node.probe, name);
    if (iface == nullptr) continue;
    for (const std::string& address : iface->addresses()) {
      absl::string_view addr = address;
      addr = addr.substr(0, addr.find('/'));
      if (ParseIpv4(addr).has_value()) {
        end.ipv4 = std::string(addr);
        end.prefix = PrefixOf(iface, addr);
        break;
      }
    }
  }
  return links;
}

// The value most ranks have (ties: the lowest rank's), so that a differing node is the one
// named. `values` holds (rank, value) of the ranks that have one.
std::string Majority(const std::vector<std::pair<int, std::string>>& values) {
  std::map<std::string, int> counts;
  for (const auto& [rank, value] : values) ++counts[value];
  std::string best;
  int best_count = 0;
  for (const auto& [rank, value] : values) {
    if (counts[value] > best_count) {
      best = value;
      best_count = counts[value];
    }
  }
  return best;
}

// Runs every check of one group and collects the rows; nodes_ index = rank.
class Checker {
 public:
  Checker(const engine::Recipe& recipe, const std::vector<PreflightNode>& nodes)
      : recipe_(recipe), req_(recipe.requirements), nodes_(nodes) {}

  std::vector<CheckRow> Run() {
    CheckNccl();
    for (int r = 0; r < Size(); ++r) {
      CheckMemlock(r);
      CheckShm(r);
      CheckRdmaDevice(r);
      CheckRdma(r);
      CheckMtu(r);
      CheckGpu(r);
      CheckDisk(r);
      CheckCacheDirs(r);
    }
    CheckRates();
    CheckSubnets();
    CheckSame(
        "gpu-driver", Section::kGpu, Verdict::kWarn,
        [](const v1::NodeProbe& p) { return p.gpu().driver_version(); },
        "install one NVIDIA driver version on every node so kernels and NCCL behave the "
        "same on each rank");
    CheckSame(
        "gpu-cuda", Section::kGpu, Verdict::kFail,
        [](const v1::NodeProbe& p) { return p.gpu().cuda_driver_version(); },
        "install a driver with the same CUDA version on every node: the image's CUDA "
        "runtime needs it on each rank");
    CheckImage();
    CheckModels();
    std::stable_sort(rows_.begin(), rows_.end(), [](const CheckRow& a, const CheckRow& b) {
      return std::make_pair(CheckIndex(a.check), a.rank) <
             std::make_pair(CheckIndex(b.check), b.rank);
    });
    return std::move(rows_);
  }

 private:
  int Size() const { return static_cast<int>(nodes_.size()); }

  std::string Name(int rank) const {
    const std::string& name = nodes_[rank].view.name;
    return name.empty() ? absl::StrCat("rank ", rank) : name;
  }

  bool Docker(int rank) const { return nodes_[rank].spec.runtime() == v1::SHARD_RUNTIME_DOCKER; }

  void Add(int rank, absl::string_view check, Verdict verdict, std::string observed,
           std::string expected, std::string fix = "") {
    rows_.push_back({Name(rank), std::string(check), verdict, std::move(observed),
                     std::move(expected), std::move(fix), rank});
  }

  // False, with a row, when the probe could not see `section` on this rank's node.
  bool Probed(int rank, Section section, absl::string_view check, bool required,
              absl::string_view expected) {
    std::optional<std::string> line = NotProbed(nodes_[rank].probe, section);
    if (!line.has_value()) return true;
    Add(rank, check, required ? Verdict::kFail : Verdict::kWarn,
        absl::StrCat("not probed: ", *line), std::string(expected),
        std::string(VisibleFix(section)));
    return false;
  }

  // "spark-a 2.30.4, spark-b 2.28.9".
  std::string ByNode(const std::vector<std::pair<int, std::string>>& values) const {
    return absl::StrJoin(values, ", ", [&](std::string* out, const std::pair<int, std::string>& v) {
      absl::StrAppend(out, Name(v.first), " ", v.second);
    });
  }

  // The first rank holding `value`.
  int Holder(const std::vector<std::pair<int, std::string>>& values,
             const std::string& value) const {
    for (const auto& [rank, v] : values) {
      if (v == value) return rank;
    }
    return 0;
  }

  // fleet-engine runs on GPUs (NCCL) only with --device cuda; otherwise on CPUs over Gloo.
  bool NativeOnGpu() const {
    if (recipe_.engine != "native" || nodes_.empty()) return false;
    const auto& argv = nodes_[0].spec.argv();
    for (int i = 0; i < argv.size(); ++i) {
      if (argv[i] == "--device=cuda") return true;
      if (argv[i] == "--device" && i + 1 < argv.size() && argv[i + 1] == "cuda") return true;
    }
    return false;
  }

  void CheckNccl() {
    // vLLM always uses NCCL, fleet-engine on GPUs; an `exec` command says so with requires.nccl.
    // Judging the NCCL of a command that never loads it would only block it.
    const bool unused =
        (recipe_.engine == "exec" || (recipe_.engine == "native" && !NativeOnGpu()));
    if (unused && req_.nccl.empty()) {
      const std::string why = recipe_.engine == "exec"
                                  ? "not used (engine exec, no requires.nccl)"
                                  : "not used (fleet-engine on CPUs talks over Gloo)";
      for (int r = 0; r < Size(); ++r) Add(r, "nccl", Verdict::kPass, why, "any version");
      return;
    }
    std::vector<std::pair<int, std::string>> versions;
    for (int r = 0; r < Size(); ++r) {
      const std::string expected = req_.nccl.empty() ? "any version" : req_.nccl;
      if (!Probed(r, Section::kNccl, "nccl", !req_.nccl.empty(), expected)) continue;
      const v1::NcclProbe& nccl = nodes_[r].probe.nccl();
      if (!nccl.error().empty()) {
        Add(r, "nccl", Verdict::kFail, nccl.error(), expected,
            "point VLLM_NCCL_SO_PATH in the recipe's env at a libnccl.so.2 that exists where the "
            "shard runs, or remove it");
        continue;
      }
      // The library is there and only its version unread: judging it would block a launch
      // that may well work, so the operator is told how to make the version visible.
      if (nccl.version().empty() && !nccl.version_unknown().empty()) {
        Add(r, "nccl", Verdict::kWarn,
            absl::StrCat(nccl.library(), ": version ", nccl.version_unknown()), expected,
            absl::StrCat("name the NCCL by a file that carries its version (LD_PRELOAD=/path/"
                         "libnccl.so.",
                         kGoodNccl,
                         " in the recipe's env), or use an image with glibc where "
                         "fleet-nccl-probe can ask it"));
        continue;
      }
      if (nccl.version().empty()) {
        Add(r, "nccl", req_.nccl.empty() ? Verdict::kWarn : Verdict::kFail,
            "not probed: the agent found no NCCL", expected,
            std::string(VisibleFix(Section::kNccl)));
        continue;
      }
      versions.emplace_back(r, nccl.version());
      if (req_.nccl.empty()) {
        Add(r, "nccl", Verdict::kPass, nccl.version(), expected);
        continue;
      }
      absl::StatusOr<bool> ok = NcclSatisfies(nccl.version(), req_.nccl);
      if (!ok.ok()) {
        Add(r, "nccl", Verdict::kFail, nccl.version(), expected,
            absl::StrCat("write requires.nccl as an operator and a version such as \">=", kGoodNccl,
                         "\" (", ok.status().message(), ")"));
      } else if (!*ok) {
        Add(r, "nccl", Verdict::kFail, nccl.version(), expected,
            absl::StrCat("install NCCL ", kGoodNccl,
                         " in the image, or pin it with LD_PRELOAD=/path/libnccl.so.", kGoodNccl,
                         " in the recipe's env (",
                         nccl.library().empty() ? "the probe found no library path"
                                                : absl::StrCat("the probe loaded ", nccl.library()),
                         ")"));
      } else {
        Add(r, "nccl", Verdict::kPass, nccl.version(), expected);
      }
    }

    if (versions.size() > 1) {
      const std::string reference = Majority(versions);
      for (const auto& [rank, version] : versions) {
        const std::string expected =
            absl::StrCat(reference, " (as on ", Name(Holder(versions, reference)), ")");
        if (SameNccl(version, reference)) {
          Add(rank, "nccl-same", Verdict::kPass, version, expected);
        } else {
          Add(rank, "nccl-same", Verdict::kFail, version, expected,
              absl::StrCat("use one NCCL on every rank (", ByNode(versions), "): install ",
                           kGoodNccl, " in the image or pin it with LD_PRELOAD=/path/libnccl.so.",
                           kGoodNccl));
        }
      }
    }

    // NCCL 2.28's wedge shows only with 4 or more ranks, so smaller groups keep 2.28.
    if (Size() >= 4) {
      for (const auto& [rank, version] : versions) {
        if (!absl::StartsWith(version, "2.28.")) continue;
        Add(rank, "nccl-2.28", Verdict::kFail, absl::StrCat(version, " with ", Size(), " ranks"),
            absl::StrCat("not 2.28.x at 4 or more ranks (", kGoodNccl, ")"),
            absl::StrCat("NCCL 2.28 wedges long generations at 4+ ranks; install ", kGoodNccl,
                         " in the image or pin it with LD_PRELOAD=/path/libnccl.so.", kGoodNccl));
      }
    }
  }

  // Docker: the container gets `--ulimit memlock=` the spec's value (-1 when unset or
  // unlimited). Whether runc may set it depends on dockerd's own limit ('error setting rlimit
  // type 8' from a rootless or limited dockerd), which is not probed; a node whose agent runs
  // with a finite hard limit likely gives docker.service the same default, so it gets a warn
  // naming dockerd's fix. Process: the shard gets the spec's value when the agent may grant it
  // (below its hard limit, or with CAP_SYS_RESOURCE), else the agent's hard limit, as the
  // process runtime does.
  void CheckMemlock(int rank) {
    const PreflightNode& node = nodes_[rank];
    const bool rdma = !UsedRdma(node).empty();
    // NCCL registers every buffer it sends over RDMA, more than any finite limit allows.
    const uint64_t needed = rdma ? kUnlimited : req_.memlock_bytes.value_or(0);
    const std::string expected =
        needed == 0 ? "any (no RDMA, no requires.memlock)"
                    : absl::StrCat(FormatBytes(needed), rdma ? " (RDMA is used)" : "");
    constexpr absl::string_view kRegMr =
        "NCCL's ibv_reg_mr fails with 'Cannot allocate memory' below it";
    const v1::LimitsProbe& limits = node.probe.limits();

    if (Docker(rank)) {
      const uint64_t container =
          node.spec.has_memlock_bytes() ? node.spec.memlock_bytes() : kUnlimited;
      const std::string observed =
          absl::StrCat("container --ulimit memlock=",
                       container == kUnlimited ? "-1 (unlimited)" : FormatBytes(container));
      if (container < needed) {
        Add(rank, "memlock", Verdict::kFail, observed, expected,
            absl::StrCat(kRegMr,
                         ": set `requires: {memlock: unlimited}` in the recipe so the "
                         "container gets --ulimit memlock=-1"));
        return;
      }
      // The container's limit comes from the spec, so unseen node limits are only a warn.
      if (!Probed(rank, Section::kLimits, "memlock", false, expected)) return;
      if (needed != 0 && limits.memlock_hard() < needed) {
        Add(rank, "memlock", Verdict::kWarn,
            absl::StrCat(observed, "; this node's hard limit is ",
                         FormatBytes(limits.memlock_hard()), " and dockerd's own is not probed"),
            expected,
            "if the container fails with 'error setting rlimit type 8', run dockerd with "
            "LimitMEMLOCK=infinity (`systemctl edit docker`) and restart it");
        return;
      }
      Add(rank, "memlock", Verdict::kPass, observed, expected);
      return;
    }

    if (!Probed(rank, Section::kLimits, "memlock", needed != 0, expected)) return;
    const uint64_t hard = limits.memlock_hard();
    constexpr absl::string_view kAgentFix =
        "run fleet-agent with LimitMEMLOCK=infinity in its systemd unit, or raise the hard "
        "memlock limit in /etc/security/limits.conf";
    if (node.spec.has_memlock_bytes()) {
      const uint64_t wanted = node.spec.memlock_bytes();
      if (wanted > hard && !limits.can_raise_memlock()) {
        Add(rank, "memlock", Verdict::kFail,
            absl::StrCat("the agent's hard limit is ", FormatBytes(hard),
                         " and it may not raise it to ", FormatBytes(wanted)),
            expected, absl::StrCat("the agent would refuse to start the shard: ", kAgentFix));
        return;
      }
      if (wanted < needed) {
        Add(rank, "memlock", Verdict::kFail, FormatBytes(wanted), expected,
            absl::StrCat(kRegMr, ": set `requires: {memlock: unlimited}` in the recipe"));
        return;
      }
      Add(rank, "memlock", Verdict::kPass, FormatBytes(wanted), expected);
      return;
    }
    const std::string observed = absl::StrCat(FormatBytes(hard), " (the agent's hard limit)");
    if (hard < needed) {
      Add(rank, "memlock", Verdict::kFail, observed, expected,
          limits.can_raise_memlock()
              ? absl::StrCat(kRegMr,
                             ": set `requires: {memlock: unlimited}` in the recipe (the "
                             "agent may raise its limit but keeps it when asked for none)")
              : absl::StrCat(kRegMr, ": ", kAgentFix));
      return;
    }
    Add(rank, "memlock", Verdict::kPass, observed, expected);
  }

  // A container reaches the node's RDMA devices only through `--device /dev/infiniband` (the
  // verbs and rdma_cm device files). Without it NCCL finds no IB device in the container and
  // quietly runs over TCP sockets, many times slower; the launch "works" and nobody is told.
  // The plan adds the device where the node reported /dev/infiniband with its facts
  // (NodeView::has_infiniband, ShardSpec::infiniband); no recipe key sets it.
  void CheckRdmaDevice(int rank) {
    const PreflightNode& node = nodes_[rank];
    if (!Docker(rank) || node.probe.rdma().empty()) return;
    std::vector<std::string> names;
    for (const v1::RdmaDevice& device : node.probe.rdma()) names.push_back(device.name());
    const std::string devices = absl::StrJoin(names, ", ");
    constexpr absl::string_view kExpected = "--device /dev/infiniband in the docker line";
    if (Env(node.spec, "NCCL_IB_DISABLE") == "1") {
      Add(rank, "rdma-device", Verdict::kPass,
          absl::StrCat("not needed: NCCL_IB_DISABLE=1 leaves ", devices, " unused"),
          std::string(kExpected));
      return;
    }
    const std::vector<std::string> line =
        engine::RenderDockerRun(node.spec, "CACHE_ROOT", "ENV_FILE", std::nullopt);
    bool passed = false;
    for (size_t i = 0; i < line.size(); ++i) {
      const absl::string_view word = line[i];
      const absl::string_view next = i + 1 < line.size() ? line[i + 1] : "";
      passed |= (word == "--device" && absl::StartsWith(next, "/dev/infiniband")) ||
                absl::StartsWith(word, "--device=/dev/infiniband");
    }
    if (passed) {
      Add(rank, "rdma-device", Verdict::kPass,
          absl::StrCat("--device /dev/infiniband for ", devices), std::string(kExpected));
      return;
    }
    const std::string name = Name(rank);
    const std::string fix =
        node.view.has_infiniband
            ? absl::StrCat(name,
                           " reports /dev/infiniband now but this plan was made without it: "
                           "plan the group again (`fleet apply` the recipe again)")
            : absl::StrCat(
                  "the plan passes /dev/infiniband only where the node reports it (no "
                  "recipe key sets it): load the verbs modules on ",
                  name,
                  " (`modprobe ib_uverbs rdma_ucm`, listed in /etc/modules-load.d/ to "
                  "keep them) until /dev/infiniband exists, then restart fleet-agent "
                  "there so it registers it (with `fleet plan --inventory`, set "
                  "`infiniband: true` for ",
                  name,
                  "); or set NCCL_IB_DISABLE=1 in the recipe's env to run NCCL over TCP "
                  "on purpose");
    Add(rank, "rdma-device", Verdict::kFail,
        absl::StrCat(name, " has RDMA devices ", devices,
                     " but its docker line lacks --device /dev/infiniband (NCCL would fall back "
                     "to TCP sockets)"),
        std::string(kExpected), fix);
  }

  // Both runtimes use the host's /dev/shm: docker runs the shard with --ipc host (NCCL's
  // shared-memory transport and vLLM's workers need the host's IPC namespace), which makes
  // docker ignore --shm-size.
  void CheckShm(int rank) {
    const std::string expected = req_.shm_bytes.has_value()
                                     ? absl::StrCat(">= ", FormatBytes(*req_.shm_bytes))
                                     : "any (no requires.shm)";
    if (!Probed(rank, Section::kLimits, "shm", req_.shm_bytes.has_value(), expected)) return;
    const uint64_t total = nodes_[rank].probe.limits().shm_total_bytes();
    const std::string observed = absl::StrCat("/dev/shm ", FormatBytes(total));
    if (req_.shm_bytes.has_value() && total < *req_.shm_bytes) {
      const uint64_t gib = (*req_.shm_bytes + (uint64_t{1} << 30) - 1) >> 30;
      Add(rank, "shm", Verdict::kFail, observed, expected,
          absl::StrCat("grow the host's /dev/shm (",
                       Docker(rank) ? "the container shares it "
                                      "through --ipc host"
                                    : "the shard uses it",
                       "): `mount -o remount,size=", gib,
                       "G /dev/shm`, and set that size in "
                       "/etc/fstab to keep it"));
      return;
    }
    Add(rank, "shm", Verdict::kPass, observed, expected);
  }

  void CheckRdma(int rank) {
    const PreflightNode& node = nodes_[rank];
    const std::vector<UsedDevice> used = UsedRdma(node);
    if (used.empty()) return;
    if (!Probed(rank, Section::kRdma, "rdma-port", true, "ACTIVE/LinkUp")) return;
    for (const UsedDevice& d : used) {
      const v1::RdmaDevice* device = FindDevice(node.probe, d.name);
      if (device == nullptr) {
        std::vector<std::string> names;
        for (const v1::RdmaDevice& dev : node.probe.rdma()) names.push_back(dev.name());
        Add(rank, "rdma-port", Verdict::kFail,
            absl::StrCat(d.name, " not found (the node has: ",
                         names.empty() ? "none" : absl::StrJoin(names, ", "), ")"),
            absl::StrCat(d.name, " ACTIVE/LinkUp"),
            "name the node's devices in NCCL_IB_HCA (`rdma link show` lists them), or load the "
            "RDMA driver if none are listed");
        continue;
      }
      const v1::RdmaPort* port = FindPort(*device, d.port);
      if (port == nullptr) {
        Add(rank, "rdma-port", Verdict::kFail, absl::StrCat(d.name, " has no port ", d.port),
            absl::StrCat(d.name, ":", d.port, " ACTIVE/LinkUp"),
            "name an existing port in NCCL_IB_HCA (`rdma link show` lists them)");
        continue;
      }
      const std::string label = absl::StrCat(d.name, " port ", port->port());
      const std::string netdev = NetdevOf(node.probe, *device, *port);
      if (!PortUp(*port)) {
        Add(rank, "rdma-port", Verdict::kFail,
            absl::StrCat(label, " ", port->state(), "/", port->phys_state()),
            absl::StrCat(label, " ACTIVE/LinkUp"),
            absl::StrCat("check the cable and bring the link up on both ends (`ip link set ",
                         netdev.empty() ? "IFACE" : netdev, " up`, then `rdma link show`)"));
        continue;
      }
      Add(rank, "rdma-port", Verdict::kPass,
          absl::StrCat(label, " ", port->state(), "/", port->phys_state()),
          absl::StrCat(label, " ACTIVE/LinkUp"));
      // InfiniBand addresses by LID; only RoCE needs a GID NCCL can route.
      if (port->link_layer() == "InfiniBand") continue;
      if (port->roce_v2_gid_index() < 0) {
        Add(rank, "rdma-gid", Verdict::kFail,
            absl::StrCat("no RoCE v2 GID with an IPv4 address on ", label), "a RoCE v2 IPv4 GID",
            absl::StrCat("give ", netdev.empty() ? "the port's interface" : netdev,
                         " an IPv4 address (netplan) so the kernel adds a RoCE v2 GID for it"));
        continue;
      }
      std::string ipv4;
      for (const v1::RdmaGid& gid : port->gids()) {
        if (static_cast<int32_t>(gid.index()) == port->roce_v2_gid_index()) ipv4 = gid.ipv4();
      }
      Add(rank, "rdma-gid", Verdict::kPass,
          absl::StrCat(label, " GID ", port->roce_v2_gid_index(), " ", ipv4), "a RoCE v2 IPv4 GID");
    }
  }

  // A differing rate works at the slower speed (each collective runs at its slowest link), and
  // the two ends of a cable always agree, so a difference means mis-cabling or a port that
  // negotiated down: warn, naming the rates.
  void CheckRates() {
    if (Size() < 2) return;
    std::vector<std::vector<LinkEnd>> links;
    size_t most = 0;
    for (int r = 0; r < Size(); ++r) {
      const bool rdma = !UsedRdma(nodes_[r]).empty();
      links.push_back(rdma && !NotProbed(nodes_[r].probe, Section::kRdma).has_value()
                          ? Links(nodes_[r])
                          : std::vector<LinkEnd>());
      most = std::max(most, links.back().size());
    }
    for (size_t i = 0; i < most; ++i) {
      std::vector<std::pair<int, std::string>> rates;
      for (int r = 0; r < Size(); ++r) {
        if (i >= links[r].size() || links[r][i].port == nullptr) continue;
        const v1::RdmaPort& port = *links[r][i].port;
        rates.emplace_back(
            r, port.rate_gbps() > 0 ? absl::StrCat(port.rate_gbps(), " Gb/s") : "unknown");
      }
      if (rates.size() < 2) continue;
      const std::string reference = Majority(rates);
      for (const auto& [rank, rate] : rates) {
        const std::string observed = absl::StrCat(links[rank][i].label, " ", rate);
        const std::string expected =
            absl::StrCat(reference, " (as on ", Name(Holder(rates, reference)), ")");
        if (rate == reference && rate != "unknown") {
          Add(rank, "rdma-rate", Verdict::kPass, observed, expected);
        } else {
          Add(rank, "rdma-rate", Verdict::kWarn, observed, expected,
              absl::StrCat("paired devices run at ", ByNode(rates),
                           ": check both ends are cabled to each other and negotiated the same "
                           "speed (`ethtool ",
                           links[rank][i].netdev.empty() ? "IFACE" : links[rank][i].netdev, "`)"));
        }
      }
    }
  }

  void CheckMtu(int rank) {
    if (!req_.mtu.has_value()) return;
    const PreflightNode& node = nodes_[rank];
    const std::string expected = absl::StrCat(*req_.mtu);
    if (!Probed(rank, Section::kNetwork, "mtu", true, expected)) return;
    std::vector<std::string> names;
    for (const LinkEnd& end : Links(node)) {
      if (!end.netdev.empty()) names.push_back(end.netdev);
    }
    for (const std::string& name : SocketInterfaces(node.spec)) names.push_back(name);
    std::vector<std::string> seen;
    for (const std::string& name : names) {
      if (std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
      seen.push_back(name);
      const v1::ProbedInterface* iface = FindInterface(node.probe, name);
      if (iface == nullptr) {
        Add(rank, "mtu", Verdict::kFail, absl::StrCat(name, " not found"), expected,
            absl::StrCat("set NCCL_SOCKET_IFNAME to an interface ", Name(rank), " has"));
        continue;
      }
      const std::string observed = absl::StrCat("MTU ", iface->mtu(), " on ", name);
      if (iface->mtu() != *req_.mtu) {
        Add(rank, "mtu", Verdict::kFail, observed, expected,
            absl::StrCat("set `mtu: ", *req_.mtu, "` in netplan for ", name,
                         " on both ends of the link, then `netplan apply`"));
      } else {
        Add(rank, "mtu", Verdict::kPass, observed, expected);
      }
    }
  }

  void CheckSubnets() {
    if (Size() < 2) return;
    std::vector<std::vector<LinkEnd>> links;
    size_t most = 0;
    for (int r = 0; r < Size(); ++r) {
      const bool rdma = !UsedRdma(nodes_[r]).empty();
      const bool seen = !NotProbed(nodes_[r].probe, Section::kAddresses).has_value() &&
                        (!rdma || !NotProbed(nodes_[r].probe, Section::kRdma).has_value());
      links.push_back(seen ? Links(nodes_[r]) : std::vector<LinkEnd>());
      most = std::max(most, links.back().size());
    }
    for (size_t i = 0; i < most; ++i) {
      // (rank, "192.168.100.0/24") of every end whose address and prefix are known.
      std::vector<std::pair<int, std::string>> nets;
      for (int r = 0; r < Size(); ++r) {
        if (i >= links[r].size()) continue;
        const LinkEnd& end = links[r][i];
        std::optional<uint32_t> addr = ParseIpv4(end.ipv4);
        if (!addr.has_value() || end.prefix < 0) continue;
        const uint32_t mask = end.prefix == 0 ? 0 : ~uint32_t{0} << (32 - end.prefix);
        nets.emplace_back(r, absl::StrCat(FormatIpv4(*addr & mask), "/", end.prefix));
      }
      if (nets.size() < 2) continue;
      const std::string reference = Majority(nets);
      const int holder = Holder(nets, reference);
      const LinkEnd& ref_end = links[holder][i];
      for (const auto& [rank, net] : nets) {
        const LinkEnd& end = links[rank][i];
        const std::string observed =
            absl::StrCat(end.ipv4, "/", end.prefix, " on ", end.netdev, " (", end.label, ")");
        const std::string expected = absl::StrCat(reference, " with ", Name(holder), "'s ",
                                                  ref_end.ipv4, "/", ref_end.prefix);
        if (net == reference) {
          Add(rank, "subnet", Verdict::kPass, observed, expected);
        } else {
          Add(rank, "subnet", Verdict::kFail, observed, expected,
              absl::StrCat(end.ipv4, "/", end.prefix, " (", Name(rank), ") and ", ref_end.ipv4, "/",
                           ref_end.prefix, " (", Name(holder),
                           ") are one link on different subnets: give ", end.netdev, " on ",
                           Name(rank), " an address in ", reference, " in netplan"));
        }
      }
    }
  }

  void CheckGpu(int rank) {
    const bool required = recipe_.engine == "vllm" || NativeOnGpu() || !req_.gpu_arch.empty();
    const std::string expected = req_.gpu_arch.empty() ? (required ? "a GPU" : "none needed")
                                                       : absl::StrCat("a GPU of ", req_.gpu_arch);
    // A recipe that needs no GPU gets no advice to install a driver it does not need.
    if (!required) {
      if (std::optional<std::string> why = NotProbed(nodes_[rank].probe, Section::kGpu)) {
        Add(rank, "gpu", Verdict::kPass, absl::StrCat("not probed (", *why, ")"), expected);
        return;
      }
    }
    if (!Probed(rank, Section::kGpu, "gpu", required, expected)) return;
    const v1::GpuProbe& gpu = nodes_[rank].probe.gpu();
    if (gpu.gpus_size() == 0) {
      if (required) {
        Add(rank, "gpu", Verdict::kFail, "no GPU", expected,
            "place the group on nodes whose NVIDIA GPU `nvidia-smi` lists, or load the driver "
            "on this one");
      } else {
        Add(rank, "gpu", Verdict::kPass, "no GPU", expected);
      }
      return;
    }
    std::vector<std::string> seen;
    bool wrong = false;
    for (const v1::GpuDevice& device : gpu.gpus()) {
      const std::string text = absl::StrCat(device.name(), " ", device.arch());
      if (std::find(seen.begin(), seen.end(), text) == seen.end()) seen.push_back(text);
      wrong |= !req_.gpu_arch.empty() && device.arch() != req_.gpu_arch;
    }
    const std::string observed = absl::StrJoin(seen, ", ");
    if (wrong) {
      Add(rank, "gpu", Verdict::kFail, observed, expected,
          absl::StrCat("place the group on nodes with ", req_.gpu_arch,
                       " GPUs, or change requires.gpu_arch to what the image's kernels are "
                       "built for"));
    } else {
      Add(rank, "gpu", Verdict::kPass, observed, expected);
    }
  }

  // One row per rank that reports `value`: the same as most ranks, or `differ` with `fix`.
  template <typename ValueOf>
  void CheckSame(absl::string_view check, Section section, Verdict differ, ValueOf value_of,
                 absl::string_view fix) {
    if (Size() < 2) return;
    std::vector<std::pair<int, std::string>> values;
    for (int r = 0; r < Size(); ++r) {
      if (NotProbed(nodes_[r].probe, section).has_value()) continue;
      std::string value = value_of(nodes_[r].probe);
      if (!value.empty()) values.emplace_back(r, std::move(value));
    }
    if (values.size() < 2) return;
    const std::string reference = Majority(values);
    for (const auto& [rank, value] : values) {
      const std::string expected =
          absl::StrCat(reference, " (as on ", Name(Holder(values, reference)), ")");
      if (value == reference) {
        Add(rank, check, Verdict::kPass, value, expected);
      } else {
        Add(rank, check, differ, value, expected, absl::StrCat(fix, " (", ByNode(values), ")"));
      }
    }
  }

  void CheckImage() {
    std::vector<std::pair<int, std::string>> ids;
    std::string image;
    for (int r = 0; r < Size(); ++r) {
      if (!Docker(r)) continue;
      const v1::ShardSpec& spec = nodes_[r].spec;
      image = spec.image();
      if (!Probed(r, Section::kImage, "image", true, spec.image())) continue;
      const v1::ImageProbe* found = nullptr;
      for (const v1::ImageProbe& probe : nodes_[r].probe.images()) {
        if (probe.image() == spec.image()) found = &probe;
      }
      const std::string pull = absl::StrCat("`docker pull ", spec.image(), "` on ", Name(r),
                                            ", or `fleet stage image ", spec.image(), "`");
      if (found == nullptr) {
        Add(r, "image", Verdict::kFail, absl::StrCat("not probed: ", spec.image()), spec.image(),
            "probe the node again with the recipe's image");
      } else if (!found->error().empty()) {
        Add(r, "image", Verdict::kFail, found->error(), spec.image(),
            absl::StrCat("start dockerd on ", Name(r), " (or use runtime: process), then ", pull));
      } else if (!found->present()) {
        Add(r, "image", Verdict::kFail, absl::StrCat(spec.image(), " not on ", Name(r)),
            spec.image(), pull);
      } else {
        ids.emplace_back(r, found->id());
      }
    }
    if (ids.empty()) return;
    const std::string reference = Majority(ids);
    const int holder = Holder(ids, reference);
    for (const auto& [rank, id] : ids) {
      const std::string expected = absl::StrCat(reference, " (as on ", Name(holder), ")");
      if (id == reference) {
        Add(rank, "image", Verdict::kPass, id, expected);
      } else {
        Add(rank, "image", Verdict::kFail, id, expected,
            absl::StrCat(image, " is a different build on ", Name(rank), ": `docker pull ", image,
                         "` there, or `fleet stage image ", image, "` to copy ", Name(holder),
                         "'s"));
      }
    }
  }

  void CheckModels() {
    std::vector<std::string> paths;
    for (const PreflightNode& node : nodes_) {
      for (const v1::ModelProbe& model : node.probe.models()) {
        if (std::find(paths.begin(), paths.end(), model.path()) == paths.end()) {
          paths.push_back(model.path());
        }
      }
    }
    if (paths.empty()) return;
    for (int r = 0; r < Size(); ++r) {
      Probed(r, Section::kModel, "model", true, "present, the same everywhere");
    }
    for (const std::string& path : paths) {
      // (rank, "SIZE bytes, sha256 HASH"): the size alone when a node did not hash it.
      std::vector<std::pair<int, std::string>> contents;
      bool all_hashed = true;
      std::vector<std::pair<int, const v1::ModelProbe*>> present;
      for (int r = 0; r < Size(); ++r) {
        if (NotProbed(nodes_[r].probe, Section::kModel).has_value()) continue;
        const v1::ModelProbe* found = nullptr;
        for (const v1::ModelProbe& model : nodes_[r].probe.models()) {
          if (model.path() == path) found = &model;
        }
        const std::string stage =
            absl::StrCat("`fleet stage model ", path, "` to copy it to ", Name(r));
        if (found == nullptr || !found->error().empty()) {
          Add(r, "model", Verdict::kFail,
              found == nullptr ? absl::StrCat("not probed: ", path) : found->error(), path, stage);
        } else if (!found->present()) {
          Add(r, "model", Verdict::kFail, absl::StrCat(path, " not on ", Name(r)), path, stage);
        } else {
          present.emplace_back(r, found);
          all_hashed &= !found->sha256().empty();
        }
      }
      for (const auto& [rank, model] : present) {
        contents.emplace_back(
            rank, absl::StrCat(model->total_bytes(), " bytes",
                               all_hashed ? absl::StrCat(", sha256 ", model->sha256()) : ""));
      }
      if (contents.empty()) continue;
      const std::string reference = Majority(contents);
      const int holder = Holder(contents, reference);
      for (const auto& [rank, content] : contents) {
        const std::string observed = absl::StrCat(path, ": ", content);
        const std::string expected = absl::StrCat(reference, " (as on ", Name(holder), ")");
        if (content == reference) {
          Add(rank, "model", Verdict::kPass, observed, expected);
        } else {
          Add(rank, "model", Verdict::kFail, observed, expected,
              absl::StrCat(path, " differs on ", Name(rank), ": `fleet stage model ", path,
                           "` to copy ", Name(holder), "'s"));
        }
      }
    }
  }

  // Paths that do not exist yet are left to the model and cache-dirs checks.
  void CheckDisk(int rank) {
    if (!req_.min_free_disk_bytes.has_value()) return;
    const uint64_t needed = *req_.min_free_disk_bytes;
    const std::string expected = absl::StrCat(">= ", FormatBytes(needed), " free");
    if (!Probed(rank, Section::kDisk, "disk", true, expected)) return;
    for (const v1::DiskProbe& disk : nodes_[rank].probe.disks()) {
      if (!disk.present()) continue;
      const std::string observed =
          absl::StrCat(FormatBytes(disk.free_bytes()), " free at ", disk.path());
      if (disk.free_bytes() < needed) {
        Add(rank, "disk", Verdict::kFail, observed, expected,
            absl::StrCat("free ", FormatBytes(needed - disk.free_bytes()), " on the disk of ",
                         disk.path(), ", or move the models and caches to a larger disk"));
      } else {
        Add(rank, "disk", Verdict::kPass, observed, expected);
      }
    }
  }

  // The agent bind-mounts each cache from STATE_DIR/cache/GROUP/NAME, NAME being the container
  // path with '/' as '_' and no leading '_' (launch/docker_run.cc), and creates it if missing;
  // a missing one only means the first start compiles its JIT kernels from scratch.
  void CheckCacheDirs(int rank) {
    const v1::ShardSpec& spec = nodes_[rank].spec;
    for (const std::string& dir : spec.cache_dirs()) {
      std::string name = dir;
      std::replace(name.begin(), name.end(), '/', '_');
      absl::string_view trimmed = name;
      while (absl::ConsumePrefix(&trimmed, "_")) {
      }
      const std::string suffix = absl::StrCat("/", trimmed);
      const v1::DiskProbe* found = nullptr;
      for (const v1::DiskProbe& disk : nodes_[rank].probe.disks()) {
        if (absl::EndsWith(disk.path(), suffix)) found = &disk;
      }
      if (found != nullptr && found->present()) {
        Add(rank, "cache-dirs", Verdict::kPass, absl::StrCat(dir, " at ", found->path()),
            "present");
        continue;
      }
      Add(rank, "cache-dirs", Verdict::kWarn,
          found == nullptr ? absl::StrCat(dir, ": not probed")
                           : absl::StrCat(dir, ": ", found->path(), " not created yet"),
          "present",
          "nothing to do: the agent creates it at launch, and the first start compiles JIT "
          "kernels from scratch (minutes)");
    }
  }

  const engine::Recipe& recipe_;
  const engine::Requirements& req_;
  const std::vector<PreflightNode>& nodes_;
  std::vector<CheckRow> rows_;
};

// The version in NCCL's banner ("NCCL version 2.30.4+cuda13.0") or vLLM's ("vLLM is using
// nccl==2.30.4") on `line`, or "".
std::string BannerVersion(absl::string_view line) {
  for (absl::string_view marker : {"NCCL version ", "vLLM is using nccl=="}) {
    const size_t at = line.find(marker);
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + marker.size());
    rest = rest.substr(0, rest.find_first_of(" \t\r"));
    if (!rest.empty() && absl::ascii_isdigit(static_cast<unsigned char>(rest[0]))) {
      return std::string(rest);
    }
  }
  return "";
}

// `line` from `marker` on, trimmed: "NET/IB : Using [0]rocep1s0f1:1/RoCE ...".
std::string From(absl::string_view line, size_t at) {
  return std::string(absl::StripAsciiWhitespace(line.substr(at)));
}

}  // namespace

absl::string_view VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kPass:
      return "pass";
    case Verdict::kWarn:
      return "warn";
    case Verdict::kFail:
      return "fail";
  }
  return "fail";
}

absl::StatusOr<bool> NcclSatisfies(absl::string_view version, absl::string_view constraint) {
  absl::StatusOr<std::vector<int>> have = ParseVersion(version);
  if (!have.ok()) return have.status();
  if (absl::StripAsciiWhitespace(constraint).empty()) {
    return absl::InvalidArgumentError("empty NCCL constraint; write one such as \">=2.30.4\"");
  }
  bool ok = true;
  for (absl::string_view part : absl::StrSplit(constraint, ',')) {
    absl::string_view rest = absl::StripAsciiWhitespace(part);
    std::string op = "==";
    for (absl::string_view candidate : {">=", "<=", "==", ">", "<", "="}) {
      if (absl::ConsumePrefix(&rest, candidate)) {
        op = candidate == "=" ? "==" : std::string(candidate);
        break;
      }
    }
    absl::StatusOr<std::vector<int>> want = ParseVersion(rest);
    if (!want.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("NCCL constraint \"", constraint, "\": ", want.status().message(),
                       "; write an operator (>=, >, ==, <=, <) and a version, e.g. \">=2.30.4\""));
    }
    const int cmp = *have < *want ? -1 : (*want < *have ? 1 : 0);
    if (op == ">=") ok &= cmp >= 0;
    if (op == ">") ok &= cmp > 0;
    if (op == "==") ok &= cmp == 0;
    if (op == "<=") ok &= cmp <= 0;
    if (op == "<") ok &= cmp < 0;
  }
  return ok;
}

std::vector<CheckRow> RunPreflight(const engine::Recipe& recipe,
                                   const std::vector<PreflightNode>& nodes) {
  return Checker(recipe, nodes).Run();
}

void Downgrade(std::vector<CheckRow>* rows) {
  for (CheckRow& row : *rows) {
    if (row.verdict != Verdict::kFail) continue;
    row.verdict = Verdict::kWarn;
    absl::StrAppend(&row.check, " (forced)");
  }
}

bool AnyFailure(const std::vector<CheckRow>& rows) {
  return std::any_of(rows.begin(), rows.end(),
                     [](const CheckRow& row) { return row.verdict == Verdict::kFail; });
}

// A transport row that could not be judged yet says so rather than being left out.
constexpr char kNoTransportLine[] = "not checked yet: no NET/IB or NET/Socket line in the log";
constexpr absl::string_view kTransportLineFix =
    "NCCL logs its transport once a communicator is set up, at NCCL_DEBUG=INFO with the NET "
    "subsystem (the plan sets NCCL_DEBUG_SUBSYS=INIT,NET unless the recipe chose otherwise); "
    "wait for the first request, or add NET to the recipe's NCCL_DEBUG_SUBSYS";

std::vector<CheckRow> CheckEngineLog(const std::string& node, const std::string& log,
                                     const std::string& expected_nccl, bool rdma_expected,
                                     const std::string& nccl_debug_file) {
  if (!nccl_debug_file.empty()) {
    const std::string observed =
        absl::StrCat("not checked: NCCL_DEBUG_FILE=", nccl_debug_file,
                     " sends NCCL's lines to a file the agent does not read");
    const std::string fix =
        "remove NCCL_DEBUG_FILE from the recipe's env so NCCL logs to the shard's log";
    return {{node, "engine-nccl", Verdict::kWarn, observed, "an NCCL banner", fix, -1},
            {node, "engine-transport", Verdict::kWarn, observed, "NCCL's transport line", fix, -1}};
  }
  std::vector<std::string> banners;
  std::string ib;      // "NET/IB : Using ..." or init.cc's "Using network IB"
  std::string socket;  // "NET/Socket : Using ..." or "Using network Socket"
  std::string no_ib;   // "NET/IB : No device found."
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    std::string version = BannerVersion(line);
    if (!version.empty() && std::find(banners.begin(), banners.end(), version) == banners.end()) {
      banners.push_back(std::move(version));
    }
    size_t at = 0;
    if (ib.empty() && (at = line.find("NET/IB : Using")) != absl::string_view::npos) {
      ib = From(line, at);
    } else if (ib.empty() && (at = line.find("Using network IB")) != absl::string_view::npos) {
      ib = From(line, at);
    }
    if (socket.empty() && (at = line.find("NET/Socket : Using")) != absl::string_view::npos) {
      socket = From(line, at);
    } else if (socket.empty() &&
               (at = line.find("Using network Socket")) != absl::string_view::npos) {
      socket = From(line, at);
    }
    if (no_ib.empty() && (at = line.find("NET/IB : No device found")) != absl::string_view::npos) {
      no_ib = From(line, at);
    }
  }

  std::vector<CheckRow> rows;
  auto add = [&](absl::string_view check, Verdict verdict, std::string observed,
                 std::string expected, std::string fix) {
    rows.push_back({node, std::string(check), verdict, std::move(observed), std::move(expected),
                    std::move(fix), -1});
  };
  const std::string expected_banner = expected_nccl.empty()
                                          ? "an NCCL banner"
                                          : absl::StrCat(expected_nccl, " (what preflight saw)");
  if (banners.empty()) {
    add("engine-nccl", Verdict::kWarn, "no NCCL banner in the log yet", expected_banner,
        "wait for the engine to set up NCCL; if it has, the recipe's NCCL_DEBUG is below INFO or "
        "its NCCL_DEBUG_SUBSYS hides INIT: remove them so the plan turns INIT and NET on");
  }
  for (const std::string& banner : banners) {
    const std::string observed = absl::StrCat("NCCL ", banner);
    if (expected_nccl.empty() || SameNccl(banner, expected_nccl)) {
      add("engine-nccl", Verdict::kPass, observed, expected_banner, "");
    } else {
      add("engine-nccl", Verdict::kFail, observed, expected_banner,
          absl::StrCat("the engine loaded another libnccl than the probe found (torch's bundled "
                       "NCCL usually wins): pin it with LD_PRELOAD=/path/libnccl.so.",
                       expected_nccl, " in the recipe's env, or install it in the image"));
    }
  }

  if (rdma_expected) {
    constexpr absl::string_view kExpected = "NET/IB over NCCL_IB_HCA's devices";
    const std::string fallback = !socket.empty() ? socket : no_ib;
    if (!fallback.empty()) {
      add("engine-transport", Verdict::kFail, fallback, std::string(kExpected),
          "NCCL fell back to TCP sockets: check that NCCL_IB_HCA's ports are ACTIVE (`fleet "
          "preflight`), that the shard has /dev/infiniband and memlock unlimited, and that "
          "NCCL_IB_DISABLE is not 1");
    } else if (!ib.empty()) {
      add("engine-transport", Verdict::kPass, ib, std::string(kExpected), "");
    } else {
      add("engine-transport", Verdict::kWarn, kNoTransportLine, std::string(kExpected),
          std::string(kTransportLineFix));
    }
  } else if (!ib.empty() || !socket.empty()) {
    add("engine-transport", Verdict::kPass, !ib.empty() ? ib : socket,
        "any transport (no NCCL_IB_HCA)", "");
  } else {
    add("engine-transport", Verdict::kWarn, kNoTransportLine, "any transport (no NCCL_IB_HCA)",
        std::string(kTransportLineFix));
  }
  return rows;
}

}  // namespace fleet::controller
