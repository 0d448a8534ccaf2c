// FabricRunner: plans, runs, judges and stores fabric tests.
#include "controller/fabric/fabric_runner.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/host_port.h"
#include "common/pki.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "controller/fabric/fabric_plan.h"
#include "controller/fabric/nccl_fabric.h"

namespace fleet::controller {
namespace {

constexpr const char* kTests[] = {"tcp", "rdma", "nccl"};

std::string Ipv4Of(const std::string& cidr) { return cidr.substr(0, cidr.find('/')); }

bool IsIpv4(const std::string& s) {
  return !s.empty() && s.find(':') == std::string::npos &&
         s.find_first_not_of("0123456789.") == std::string::npos;
}

v1::FabricResult NotMeasured(const std::string& test, const FabricEndpoint& from,
                             const FabricEndpoint& to, std::string reason) {
  v1::FabricResult r;
  r.set_test(test);
  r.set_from(from.name);
  r.set_to(to.name);
  r.set_device(from.device);
  r.set_verdict("not-measured");
  r.set_reason(std::move(reason));
  r.set_measured(false);
  return r;
}

// Results are compared with earlier ones of the same test and link, and for rdma of the same
// port (a link may have two).
std::string RegressionKey(const v1::FabricResult& r) {
  std::string key = absl::StrCat(r.test(), " ", r.from(), ">", r.to());
  if (r.test() == "rdma") absl::StrAppend(&key, " ", r.device());
  return key;
}

std::vector<v1::FabricResult> Flatten(std::vector<std::vector<v1::FabricResult>> nested) {
  std::vector<v1::FabricResult> flat;
  for (std::vector<v1::FabricResult>& results : nested) {
    for (v1::FabricResult& r : results) flat.push_back(std::move(r));
  }
  return flat;
}

}  // namespace

FabricEndpoint EndpointOf(const v1::Node& node) {
  FabricEndpoint e{
      .name = node.identity().name(),
      .node_id = node.identity().node_id(),
      .agent_address = node.address(),
      .has_rdma = node.probe().rdma_size() > 0,
      .has_gpu = node.probe().gpu().gpus_size() > 0,
      .gpu_name = node.probe().gpu().gpus_size() > 0 ? node.probe().gpu().gpus(0).name() : ""};
  const v1::ProbedInterface* chosen = nullptr;
  for (const v1::ProbedInterface& itf : node.probe().interfaces()) {
    if (!itf.fabric()) continue;
    for (const std::string& a : itf.addresses()) {
      if (IsIpv4(Ipv4Of(a)) && chosen == nullptr) {
        chosen = &itf;
        e.ip = Ipv4Of(a);
      }
    }
  }
  if (chosen == nullptr) {
    // No RDMA-backed interface: the address the agent is reached at, and the interface that
    // holds it.
    e.ip = HostOf(node.address());
    for (const v1::ProbedInterface& itf : node.probe().interfaces()) {
      for (const std::string& a : itf.addresses()) {
        if (Ipv4Of(a) == e.ip) chosen = &itf;
      }
    }
  }
  if (chosen != nullptr) {
    e.device = chosen->name();
    e.rate_gbps = chosen->speed_mbps() / 1000.0;
  }
  std::map<std::string, RdmaPortGroup> groups;
  for (const v1::RdmaDevice& device : node.probe().rdma()) {
    for (const v1::RdmaPort& port : device.ports()) {
      bool infiniband = port.link_layer() == "InfiniBand";
      if (port.state() != "ACTIVE" || (!infiniband && port.roce_v2_gid_index() < 0)) continue;
      RdmaPortGroup& group = groups[RdmaPortKey(device.name())];
      group.key = RdmaPortKey(device.name());
      group.devices.push_back({.device = device.name(),
                               .port = port.port(),
                               .gid_index = infiniband ? -1 : port.roce_v2_gid_index(),
                               .rate_gbps = port.rate_gbps()});
      break;  // one port per device: the first that can run the test
    }
  }
  for (auto& [key, group] : groups) {
    std::sort(group.devices.begin(), group.devices.end(),
              [](const auto& a, const auto& b) { return a.device < b.device; });
    e.rdma_ports.push_back(std::move(group));
  }
  return e;
}

std::string RdmaPortKey(const std::string& device) {
  // udev's predictable names put "P<domain>" before "p<bus>" only for a PCI domain other than 0.
  for (size_t i = 0; i + 2 < device.size(); ++i) {
    if (device[i] != 'P' || !absl::ascii_isdigit(static_cast<unsigned char>(device[i + 1])))
      continue;
    size_t j = i + 1;
    while (j < device.size() && absl::ascii_isdigit(static_cast<unsigned char>(device[j]))) ++j;
    if (j < device.size() && device[j] == 'p') return device.substr(0, i) + device.substr(j);
  }
  return device;
}

ReadyEndpoints ReadyEndpointsOf(const std::vector<v1::Node>& nodes) {
  ReadyEndpoints ready;
  for (const v1::Node& node : nodes) {
    if (node.state() != v1::NODE_STATE_READY) continue;
    ready.by_name[node.identity().name()] = EndpointOf(node);
    ready.names.push_back(node.identity().name());
  }
  return ready;
}

absl::Status ReadyEndpoints::Require(const std::string& name) const {
  if (by_name.contains(name)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("node ", name, " is not Ready (or not known); the Ready nodes are: ",
                   names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

absl::StatusOr<v1::RunFabricResponse> FabricRunner::Run(const v1::RunFabricRequest& request,
                                                        const std::vector<v1::Node>& nodes) {
  std::vector<std::string> tests(request.tests().begin(), request.tests().end());
  if (tests.empty()) tests = {"tcp"};
  for (const std::string& t : tests) {
    if (std::find(std::begin(kTests), std::end(kTests), t) == std::end(kTests)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown fabric test `", t, "`; the tests are tcp, rdma and nccl"));
    }
  }
  const ReadyEndpoints ready = ReadyEndpointsOf(nodes);
  std::vector<std::string> chosen(request.nodes().begin(), request.nodes().end());
  if (chosen.empty()) chosen = ready.names;
  for (const std::string& name : chosen) RETURN_IF_ERROR(ready.Require(name));
  // Links are planned for the tests that run per link; nccl alone runs on one node too.
  std::vector<FabricRound> rounds;
  if (std::any_of(tests.begin(), tests.end(), [](const std::string& t) { return t != "nccl"; })) {
    ASSIGN_OR_RETURN(rounds, PlanFabric(chosen, request.ring() ? FabricTopology::kRing
                                                               : FabricTopology::kPairs));
  } else if (chosen.empty()) {
    return absl::FailedPreconditionError("no Ready node to run the NCCL test on");
  }
  v1::FabricTcpSpec spec;
  spec.set_streams(request.streams() == 0 ? 4 : request.streams());
  spec.set_duration_ms(request.duration_ms() == 0 ? 5000 : request.duration_ms());
  spec.set_buffer_bytes(request.buffer_bytes() == 0 ? 128 << 10 : request.buffer_bytes());
  spec.set_token(std::string(32, 'x'));  // validated here; each test gets its own below
  if (spec.streams() > 64 || spec.duration_ms() < 100 || spec.duration_ms() > 60'000 ||
      spec.buffer_bytes() < 4096 || spec.buffer_bytes() > (16u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fabric test figures out of range: streams ", spec.streams(),
                     " (1..64), duration ", spec.duration_ms(), " ms (100 ms..60 s), buffer ",
                     spec.buffer_bytes(), " bytes (4 KiB..16 MiB)"));
  }

  v1::RdmaSpec rdma = request.rdma();
  rdma.set_duration_ms(spec.duration_ms());
  // perftest's default of ib_write_lat (DEF_ITERS): 1000 round trips.
  if (rdma.latency_iterations() == 0) rdma.set_latency_iterations(1000);

  absl::MutexLock run(&run_mu_);
  // The last passing bandwidth of each test and link, for the regression rule.
  std::map<std::string, double> last_pass;
  if (absl::StatusOr<std::vector<v1::FabricResult>> stored = store_->LoadFabricResults(50);
      stored.ok()) {
    for (const v1::FabricResult& r : *stored) {
      if (r.verdict() == "pass") {
        last_pass[RegressionKey(r)] = r.bandwidth_gbps();
      }
    }
  }
  const std::string run_id = absl::StrCat(absl::ToUnixMillis(clock_->Now()));
  v1::RunFabricResponse response;
  int test_number = 0;
  for (const std::string& test : tests) {
    if (test == "nccl") {
      std::vector<FabricEndpoint> endpoints;
      for (const std::string& name : chosen) endpoints.push_back(ready.by_name.at(name));
      Record(RunNccl(endpoints), run_id, last_pass, response);
      continue;
    }
    for (const FabricRound& round : rounds) {
      // A link gives one result, or (rdma) one per port both nodes have.
      std::vector<std::vector<v1::FabricResult>> results(round.size());
      std::vector<std::thread> threads;
      for (size_t i = 0; i < round.size(); ++i) {
        const FabricEndpoint& from = ready.by_name.at(round[i].from);
        const FabricEndpoint& to = ready.by_name.at(round[i].to);
        if (test == "rdma") {
          const FabricEndpoint* without = !from.has_rdma ? &from : !to.has_rdma ? &to : nullptr;
          if (without != nullptr) {
            results[i] = {NotMeasured(
                test, from, to, absl::StrCat("not measured: no RDMA device on ", without->name))};
            continue;
          }
          const FabricEndpoint* inactive = from.rdma_ports.empty() ? &from
                                           : to.rdma_ports.empty() ? &to
                                                                   : nullptr;
          if (inactive != nullptr) {
            results[i] = {NotMeasured(
                test, from, to,
                absl::StrCat("not measured: no RDMA port on ", inactive->name,
                             " is ACTIVE with a RoCE v2 GID; bring its link up and check "
                             "`fleet probe` there"))};
            continue;
          }
          v1::RdmaSpec one = rdma;
          one.set_test_id(absl::StrCat(run_id, "-", ++test_number));
          threads.emplace_back(
              [this, &results, i, &from, &to, one] { results[i] = RunRdma(from, to, one); });
          continue;
        }
        v1::FabricTcpSpec one = spec;
        one.set_test_id(absl::StrCat(run_id, "-", ++test_number));
        one.set_token(pki::RandomBytes(32));
        threads.emplace_back(
            [this, &results, i, &from, &to, one] { results[i] = {RunTcp(from, to, one)}; });
      }
      for (std::thread& t : threads) t.join();
      Record(Flatten(std::move(results)), run_id, last_pass, response);
    }
  }
  return response;
}

void FabricRunner::Record(std::vector<v1::FabricResult> results, const std::string& run_id,
                          const std::map<std::string, double>& last_pass,
                          v1::RunFabricResponse& response) {
  for (v1::FabricResult& r : results) {
    r.set_run_id(run_id);
    *r.mutable_at() = ToProtoTime(clock_->Now());
    if (r.measured()) {
      auto it = last_pass.find(RegressionKey(r));
      if (std::optional<std::string> drop = FabricRegression(
              r.bandwidth_gbps(),
              it == last_pass.end() ? std::nullopt : std::optional<double>(it->second))) {
        r.set_regression(*drop);
      }
    }
    (void)store_->AppendFabricResult(r);
    if (on_result_) on_result_(r);
    *response.add_results() = std::move(r);
  }
}

std::vector<v1::FabricResult> FabricRunner::RunNccl(const std::vector<FabricEndpoint>& nodes) {
  std::vector<std::string> names;
  for (const FabricEndpoint& n : nodes) names.push_back(n.name);
  // One result standing for the whole test when no figure can be taken.
  auto whole = [&](const std::string& verdict, std::string reason) {
    v1::FabricResult r;
    r.set_test("nccl");
    r.set_from(names.front());
    r.set_to(names.size() == 1 ? names.front()
                               : absl::StrJoin(names.begin() + 1, names.end(), ","));
    r.set_verdict(verdict);
    r.set_reason(std::move(reason));
    return std::vector<v1::FabricResult>{std::move(r)};
  };
  for (const FabricEndpoint& n : nodes) {
    if (!n.has_gpu) return whole("not-measured", absl::StrCat("not measured: no GPU on ", n.name));
  }
  if (!nccl_) {
    return whole("not-measured", "not measured: this controller was started without the NCCL test");
  }
  absl::StatusOr<std::string> output = nccl_(names);
  absl::StatusOr<std::vector<NcclRow>> rows =
      output.ok() ? ParseBenchTables(*output)
                  : absl::StatusOr<std::vector<NcclRow>>(output.status());
  if (!rows.ok()) {
    return whole("fail",
                 absl::StrCat("the NCCL test did not run to the end: ", rows.status().message()));
  }
  return NcclResults(*rows, nodes);
}

v1::FabricResult FabricRunner::RunTcp(const FabricEndpoint& from, const FabricEndpoint& to,
                                      const v1::FabricTcpSpec& spec) {
  v1::FabricResult r;
  r.set_test("tcp");
  r.set_from(from.name);
  r.set_to(to.name);
  r.set_device(from.device);
  // Both ends' rates known: the slower one bounds the link.
  double expected =
      from.rate_gbps > 0 && to.rate_gbps > 0 ? std::min(from.rate_gbps, to.rate_gbps) : 0;
  r.set_expected_gbps(expected);
  const absl::Duration deadline = absl::Milliseconds(spec.duration_ms()) + absl::Seconds(15);
  v1::FabricListenRequest listen;
  *listen.mutable_spec() = spec;
  listen.set_bind_ip(to.ip);
  listen.set_peer_ip(from.ip);
  absl::StatusOr<v1::FabricListenResponse> port =
      agents_->Listen(to.agent_address, to.node_id, listen, absl::Seconds(10));
  absl::StatusOr<v1::FabricSendResponse> sent = absl::UnknownError("not sent");
  if (!port.ok()) {
    sent = port.status();
  } else {
    v1::FabricSendRequest send;
    *send.mutable_spec() = spec;
    send.set_source_ip(from.ip);
    send.set_target(JoinHostPort(to.ip, static_cast<uint16_t>(port->port())));
    sent = agents_->Send(from.agent_address, from.node_id, send, deadline);
  }
  if (!sent.ok()) {
    r.set_verdict("fail");
    r.set_measured(false);
    r.set_reason(absl::StrCat("not measured: ", sent.status().message()));
    return r;
  }
  r.set_measured(true);
  r.set_bandwidth_gbps(sent->bandwidth_gbps());
  r.set_verdict(FabricVerdict(sent->bandwidth_gbps(), expected));
  if (r.verdict() == "unknown") {
    r.set_reason(absl::StrCat("the link rate of ", from.device.empty() ? from.name : from.device,
                              " is not known, so there is nothing to compare against"));
  } else if (r.verdict() != "pass") {
    r.set_reason(absl::StrFormat("%.1f Gb/s is %.0f%% of the link's %.0f Gb/s (pass from 90%%)",
                                 sent->bandwidth_gbps(), 100 * sent->bandwidth_gbps() / expected,
                                 expected));
  }
  return r;
}

absl::StatusOr<v1::RdmaRunResponse> FabricRunner::RunRdmaDevices(
    const FabricEndpoint& from, const RdmaDeviceEndpoint& from_device, const FabricEndpoint& to,
    const RdmaDeviceEndpoint& to_device, const v1::RdmaSpec& spec) {
  // The responder (`to`) is prepared first, then the requester; the responder connects (and
  // starts answering pings) before the requester connects and runs. Every end that was
  // prepared is finished, whatever happened.
  constexpr absl::Duration kCallDeadline = absl::Seconds(10);
  v1::RdmaSpec one = spec;
  one.set_test_id(absl::StrCat(spec.test_id(), "-", from_device.device));
  auto prepare = [&](const FabricEndpoint& node, const RdmaDeviceEndpoint& device) {
    v1::RdmaPrepareRequest request;
    *request.mutable_spec() = one;
    request.set_device(device.device);
    request.set_port(device.port);
    request.set_gid_index(device.gid_index);
    return agents_->RdmaPrepare(node.agent_address, node.node_id, request, kCallDeadline);
  };
  v1::RdmaFinishRequest finish;
  finish.set_test_id(one.test_id());
  absl::StatusOr<v1::RdmaPrepareResponse> responder = prepare(to, to_device);
  if (!responder.ok()) return responder.status();
  absl::StatusOr<v1::RdmaPrepareResponse> requester = prepare(from, from_device);
  absl::StatusOr<v1::RdmaRunResponse> figures = absl::UnknownError("not run");
  if (!requester.ok()) {
    figures = requester.status();
  } else {
    v1::RdmaConnectRequest connect;
    connect.set_test_id(one.test_id());
    *connect.mutable_peer() = requester->endpoint();
    absl::StatusOr<v1::RdmaConnectResponse> connected =
        agents_->RdmaConnect(to.agent_address, to.node_id, connect, kCallDeadline);
    if (!connected.ok()) {
      figures = connected.status();
    } else {
      v1::RdmaRunRequest run;
      run.set_test_id(one.test_id());
      *run.mutable_peer() = responder->endpoint();
      // The bandwidth phase, then up to 100,000 round trips of a few microseconds each.
      figures = agents_->RdmaRun(from.agent_address, from.node_id, run,
                                 absl::Milliseconds(spec.duration_ms()) + absl::Seconds(30));
    }
    (void)agents_->RdmaFinish(from.agent_address, from.node_id, finish, kCallDeadline);
  }
  (void)agents_->RdmaFinish(to.agent_address, to.node_id, finish, kCallDeadline);
  return figures;
}

std::vector<v1::FabricResult> FabricRunner::RunRdma(const FabricEndpoint& from,
                                                    const FabricEndpoint& to,
                                                    const v1::RdmaSpec& spec) {
  std::vector<v1::FabricResult> results;
  const size_t ports = std::min(from.rdma_ports.size(), to.rdma_ports.size());
  for (size_t p = 0; p < ports; ++p) {
    const std::vector<RdmaDeviceEndpoint>& senders = from.rdma_ports[p].devices;
    const std::vector<RdmaDeviceEndpoint>& receivers = to.rdma_ports[p].devices;
    const size_t pairs = std::min(senders.size(), receivers.size());
    // The devices of a port run at once: the port's figure is their sum.
    std::vector<absl::StatusOr<v1::RdmaRunResponse>> figures(pairs, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (size_t d = 0; d < pairs; ++d) {
      threads.emplace_back([this, &figures, d, &from, &to, &senders, &receivers, &spec] {
        figures[d] = RunRdmaDevices(from, senders[d], to, receivers[d], spec);
      });
    }
    for (std::thread& t : threads) t.join();

    v1::FabricResult r;
    r.set_test("rdma");
    r.set_from(from.name);
    r.set_to(to.name);
    std::vector<std::string> names;
    double expected = 0;
    bool rates_known = true;
    std::vector<std::string> failures;
    for (size_t d = 0; d < pairs; ++d) {
      names.push_back(senders[d].device);
      double rate = std::min(senders[d].rate_gbps, receivers[d].rate_gbps);
      rates_known = rates_known && rate > 0;
      expected += rate;
      if (!figures[d].ok()) {
        failures.push_back(absl::StrCat(senders[d].device, " to ", receivers[d].device, ": ",
                                        figures[d].status().message()));
        continue;
      }
      v1::RdmaDeviceFigures* device = r.add_devices();
      device->set_from_device(senders[d].device);
      device->set_to_device(receivers[d].device);
      device->set_bandwidth_gbps(figures[d]->bandwidth_gbps());
      device->set_peak_gbps(figures[d]->peak_gbps());
      if (figures[d]->latency_samples() > 0) {
        device->set_latency_us(figures[d]->latency_median_us());
        device->set_latency_p99_us(figures[d]->latency_p99_us());
      }
      r.set_bandwidth_gbps(r.bandwidth_gbps() + figures[d]->bandwidth_gbps());
      r.set_peak_gbps(r.peak_gbps() + figures[d]->peak_gbps());
      // The port's latency is its first device pair's: latency does not add up.
      if (!r.has_latency_us() && device->has_latency_us()) {
        r.set_latency_us(device->latency_us());
        r.set_latency_p99_us(device->latency_p99_us());
      }
    }
    r.set_device(absl::StrJoin(names, "+"));
    r.set_expected_gbps(rates_known ? expected : 0);
    if (!failures.empty()) {
      // A port measured on some of its devices only would look slow for the wrong reason.
      r.clear_devices();
      r.set_bandwidth_gbps(0);
      r.set_peak_gbps(0);
      r.clear_latency_us();
      r.clear_latency_p99_us();
      r.set_measured(false);
      r.set_verdict("fail");
      r.set_reason(absl::StrCat("not measured: ", absl::StrJoin(failures, "; ")));
      results.push_back(std::move(r));
      continue;
    }
    r.set_measured(true);
    r.set_verdict(FabricVerdict(r.bandwidth_gbps(), r.expected_gbps()));
    if (r.verdict() == "unknown") {
      r.set_reason(absl::StrCat("the rate of ", r.device(),
                                " is not known, so there is nothing to compare against"));
    } else if (r.verdict() != "pass") {
      r.set_reason(absl::StrFormat("%.1f Gb/s is %.0f%% of the port's %.0f Gb/s (pass from 90%%)",
                                   r.bandwidth_gbps(), 100 * r.bandwidth_gbps() / expected,
                                   expected));
    }
    results.push_back(std::move(r));
  }
  return results;
}

absl::StatusOr<v1::FabricHistoryResponse> FabricRunner::History(
    const v1::FabricHistoryRequest& request) {
  ASSIGN_OR_RETURN(std::vector<v1::FabricResult> stored,
                   store_->LoadFabricResults(request.limit() == 0 ? 20 : request.limit()));
  v1::FabricHistoryResponse response;
  for (v1::FabricResult& r : stored) *response.add_results() = std::move(r);
  return response;
}

}  // namespace fleet::controller
