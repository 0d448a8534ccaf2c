// Placement of groups on nodes.
#include "launch/placement.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/host_port.h"

namespace fleet::controller {
namespace {

// Whether IPv4 `ip` lies in "ADDR/PREFIX".
bool InSubnet(const std::string& ip, const std::string& cidr) {
  size_t slash = cidr.find('/');
  int prefix = 0;
  in_addr a{}, net{};
  if (slash == std::string::npos || !absl::SimpleAtoi(cidr.substr(slash + 1), &prefix) ||
      prefix < 0 || prefix > 32 || ::inet_pton(AF_INET, ip.c_str(), &a) != 1 ||
      ::inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &net) != 1) {
    return false;
  }
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (ntohl(a.s_addr) & mask) == (ntohl(net.s_addr) & mask);
}

// From the RDMA probe: every device with an ACTIVE port is used (both halves of a CX-7 port
// appear as two devices, and NCCL needs both for the full rate). The fabric interface and
// address are those of the port whose RoCE v2 GID holds the advertised address, else of the
// first active device by name (case-insensitive: rocep1s0f1 before roceP2p1s0f1).
void ApplyRdmaProbe(const v1::NodeProbe& probe, engine::NodeView& view) {
  std::vector<const v1::RdmaDevice*> devices;
  for (const v1::RdmaDevice& d : probe.rdma()) devices.push_back(&d);
  std::sort(devices.begin(), devices.end(), [](const v1::RdmaDevice* a, const v1::RdmaDevice* b) {
    return absl::AsciiStrToLower(a->name()) < absl::AsciiStrToLower(b->name());
  });
  bool chosen = false;
  bool matched_address = false;
  for (const v1::RdmaDevice* d : devices) {
    const v1::RdmaPort* active = nullptr;
    for (const v1::RdmaPort& port : d->ports()) {
      if (port.state() == "ACTIVE") active = &port;
    }
    if (active == nullptr) continue;
    view.rdma_devices.push_back(d->name());
    std::string ipv4;
    for (const v1::RdmaGid& g : active->gids()) {
      if (static_cast<int32_t>(g.index()) == active->roce_v2_gid_index()) ipv4 = g.ipv4();
    }
    const bool holds_address = !ipv4.empty() && ipv4 == view.address;
    if (matched_address || (chosen && !holds_address)) continue;
    chosen = true;
    matched_address = holds_address;
    if (!active->netdev().empty()) view.fabric_interface = active->netdev();
    if (!ipv4.empty()) view.fabric_address = ipv4;
  }
}

}  // namespace

engine::NodeView ToNodeView(const v1::Node& node) {
  engine::NodeView view;
  view.name = node.identity().name();
  view.node_id = node.identity().node_id();
  view.address = HostOf(node.address());
  view.fabric_address = view.address;
  // The interface holding the address, else the one whose IPv4 subnet contains it (a node
  // advertising 127.0.0.2 is reached over lo, which lists 127.0.0.1/8).
  std::string containing;
  for (const v1::NetworkInterface& itf : node.facts().interfaces()) {
    for (const std::string& cidr : itf.addresses()) {
      if (cidr.substr(0, cidr.find('/')) == view.address) view.fabric_interface = itf.name();
      if (containing.empty() && InSubnet(view.address, cidr)) containing = itf.name();
    }
  }
  if (view.fabric_interface.empty()) view.fabric_interface = containing;
  if (node.probe().rdma_size() > 0) {
    ApplyRdmaProbe(node.probe(), view);
  } else {
    // No RDMA probe: every device the node lists is taken as usable.
    view.rdma_devices.assign(node.facts().rdma_devices().begin(),
                             node.facts().rdma_devices().end());
  }
  view.has_gpus = node.facts().nvidia_devices() || node.probe().gpu().gpus_size() > 0;
  view.has_infiniband = node.facts().infiniband_devices();
  return view;
}

absl::StatusOr<std::vector<std::vector<engine::NodeView>>> PlaceReplicas(
    const engine::Recipe& recipe, int size, const std::vector<engine::NodeView>& candidates,
    const std::vector<std::string>& preferred, const std::vector<std::string>& busy) {
  const int needed = size * recipe.replicas;
  std::vector<std::string> names;
  for (const engine::NodeView& n : candidates) names.push_back(n.name);
  std::sort(names.begin(), names.end());
  auto describe_shortage = [&](absl::string_view what) {
    std::string why = absl::StrCat(
        Where(recipe, recipe.nodes ? "nodes" : "defaults.tensor_parallel"), what, " needs ", needed,
        " node", needed == 1 ? "" : "s",
        recipe.replicas > 1 ? absl::StrCat(" (", recipe.replicas, " replicas of ", size, ")") : "",
        "; ", names.size(), " Ready and free");
    if (!names.empty()) absl::StrAppend(&why, " (", absl::StrJoin(names, ", "), ")");
    if (!busy.empty()) {
      std::vector<std::string> sorted = busy;
      std::sort(sorted.begin(), sorted.end());
      absl::StrAppend(&why, "; busy with other groups: ", absl::StrJoin(sorted, ", "));
    }
    absl::StrAppend(&why,
                    ". Add nodes (`fleet nodes` lists them), stop a group with `fleet stop`, or "
                    "make the group smaller (",
                    recipe.nodes ? "`nodes`" : "-o tensor_parallel=N", ")");
    return absl::FailedPreconditionError(why);
  };

  std::vector<engine::NodeView> chosen;
  if (!recipe.placement.empty()) {
    if (static_cast<int>(recipe.placement.size()) != needed) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(recipe, "placement"), "placement lists ", recipe.placement.size(),
                       " nodes but the recipe needs ", needed, "; list exactly ", needed));
    }
    for (const std::string& want : recipe.placement) {
      auto it = std::find_if(candidates.begin(), candidates.end(),
                             [&](const engine::NodeView& n) { return n.name == want; });
      if (it == candidates.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat(Where(recipe, "placement"), "placement names node \"", want,
                         "\", which is not Ready and free (Ready and free: ",
                         names.empty() ? "none" : absl::StrJoin(names, ", "),
                         busy.empty() ? "" : absl::StrCat("; busy: ", absl::StrJoin(busy, ", ")),
                         "); check `fleet nodes`"));
      }
      chosen.push_back(*it);
    }
  } else {
    if (static_cast<int>(candidates.size()) < needed) {
      std::string what = recipe.nodes
                             ? absl::StrCat("nodes: ", *recipe.nodes)
                             : absl::StrCat("tensor_parallel x pipeline_parallel = ", size);
      return describe_shortage(what);
    }
    std::vector<engine::NodeView> ordered = candidates;
    auto rank_of = [&](const engine::NodeView& n) {
      auto it = std::find(preferred.begin(), preferred.end(), n.name);
      return it == preferred.end() ? preferred.size() : static_cast<size_t>(it - preferred.begin());
    };
    std::sort(ordered.begin(), ordered.end(),
              [&](const engine::NodeView& a, const engine::NodeView& b) {
                size_t ra = rank_of(a), rb = rank_of(b);
                if (ra != rb) return ra < rb;
                return a.name < b.name;
              });
    chosen.assign(ordered.begin(), ordered.begin() + needed);
  }
  std::vector<std::vector<engine::NodeView>> replicas;
  for (int r = 0; r < recipe.replicas; ++r) {
    replicas.emplace_back(chosen.begin() + r * size, chosen.begin() + (r + 1) * size);
  }
  return replicas;
}

}  // namespace fleet::controller
