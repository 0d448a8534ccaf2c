// FabricRunner: plans, runs, judges and stores fabric tests.
#include "controller/fabric/fabric_runner.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/host_port.h"
#include "common/pki.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "controller/fabric/fabric_plan.h"

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

}  // namespace

FabricEndpoint EndpointOf(const v1::Node& node) {
  FabricEndpoint e{.name = node.identity().name(),
                   .node_id = node.identity().node_id(),
                   .agent_address = node.address(),
                   .has_rdma = node.probe().rdma_size() > 0,
                   .has_gpu = node.probe().gpu().gpus_size() > 0};
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
  return e;
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
  ASSIGN_OR_RETURN(
      std::vector<FabricRound> rounds,
      PlanFabric(chosen, request.ring() ? FabricTopology::kRing : FabricTopology::kPairs));
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

  absl::MutexLock run(&run_mu_);
  // The last passing bandwidth of each test and link, for the regression rule.
  std::map<std::string, double> last_pass;
  if (absl::StatusOr<std::vector<v1::FabricResult>> stored = store_->LoadFabricResults(50);
      stored.ok()) {
    for (const v1::FabricResult& r : *stored) {
      if (r.verdict() == "pass") {
        last_pass[absl::StrCat(r.test(), " ", r.from(), ">", r.to())] = r.bandwidth_gbps();
      }
    }
  }
  const std::string run_id = absl::StrCat(absl::ToUnixMillis(clock_->Now()));
  v1::RunFabricResponse response;
  int test_number = 0;
  for (const std::string& test : tests) {
    for (const FabricRound& round : rounds) {
      std::vector<v1::FabricResult> results(round.size());
      std::vector<std::thread> threads;
      for (size_t i = 0; i < round.size(); ++i) {
        const FabricEndpoint& from = ready.by_name.at(round[i].from);
        const FabricEndpoint& to = ready.by_name.at(round[i].to);
        if (test == "rdma") {
          const FabricEndpoint* without = !from.has_rdma ? &from : !to.has_rdma ? &to : nullptr;
          results[i] = NotMeasured(
              test, from, to,
              without != nullptr
                  ? absl::StrCat("not measured: no RDMA device on ", without->name)
                  : "not measured: the RDMA bandwidth test is not part of this version");
          continue;
        }
        if (test == "nccl") {
          const FabricEndpoint* without = !from.has_gpu ? &from : !to.has_gpu ? &to : nullptr;
          results[i] = NotMeasured(test, from, to,
                                   without != nullptr
                                       ? absl::StrCat("not measured: no GPU on ", without->name)
                                       : "not measured: the NCCL test is not part of this version");
          continue;
        }
        v1::FabricTcpSpec one = spec;
        one.set_test_id(absl::StrCat(run_id, "-", ++test_number));
        one.set_token(pki::RandomBytes(32));
        threads.emplace_back(
            [this, &results, i, &from, &to, one] { results[i] = RunTcp(from, to, one); });
      }
      for (std::thread& t : threads) t.join();
      for (v1::FabricResult& r : results) {
        r.set_run_id(run_id);
        *r.mutable_at() = ToProtoTime(clock_->Now());
        if (r.measured()) {
          auto it = last_pass.find(absl::StrCat(r.test(), " ", r.from(), ">", r.to()));
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
  }
  return response;
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

absl::StatusOr<v1::FabricHistoryResponse> FabricRunner::History(
    const v1::FabricHistoryRequest& request) {
  ASSIGN_OR_RETURN(std::vector<v1::FabricResult> stored,
                   store_->LoadFabricResults(request.limit() == 0 ? 20 : request.limit()));
  v1::FabricHistoryResponse response;
  for (v1::FabricResult& r : stored) *response.add_results() = std::move(r);
  return response;
}

}  // namespace fleet::controller
