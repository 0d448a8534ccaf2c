// The `fleet` commands for probes and preflight.
#include "cli/probe_commands.h"

#include <cstdint>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/probes/probe_all.h"
#include "cli/config.h"
#include "cli/controller_api.h"
#include "cli/output.h"
#include "common/files.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

std::string Bytes(uint64_t n) {
  if (n == UINT64_MAX) return "unlimited";
  if (n >= (1ull << 30)) return absl::StrFormat("%.1f GiB", static_cast<double>(n) / (1ull << 30));
  if (n >= (1ull << 20)) return absl::StrFormat("%.1f MiB", static_cast<double>(n) / (1ull << 20));
  return absl::StrCat(n, " B");
}

std::string Indent(const std::string& table) {
  std::string out;
  size_t start = 0;
  while (start < table.size()) {
    size_t end = table.find('\n', start);
    if (end == std::string::npos) end = table.size();
    absl::StrAppend(&out, "  ", table.substr(start, end - start), "\n");
    start = end + 1;
  }
  return out;
}

// The address and GID NCCL would use on a port.
std::pair<std::string, std::string> RoceV2Gid(const v1::RdmaPort& port) {
  for (const v1::RdmaGid& g : port.gids()) {
    if (static_cast<int32_t>(g.index()) == port.roce_v2_gid_index()) return {g.ipv4(), g.gid()};
  }
  return {"-", "-"};
}

}  // namespace

std::string RenderProbe(const v1::NodeProbe& probe) {
  std::string out;
  absl::StrAppend(&out, "RDMA:\n");
  if (probe.rdma().empty()) {
    absl::StrAppend(&out, "  none\n");
  } else {
    Table t({"DEVICE", "PORT", "STATE", "PHYS", "LINK", "RATE", "MTU", "NETDEV", "ROCEV2-GID"});
    for (const v1::RdmaDevice& d : probe.rdma()) {
      for (const v1::RdmaPort& p : d.ports()) {
        auto [ipv4, gid] = RoceV2Gid(p);
        t.AddRow({d.name(), absl::StrCat(p.port()), p.state(), p.phys_state(), p.link_layer(),
                  p.rate(), p.active_mtu() ? absl::StrCat(p.active_mtu()) : "-",
                  p.netdev().empty() ? "-" : p.netdev(),
                  p.roce_v2_gid_index() >= 0 ? absl::StrCat(p.roce_v2_gid_index(), " (", ipv4, ")")
                                             : "none"});
      }
    }
    absl::StrAppend(&out, Indent(t.Render()));
  }
  absl::StrAppend(&out, "Interfaces:\n");
  Table itf({"NAME", "ADDRESSES", "MTU", "STATE", "SPEED", "FABRIC"});
  for (const v1::ProbedInterface& i : probe.interfaces()) {
    itf.AddRow(
        {i.name(), i.addresses().empty() ? "-" : absl::StrJoin(i.addresses(), ","),
         absl::StrCat(i.mtu()), i.operstate(),
         i.speed_mbps() ? absl::StrCat(i.speed_mbps(), " Mb/s") : "-",
         i.fabric() ? absl::StrCat("yes (", absl::StrJoin(i.rdma_devices(), ","), ")") : "no"});
  }
  absl::StrAppend(&out, Indent(itf.Render()));
  const v1::GpuProbe& gpu = probe.gpu();
  absl::StrAppend(&out, "GPU: driver ", gpu.driver_version().empty() ? "-" : gpu.driver_version(),
                  ", CUDA driver ",
                  gpu.cuda_driver_version().empty() ? "-" : gpu.cuda_driver_version(),
                  ", CUDA runtime ",
                  gpu.cuda_runtime_version().empty() ? "-" : gpu.cuda_runtime_version(), "\n");
  if (!gpu.gpus().empty()) {
    Table t({"INDEX", "NAME", "ARCH", "MEMORY", "TEMP", "SM-CLOCK", "THROTTLE", "UUID"});
    for (const v1::GpuDevice& d : gpu.gpus()) {
      t.AddRow({absl::StrCat(d.index()), d.name(), d.arch(),
                d.memory_total_bytes() ? Bytes(d.memory_total_bytes()) : "-",
                absl::StrCat(d.temperature_c(), " C"), absl::StrCat(d.sm_clock_mhz(), " MHz"),
                d.throttle_reasons().empty() ? "none" : absl::StrJoin(d.throttle_reasons(), ","),
                d.uuid()});
    }
    absl::StrAppend(&out, Indent(t.Render()));
  }
  const v1::NcclProbe& nccl = probe.nccl();
  std::string nccl_text = "-";
  if (!nccl.error().empty()) {
    nccl_text = absl::StrCat("error: ", nccl.error());
  } else if (!nccl.version().empty()) {
    nccl_text = absl::StrCat(nccl.version(), " (", nccl.library(), "; ", nccl.how(), ")");
  } else if (!nccl.library().empty()) {
    nccl_text = absl::StrCat("version unknown (", nccl.library(), "; ", nccl.how(),
                             "): ", nccl.version_unknown());
  }
  absl::StrAppend(&out, "NCCL: ", nccl_text, "\n");
  const v1::LimitsProbe& l = probe.limits();
  absl::StrAppend(&out, "Limits: memlock ", Bytes(l.memlock_soft()), " soft / ",
                  Bytes(l.memlock_hard()), " hard", l.can_raise_memlock() ? " (may raise)" : "",
                  ", /dev/shm ", Bytes(l.shm_total_bytes()), ", memory ",
                  Bytes(l.memory_total_bytes()), " (", Bytes(l.memory_available_bytes()),
                  " available), swap ", Bytes(l.swap_total_bytes()), "\n");
  for (const v1::DiskProbe& d : probe.disks()) {
    absl::StrAppend(&out, "Disk ", d.path(), ": ",
                    d.present()
                        ? absl::StrCat(Bytes(d.free_bytes()), " free of ", Bytes(d.total_bytes()))
                        : d.error(),
                    "\n");
  }
  for (const v1::ImageProbe& i : probe.images()) {
    absl::StrAppend(&out, "Image ", i.image(), ": ", i.present() ? i.id() : i.error(), "\n");
  }
  for (const v1::ModelProbe& m : probe.models()) {
    absl::StrAppend(&out, "Model ", m.path(), ": ",
                    m.present()
                        ? absl::StrCat(Bytes(m.total_bytes()), " in ", m.file_count(), " files",
                                       m.sha256().empty() ? "" : ", sha256 ", m.sha256())
                        : m.error(),
                    "\n");
  }
  if (!probe.unavailable().empty()) {
    absl::StrAppend(&out, "Not seen:\n");
    for (const std::string& u : probe.unavailable()) absl::StrAppend(&out, "  ", u, "\n");
  }
  return out;
}

