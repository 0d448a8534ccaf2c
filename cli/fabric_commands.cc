// `fleet fabric`: request, table and JSON.
#include "cli/fabric_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/output.h"
#include "common/proto_time.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

std::string Gbps(double v) { return absl::StrFormat("%.2f Gb/s", v); }

// `-o json|yaml` of `fleet fabric` and `fleet fabric history`: one item per result.
nlohmann::ordered_json FabricResultList(const std::vector<v1::FabricResult>& results) {
  nlohmann::ordered_json doc = {{"apiVersion", "fleet/v1"}, {"kind", "FabricResultList"}};
  doc["items"] = nlohmann::ordered_json::array();
  for (const v1::FabricResult& r : results) doc["items"].push_back(FabricResultJson(r));
  return doc;
}

}  // namespace

nlohmann::ordered_json FabricResultJson(const v1::FabricResult& r) {
  nlohmann::ordered_json o = {
      {"test", r.test()}, {"from", r.from()}, {"to", r.to()}, {"device", r.device()}};
  o["bandwidth_gbps"] = r.measured() ? nlohmann::ordered_json(r.bandwidth_gbps()) : nullptr;
  if (r.has_latency_us()) o["latency_us"] = r.latency_us();
  if (r.has_latency_p99_us()) o["latency_p99_us"] = r.latency_p99_us();
  if (r.test() == "rdma" && r.measured()) o["peak_gbps"] = r.peak_gbps();
  o["expected_gbps"] = r.expected_gbps() > 0 ? nlohmann::ordered_json(r.expected_gbps()) : nullptr;
  o["verdict"] = r.verdict();
  o["reason"] = r.reason();
  if (!r.regression().empty()) o["regression"] = r.regression();
  if (r.devices_size() > 0) {
    nlohmann::ordered_json devices = nlohmann::ordered_json::array();
    for (const v1::RdmaDeviceFigures& d : r.devices()) {
      nlohmann::ordered_json one = {{"from_device", d.from_device()},
                                    {"to_device", d.to_device()},
                                    {"bandwidth_gbps", d.bandwidth_gbps()},
                                    {"peak_gbps", d.peak_gbps()}};
      if (d.has_latency_us()) one["latency_us"] = d.latency_us();
      if (d.has_latency_p99_us()) one["latency_p99_us"] = d.latency_p99_us();
      devices.push_back(std::move(one));
    }
    o["devices"] = std::move(devices);
  }
  if (r.has_at())
    o["at"] = absl::FormatTime(absl::RFC3339_sec, FromProtoTime(r.at()), absl::UTCTimeZone());
  return o;
}

std::string RenderFabricResults(const std::vector<v1::FabricResult>& results, bool history) {
  std::vector<std::string> headers = {"TEST",    "FROM",     "TO",      "DEVICE", "BANDWIDTH",
                                      "LATENCY", "EXPECTED", "VERDICT", "REASON"};
  if (history) headers.insert(headers.begin() + 3, "AT");
  Table t(headers);
  for (const v1::FabricResult& r : results) {
    std::string reason = r.reason();
    // A regression is flagged wherever it shows, before any other reason.
    if (!r.regression().empty()) {
      reason = absl::StrCat("REGRESSION: ", r.regression(), reason.empty() ? "" : "; ", reason);
    }
    std::vector<std::string> row = {
        r.test(),
        r.from(),
        r.to(),
        r.device().empty() ? "-" : r.device(),
        r.measured() ? Gbps(r.bandwidth_gbps()) : "-",
        r.has_latency_us() ? absl::StrFormat("%.2f us", r.latency_us()) : "-",
        r.expected_gbps() > 0 ? Gbps(r.expected_gbps()) : "-",
        r.verdict(),
        reason.empty() ? "-" : reason};
    if (history) {
      row.insert(row.begin() + 3,
                 absl::FormatTime("%Y-%m-%d %H:%M:%S", FromProtoTime(r.at()), absl::UTCTimeZone()));
    }
    t.AddRow(row);
  }
  return t.Render();
}

int Fabric(const Globals& g, const FabricFlags& flags) {
  absl::StatusOr<absl::Duration> duration = ParseDurationFlag("duration", flags.duration);
  if (!duration.ok()) return Fail(std::string(duration.status().message()));
  if (*duration < absl::Milliseconds(100) || *duration > absl::Seconds(60)) {
    std::cerr << "fleet: error: --duration must be 100ms to 60s; got " << flags.duration << "\n";
    return 2;
  }
  v1::RunFabricRequest request;
  for (const std::string& n : flags.nodes) request.add_nodes(n);
  for (const std::string& t : flags.tests) request.add_tests(t);
  request.set_ring(flags.ring);
  request.set_duration_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(*duration)));
  request.set_streams(flags.streams);
  request.set_buffer_bytes(flags.buffer_bytes);
  v1::RdmaSpec& rdma = *request.mutable_rdma();
  rdma.set_queue_pairs(flags.rdma_qps);
  rdma.set_message_bytes(flags.rdma_size);
  rdma.set_tx_depth(flags.rdma_tx_depth);
  rdma.set_cq_mod(flags.rdma_cq_mod);
  rdma.set_latency_iterations(flags.rdma_latency_iters);
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  // Every pair of up to 64 nodes, each round its duration plus connection set-up.
  absl::StatusOr<v1::RunFabricResponse> response = client->RunFabric(request, absl::Minutes(30));
  if (!response.ok()) return Fail(std::string(response.status().message()));
  std::vector<v1::FabricResult> results(response->results().begin(), response->results().end());
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(FabricResultList(results), g.output);
  } else {
    std::cout << RenderFabricResults(results, /*history=*/false);
  }
  for (const v1::FabricResult& r : results) {
    if (r.verdict() != "pass" && r.verdict() != "unknown") return 1;
    if (!r.regression().empty()) return 1;
  }
  return 0;
}

int FabricHistory(const Globals& g, int limit) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  v1::FabricHistoryRequest request;
  request.set_limit(static_cast<uint32_t>(std::max(limit, 0)));
  absl::StatusOr<v1::FabricHistoryResponse> response = client->FabricHistory(request);
  if (!response.ok()) return Fail(std::string(response.status().message()));
  std::vector<v1::FabricResult> results(response->results().begin(), response->results().end());
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(FabricResultList(results), g.output);
  } else if (results.empty()) {
    std::cout << "no fabric results yet; run `fleet fabric`\n";
  } else {
    std::cout << RenderFabricResults(results, /*history=*/true);
  }
  return 0;
}

}  // namespace fleet::cli