std::string RenderPreflight(const google::protobuf::RepeatedPtrField<v1::PreflightRow>& rows) {
  Table t({"NODE", "CHECK", "VERDICT", "OBSERVED", "EXPECTED", "FIX"});
  for (const v1::PreflightRow& r : rows) {
    t.AddRow({r.node(), r.check(), r.verdict(), r.observed(), r.expected(),
              r.fix().empty() ? "-" : r.fix()});
  }
  return t.Render();
}

int Probe(const Globals& g, const std::string& root) {
  if (!g.output.empty() && g.output != "json" && g.output != "yaml" && g.output != "table") {
    return Fail(absl::StrCat("-o ", g.output, ": use json, yaml or table"));
  }
  v1::NodeProbe probe = agent::RunProbes({.root = root, .live = root == "/"});
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(ProtoToJson(probe), g.output);
  } else {
    std::cout << RenderProbe(probe);
  }
  return 0;
}

int DescribeNode(const Globals& g, const std::string& name) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::ProbeNodeResponse> r = client->ProbeNode(name, absl::Minutes(1));
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(ProtoToJson(*r), g.output);
    return 0;
  }
  std::cout << "Node: " << r->node_name() << "\n" << RenderProbe(r->probe());
  return 0;
}

int GetLinks(const Globals& g) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::ListNodesResponse> nodes = client->ListNodes();
  if (!nodes.ok()) return Fail(std::string(nodes.status().message()));
  Table t({"NODE", "DEVICE", "PORT", "STATE", "RATE", "MTU", "NETDEV", "ADDRESS", "GID"});
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  std::vector<std::string> unreachable;
  for (const v1::Node& node : nodes->nodes()) {
    if (node.state() != v1::NODE_STATE_READY) continue;
    absl::StatusOr<v1::ProbeNodeResponse> r =
        client->ProbeNode(node.identity().name(), absl::Minutes(1));
    if (!r.ok()) {
      unreachable.push_back(absl::StrCat(node.identity().name(), ": ", r.status().message()));
      continue;
    }
    for (const v1::RdmaDevice& d : r->probe().rdma()) {
      for (const v1::RdmaPort& p : d.ports()) {
        auto [ipv4, gid] = RoceV2Gid(p);
        t.AddRow({node.identity().name(), d.name(), absl::StrCat(p.port()),
                  absl::StrCat(p.state(), "/", p.phys_state()), p.rate(),
                  absl::StrCat(p.active_mtu()), p.netdev(), ipv4, gid});
        items.push_back(
            {{"node", node.identity().name()}, {"device", d.name()}, {"port", ProtoToJson(p)}});
      }
    }
  }
  if (g.output == "json" || g.output == "yaml") {
    nlohmann::ordered_json doc = {{"apiVersion", "fleet/v1"}, {"kind", "LinkList"}};
    doc["items"] = std::move(items);
    std::cout << PrintDocument(doc, g.output);
  } else {
    std::cout << t.Render();
  }
  for (const std::string& u : unreachable) std::cerr << "fleet: warning: " << u << "\n";
  return unreachable.empty() ? 0 : 1;
}

int Preflight(const Globals& g, const RecipeFlags& flags, bool force) {
  std::string format = g.output;
  std::vector<std::string> overrides;
  if (absl::Status st = SplitOutputFlags(flags.o, &format, &overrides); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  absl::StatusOr<v1::ApplyRequest> request = ReadApplyRequest(flags, overrides, force);
  if (!request.ok()) return Fail(std::string(request.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::PreflightResponse> r = client->Preflight(*request, absl::Minutes(15));
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (format == "json" || format == "yaml") {
    std::cout << PrintDocument(ProtoToJson(*r), format);
  } else {
    std::cout << RenderPreflight(r->rows());
  }
  if (r->failed()) {
    std::cerr << "fleet: error: preflight failed; fix the rows marked fail (or apply --force)"
              << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace fleet::cli
