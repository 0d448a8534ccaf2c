// `fleet fabric`'s policy without a network: the planner (pairs, ring, no node in two tests of a
// round), the verdict and regression rules, and the runner through a fake agent client and a
// fake store: expected figures from the link rate, "not measured" reasons, stored history. The
// RDMA test's queue-pair exchange runs through the fake agent client into the agents' real
// RdmaEndpoints on a fake verbs device.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "agent/fabric/fake_verbs_device.h"
#include "agent/fabric/rdma_endpoints.h"
#include "cli/fabric_commands.h"
#include "common/fake_clock.h"
#include "common/files.h"
#include "controller/fabric/fabric_plan.h"
#include "controller/fabric/fabric_runner.h"
#include "controller/fabric/fake_fabric_agent_client.h"
#include "controller/fabric/nccl_fabric.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Names(int n) {
  std::vector<std::string> names;
  for (int i = 1; i <= n; ++i) names.push_back(absl::StrCat("spark-", i));
  return names;
}

// Checks that no node is in two tests of a round, and returns every link as an unordered pair.
std::multiset<std::set<std::string>> CheckRounds(const std::vector<FabricRound>& rounds) {
  std::multiset<std::set<std::string>> pairs;
  for (const FabricRound& round : rounds) {
    std::set<std::string> busy;
    for (const FabricLink& link : round) {
      EXPECT_TRUE(busy.insert(link.from).second) << link.from << " twice in a round";
      EXPECT_TRUE(busy.insert(link.to).second) << link.to << " twice in a round";
      pairs.insert({link.from, link.to});
    }
  }
  return pairs;
}

TEST(PlanFabric, EveryPairOnceInTheFewestRounds) {
  for (int n = 2; n <= 9; ++n) {
    absl::StatusOr<std::vector<FabricRound>> rounds = PlanFabric(Names(n), FabricTopology::kPairs);
    ASSERT_TRUE(rounds.ok()) << rounds.status();
    EXPECT_EQ(rounds->size(), static_cast<size_t>(n % 2 == 0 ? n - 1 : n)) << n;
    std::multiset<std::set<std::string>> pairs = CheckRounds(*rounds);
    EXPECT_EQ(pairs.size(), static_cast<size_t>(n * (n - 1) / 2)) << n;
    EXPECT_EQ(std::set<std::set<std::string>>(pairs.begin(), pairs.end()).size(), pairs.size())
        << "a pair tested twice with " << n << " nodes";
  }
}

TEST(PlanFabric, RingLinksEachNodeToTheNext) {
  absl::StatusOr<std::vector<FabricRound>> rounds = PlanFabric(Names(4), FabricTopology::kRing);
  ASSERT_TRUE(rounds.ok());
  ASSERT_EQ(rounds->size(), 2u);
  EXPECT_THAT((*rounds)[0],
              ElementsAre(FabricLink{"spark-1", "spark-2"}, FabricLink{"spark-3", "spark-4"}));
  EXPECT_THAT((*rounds)[1],
              ElementsAre(FabricLink{"spark-2", "spark-3"}, FabricLink{"spark-4", "spark-1"}));
  rounds = PlanFabric(Names(5), FabricTopology::kRing);
  ASSERT_TRUE(rounds.ok());
  EXPECT_EQ(rounds->size(), 3u);
  EXPECT_EQ(CheckRounds(*rounds).size(), 5u);
  rounds = PlanFabric(Names(2), FabricTopology::kRing);
  ASSERT_TRUE(rounds.ok());
  EXPECT_EQ(CheckRounds(*rounds).size(), 1u);  // one link, not the same pair twice
}

TEST(PlanFabric, RefusesTooFewOrRepeatedNodes) {
  EXPECT_THAT(PlanFabric({"spark-1"}, FabricTopology::kPairs).status().message(),
              HasSubstr("at least 2 nodes"));
  EXPECT_THAT(PlanFabric({"a", "b", "a"}, FabricTopology::kPairs).status().message(),
              HasSubstr("node a is named twice"));
}

TEST(FabricVerdict, PassFromNinetyPercentFailBelowHalf) {
  EXPECT_EQ(FabricVerdict(90, 100), "pass");
  EXPECT_EQ(FabricVerdict(89.9, 100), "warn");
  EXPECT_EQ(FabricVerdict(50, 100), "warn");
  EXPECT_EQ(FabricVerdict(49.9, 100), "fail");
  EXPECT_EQ(FabricVerdict(5, 0), "unknown");
}

TEST(FabricRegression, FlagsADropOfMoreThanTenPercent) {
  EXPECT_EQ(FabricRegression(80, std::nullopt), std::nullopt);
  EXPECT_EQ(FabricRegression(90, 100.0), std::nullopt);
  EXPECT_THAT(FabricRegression(89, 100.0).value_or(""),
              HasSubstr("11% below the last passing run (100.0 Gb/s)"));
}

v1::Node MakeNode(int i, double fabric_gbps, bool rdma = false) {
  v1::Node node;
  node.mutable_identity()->set_name(absl::StrCat("spark-", i));
  node.mutable_identity()->set_node_id(absl::StrCat("id", i));
  node.set_address(absl::StrCat("10.0.0.", i, ":7101"));
  node.set_state(v1::NODE_STATE_READY);
  v1::ProbedInterface* itf = node.mutable_probe()->add_interfaces();
  itf->set_name("enp1s0f1np1");
  itf->add_addresses(absl::StrCat("192.168.100.", i, "/24"));
  itf->set_speed_mbps(static_cast<uint32_t>(fabric_gbps * 1000));
  itf->set_fabric(true);
  if (rdma) node.mutable_probe()->add_rdma()->set_name("rocep1s0f1");
  return node;
}

class FabricRunnerTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  FakeStore store_;
  FakeFabricAgentClient agents_;
  std::vector<v1::FabricResult> seen_;
  FabricRunner runner_{&clock_, &store_, &agents_,
                       [this](const v1::FabricResult& r) { seen_.push_back(r); }};
};

TEST_F(FabricRunnerTest, TcpBetweenFabricAddressesJudgedAgainstTheLinkRate) {
  agents_.bandwidth[{"192.168.100.1", "192.168.100.2"}] = 95;
  v1::RunFabricRequest request;
  request.set_duration_ms(2000);
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run(request, {MakeNode(1, 100), MakeNode(2, 100)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  const v1::FabricResult& result = r->results(0);
  EXPECT_EQ(result.from(), "spark-1");
  EXPECT_EQ(result.to(), "spark-2");
  EXPECT_EQ(result.device(), "enp1s0f1np1");
  EXPECT_EQ(result.bandwidth_gbps(), 95);
  EXPECT_EQ(result.expected_gbps(), 100);
  EXPECT_EQ(result.verdict(), "pass");
  // The receiver listens on its fabric address for the sender's address only; the sender gets
  // the same one-time token, 32 random bytes.
  ASSERT_EQ(agents_.listens.size(), 1u);
  EXPECT_EQ(agents_.listens[0].first, "10.0.0.2:7101");
  EXPECT_EQ(agents_.listens[0].second.bind_ip(), "192.168.100.2");
  EXPECT_EQ(agents_.listens[0].second.peer_ip(), "192.168.100.1");
  ASSERT_EQ(agents_.sends.size(), 1u);
  EXPECT_EQ(agents_.sends[0].second.target(), "192.168.100.2:40001");
  EXPECT_EQ(agents_.sends[0].second.spec().token().size(), 32u);
  EXPECT_EQ(agents_.sends[0].second.spec().token(), agents_.listens[0].second.spec().token());
  EXPECT_EQ(agents_.sends[0].second.spec().duration_ms(), 2000u);
  EXPECT_EQ(seen_.size(), 1u);
}

TEST_F(FabricRunnerTest, WarnFailAndUnreachableEachWithAReason) {
  agents_.bandwidth[{"192.168.100.1", "192.168.100.2"}] = 60;
  agents_.bandwidth[{"192.168.100.1", "192.168.100.3"}] = 10;
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run({}, {MakeNode(1, 100), MakeNode(2, 100), MakeNode(3, 100)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 3);
  std::map<std::string, v1::FabricResult> by_link;
  for (const v1::FabricResult& x : r->results()) by_link[x.from() + ">" + x.to()] = x;
  EXPECT_EQ(by_link["spark-1>spark-2"].verdict(), "warn");
  EXPECT_THAT(by_link["spark-1>spark-2"].reason(), HasSubstr("60.0 Gb/s is 60% of the link's"));
  EXPECT_EQ(by_link["spark-1>spark-3"].verdict(), "fail");
  EXPECT_EQ(by_link["spark-2>spark-3"].verdict(), "fail");
  EXPECT_FALSE(by_link["spark-2>spark-3"].measured());
  EXPECT_THAT(by_link["spark-2>spark-3"].reason(), HasSubstr("not measured: connect to"));
}

TEST_F(FabricRunnerTest, RdmaAndNcclWithoutTheHardwareAreNotMeasuredNeverANumber) {
  v1::RunFabricRequest request;
  request.add_tests("rdma");
  request.add_tests("nccl");
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run(request, {MakeNode(1, 100, /*rdma=*/true), MakeNode(2, 100)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 2);
  EXPECT_EQ(r->results(0).test(), "rdma");
  EXPECT_EQ(r->results(0).reason(), "not measured: no RDMA device on spark-2");
  EXPECT_EQ(r->results(1).reason(), "not measured: no GPU on spark-1");
  for (const v1::FabricResult& x : r->results()) {
    EXPECT_EQ(x.verdict(), "not-measured");
    EXPECT_FALSE(x.measured());
    EXPECT_EQ(x.bandwidth_gbps(), 0);
    EXPECT_THAT(cli::FabricResultJson(x).dump(), HasSubstr("\"bandwidth_gbps\":null"));
  }
  EXPECT_TRUE(agents_.sends.empty());
}

TEST_F(FabricRunnerTest, HistoryKeepsEveryRunAndFlagsADropAgainstTheLastPass) {
  std::vector<v1::Node> nodes = {MakeNode(1, 100), MakeNode(2, 100)};
  for (double gbps : {96.0, 93.0, 80.0}) {
    agents_.bandwidth[{"192.168.100.1", "192.168.100.2"}] = gbps;
    ASSERT_TRUE(runner_.Run({}, nodes).ok());
    clock_.Advance(absl::Minutes(1));
  }
  absl::StatusOr<v1::FabricHistoryResponse> history = runner_.History({});
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->results_size(), 3);
  EXPECT_EQ(history->results(0).bandwidth_gbps(), 96);
  EXPECT_EQ(history->results(1).regression(), "");  // 3% below the last pass
  EXPECT_THAT(history->results(2).regression(),
              HasSubstr("80.0 Gb/s is 14% below the last passing run (93.0 Gb/s)"));
  std::string table = cli::RenderFabricResults(
      {history->results().begin(), history->results().end()}, /*history=*/true);
  EXPECT_THAT(table, HasSubstr("REGRESSION: bandwidth 80.0 Gb/s"));
}

TEST_F(FabricRunnerTest, BadRequestsAreRefusedWithTheFix) {
  std::vector<v1::Node> nodes = {MakeNode(1, 100), MakeNode(2, 100)};
  v1::RunFabricRequest unknown;
  unknown.add_tests("udp");
  EXPECT_THAT(runner_.Run(unknown, nodes).status().message(),
              HasSubstr("the tests are tcp, rdma and nccl"));
  v1::RunFabricRequest missing;
  missing.add_nodes("spark-1");
  missing.add_nodes("spark-9");
  EXPECT_THAT(runner_.Run(missing, nodes).status().message(),
              HasSubstr("node spark-9 is not Ready (or not known); the Ready nodes are: "
                        "spark-1, spark-2"));
  v1::RunFabricRequest streams;
  streams.set_streams(65);
  EXPECT_TRUE(absl::IsInvalidArgument(runner_.Run(streams, nodes).status()));
}

// The NCCL test: fleet-engine's benchmark output (a real run's, Gloo on CPUs, kept in
// tests/fixtures/nccl) turned into one result per collective at its largest size.
std::string BenchOutput() {
  return ReadFileToString(std::string(FLEET_SOURCE_DIR) +
                          "/tests/fixtures/nccl/bench-collectives-2ranks.txt")
      .value_or("");
}

v1::Node GpuNode(int i, const std::string& gpu = "NVIDIA GB10") {
  v1::Node node = MakeNode(i, 200);
  node.mutable_probe()->mutable_gpu()->add_gpus()->set_name(gpu);
  return node;
}

TEST(ParseBenchTables, ReadsEveryRowOfBothTablesAndSkipsLogLines) {
  absl::StatusOr<std::vector<NcclRow>> rows = ParseBenchTables(BenchOutput());
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[0].op, "all_reduce");
  EXPECT_EQ((*rows)[0].ranks, 2);
  EXPECT_EQ((*rows)[0].bytes, 1048576u);
  EXPECT_DOUBLE_EQ((*rows)[0].time_us, 18725.72);
  EXPECT_EQ((*rows)[3].op, "all_gather");
  EXPECT_DOUBLE_EQ((*rows)[3].algbw_gbs, 1.54);
  EXPECT_DOUBLE_EQ((*rows)[3].busbw_gbs, 0.77);  // nccl-tests: algbw * (n-1)/n
  EXPECT_EQ((*rows)[3].wrong, 0);
}

TEST(ParseBenchTables, AGarbledRowOrNoTableIsAClearError) {
  std::string garbled = BenchOutput();
  garbled.replace(garbled.find("30511.17"), 8, "fast");
  EXPECT_THAT(ParseBenchTables(garbled).status().message(),
              HasSubstr("line 7 of the benchmark's output is not a row"));
  EXPECT_TRUE(absl::IsNotFound(ParseBenchTables("rank 0: NCCL error 2 (unhandled system "
                                                "error)\n")
                                   .status()));
}

class FabricNcclTest : public FabricRunnerTest {
 protected:
  absl::StatusOr<std::string> output_ = BenchOutput();
  std::vector<std::vector<std::string>> asked_;
  FabricRunner nccl_runner_{&clock_, &store_, &agents_,
                            [this](const v1::FabricResult& r) { seen_.push_back(r); },
                            [this](const std::vector<std::string>& nodes) {
                              asked_.push_back(nodes);
                              return output_;
                            }};
};

TEST_F(FabricNcclTest, OneRunAcrossTheChosenNodesGivesEachCollectivesBusBandwidth) {
  v1::RunFabricRequest request;
  request.add_tests("nccl");
  absl::StatusOr<v1::RunFabricResponse> r =
      nccl_runner_.Run(request, {GpuNode(1), GpuNode(2), GpuNode(3)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(asked_.size(), 1u);  // one benchmark over every node, not one per link
  EXPECT_THAT(asked_[0], ElementsAre("spark-1", "spark-2", "spark-3"));
  ASSERT_EQ(r->results_size(), 2);
  const v1::FabricResult& gather = r->results(0);
  EXPECT_EQ(gather.test(), "nccl");
  EXPECT_EQ(gather.from(), "spark-1");
  EXPECT_EQ(gather.to(), "spark-2,spark-3");
  EXPECT_EQ(gather.device(), "all_gather 4 MiB");
  EXPECT_TRUE(gather.measured());
  EXPECT_DOUBLE_EQ(gather.bandwidth_gbps(), 0.77 * 8);  // GB/s of the largest size, in Gb/s
  EXPECT_EQ(gather.expected_gbps(), 175);               // between DGX Sparks
  EXPECT_EQ(gather.verdict(), "fail");
  EXPECT_THAT(gather.reason(), HasSubstr("is 4% of the 175 Gb/s NVIDIA's cluster check demands"));
  EXPECT_EQ(r->results(1).device(), "all_reduce 4 MiB");
  EXPECT_DOUBLE_EQ(r->results(1).bandwidth_gbps(), 0.14 * 8);
  EXPECT_EQ(seen_.size(), 2u);
  absl::StatusOr<v1::FabricHistoryResponse> history = nccl_runner_.History({});
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(history->results_size(), 2);  // stored with the other tests' results
}

TEST_F(FabricNcclTest, OneNodeRunsOneRankWhoseSumsAreCheckedButHasNoBus) {
  output_ = absl::StrReplaceAll(BenchOutput(), {{", 2 ranks,", ", 1 ranks,"}});
  v1::RunFabricRequest request;
  request.add_tests("nccl");
  request.add_nodes("spark-1");
  absl::StatusOr<v1::RunFabricResponse> r = nccl_runner_.Run(request, {GpuNode(1), GpuNode(2)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 2);
  for (const v1::FabricResult& x : r->results()) {
    EXPECT_FALSE(x.measured());
    EXPECT_EQ(x.verdict(), "not-measured");
    EXPECT_EQ(x.to(), "spark-1");
    EXPECT_THAT(x.reason(), HasSubstr("one rank has no bus to measure"));
    EXPECT_THAT(x.reason(), HasSubstr("0 wrong elements, every result correct"));
  }
}

TEST_F(FabricNcclTest, WrongElementsFailAndOtherGpusHaveNoExpectedFigure) {
  output_ =
      absl::StrReplaceAll(BenchOutput(), {{"1.54     0.77       0", "1.54     0.77       3"}});
  v1::RunFabricRequest request;
  request.add_tests("nccl");
  absl::StatusOr<v1::RunFabricResponse> r = nccl_runner_.Run(
      request, {GpuNode(1, "NVIDIA H100 80GB HBM3"), GpuNode(2, "NVIDIA H100 80GB HBM3")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->results(0).verdict(), "fail");
  EXPECT_THAT(r->results(0).reason(), HasSubstr("3 elements of all_gather were wrong"));
  EXPECT_EQ(r->results(1).verdict(), "unknown");
  EXPECT_EQ(r->results(1).expected_gbps(), 0);
  EXPECT_THAT(r->results(1).reason(), HasSubstr("no expected bus bandwidth for these GPUs"));
}

TEST_F(FabricNcclTest, ABenchmarkThatDidNotFinishFailsWithItsReason) {
  output_ = absl::AbortedError(
      "rank 0 on spark-1 exited with status 1; the end of its output: "
      "NCCL error 2");
  v1::RunFabricRequest request;
  request.add_tests("nccl");
  absl::StatusOr<v1::RunFabricResponse> r = nccl_runner_.Run(request, {GpuNode(1), GpuNode(2)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  EXPECT_EQ(r->results(0).verdict(), "fail");
  EXPECT_FALSE(r->results(0).measured());
  EXPECT_THAT(r->results(0).reason(),
              HasSubstr("the NCCL test did not run to the end: rank 0 on spark-1 exited"));
}

// A DGX Spark's RDMA view: its port's two devices (one per PCIe domain), ACTIVE, RoCE v2 GID 3.
v1::Node MakeRdmaNode(int i, std::vector<std::string> devices, std::string state = "ACTIVE") {
  v1::Node node = MakeNode(i, 200);
  for (const std::string& name : devices) {
    v1::RdmaDevice* device = node.mutable_probe()->add_rdma();
    device->set_name(name);
    v1::RdmaPort* port = device->add_ports();
    port->set_port(1);
    port->set_state(state);
    port->set_link_layer("Ethernet");
    port->set_rate_gbps(100);
    port->set_roce_v2_gid_index(3);
  }
  return node;
}

TEST(RdmaPortKey, DevicesOfOnePortInTwoPciDomainsShareAKey) {
  EXPECT_EQ(RdmaPortKey("roceP2p1s0f1"), "rocep1s0f1");
  EXPECT_EQ(RdmaPortKey("rocep1s0f1"), "rocep1s0f1");
  EXPECT_EQ(RdmaPortKey("roceP2p1s0f0"), "rocep1s0f0");
  EXPECT_EQ(RdmaPortKey("mlx5_0"), "mlx5_0");
  FabricEndpoint e = EndpointOf(MakeRdmaNode(1, {"rocep1s0f1", "roceP2p1s0f1", "rocep1s0f0"}));
  ASSERT_EQ(e.rdma_ports.size(), 2u);
  EXPECT_EQ(e.rdma_ports[1].key, "rocep1s0f1");
  ASSERT_EQ(e.rdma_ports[1].devices.size(), 2u);
  EXPECT_EQ(e.rdma_ports[1].devices[0].device, "roceP2p1s0f1");
  EXPECT_EQ(e.rdma_ports[1].devices[0].gid_index, 3);
}

// Two agents, each with its RdmaEndpoints on one fake verbs fabric, behind the fake client.
class FabricRdmaTest : public FabricRunnerTest {
 protected:
  FabricRdmaTest() {
    fabric_.on_write = [this](uint32_t bytes) {
      clock_.Advance(bytes == 8 ? absl::Microseconds(2) : absl::Milliseconds(1));
    };
    agents_.rdma_prepare =
        [this](const std::string& address,
               const v1::RdmaPrepareRequest& r) -> absl::StatusOr<v1::RdmaPrepareResponse> {
      absl::StatusOr<v1::RdmaEndpoint> endpoint = Agent(address).Prepare(r);
      if (!endpoint.ok()) return endpoint.status();
      v1::RdmaPrepareResponse response;
      *response.mutable_endpoint() = *endpoint;
      return response;
    };
    agents_.rdma_connect =
        [this](const std::string& address,
               const v1::RdmaConnectRequest& r) -> absl::StatusOr<v1::RdmaConnectResponse> {
      if (absl::Status st = Agent(address).Connect(r); !st.ok()) return st;
      return v1::RdmaConnectResponse();
    };
    agents_.rdma_run = [this](const std::string& address, const v1::RdmaRunRequest& r) {
      return Agent(address).Run(r);
    };
    agents_.rdma_finish =
        [this](const std::string& address,
               const v1::RdmaFinishRequest& r) -> absl::StatusOr<v1::RdmaFinishResponse> {
      if (absl::Status st = Agent(address).Finish(r); !st.ok()) return st;
      return v1::RdmaFinishResponse();
    };
  }
  agent::RdmaEndpoints& Agent(const std::string& address) {
    return address == "10.0.0.1:7101" ? node1_ : node2_;
  }
  static v1::RunFabricRequest Request() {
    v1::RunFabricRequest request;
    request.add_tests("rdma");
    request.set_duration_ms(100);
    request.mutable_rdma()->set_queue_pairs(2);
    request.mutable_rdma()->set_tx_depth(8);
    request.mutable_rdma()->set_latency_iterations(20);
    return request;
  }

  agent::FakeVerbsFabric fabric_{{"rocep1s0f1", "roceP2p1s0f1"}};
  agent::RdmaEndpoints node1_{&fabric_, &clock_};
  agent::RdmaEndpoints node2_{&fabric_, &clock_};
};

TEST_F(FabricRdmaTest, EachDeviceOfAPortRunsAndThePortIsTheirSum) {
  const std::vector<std::string> devices = {"rocep1s0f1", "roceP2p1s0f1"};
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run(Request(), {MakeRdmaNode(1, devices), MakeRdmaNode(2, devices)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  const v1::FabricResult& result = r->results(0);
  EXPECT_EQ(result.test(), "rdma");
  EXPECT_EQ(result.device(), "roceP2p1s0f1+rocep1s0f1");
  ASSERT_TRUE(result.measured()) << result.reason();
  ASSERT_EQ(result.devices_size(), 2);
  EXPECT_EQ(result.devices(0).from_device(), "roceP2p1s0f1");
  EXPECT_EQ(result.devices(0).to_device(), "roceP2p1s0f1");
  EXPECT_GT(result.devices(0).bandwidth_gbps(), 0);
  EXPECT_DOUBLE_EQ(result.bandwidth_gbps(),
                   result.devices(0).bandwidth_gbps() + result.devices(1).bandwidth_gbps());
  EXPECT_EQ(result.expected_gbps(), 200);  // two devices of 100 Gb/s
  EXPECT_EQ(result.verdict(), FabricVerdict(result.bandwidth_gbps(), 200));
  ASSERT_TRUE(result.has_latency_us());
  EXPECT_EQ(result.latency_us(), result.devices(0).latency_us());
  EXPECT_GT(result.latency_p99_us(), 0);
  // Each device pair: the responder (spark-2) is prepared first, then connected with the
  // requester's details; the requester runs with the responder's; both are finished.
  std::vector<std::string> pair;
  for (const std::string& call : agents_.rdma_calls) {
    if (call.find("rocep1s0f1") != std::string::npos) pair.push_back(call);
  }
  EXPECT_THAT(pair,
              ElementsAre("10.0.0.2:7101 prepare rocep1s0f1", "10.0.0.1:7101 prepare rocep1s0f1",
                          "10.0.0.2:7101 connect rocep1s0f1", "10.0.0.1:7101 run rocep1s0f1",
                          testing::StartsWith("10.0.0.1:7101 finish"),
                          testing::StartsWith("10.0.0.2:7101 finish")));
  EXPECT_EQ(fabric_.open_contexts(), 0);
  EXPECT_EQ(fabric_.open_queue_pairs(), 0);
  EXPECT_EQ(node1_.in_flight() + node2_.in_flight(), 0);
  nlohmann::ordered_json json = cli::FabricResultJson(result);
  for (const char* field : {"test", "from", "to", "device", "bandwidth_gbps", "latency_us",
                            "latency_p99_us", "peak_gbps", "expected_gbps", "verdict", "reason"}) {
    EXPECT_TRUE(json.contains(field)) << field;
  }
}

TEST_F(FabricRdmaTest, AVerbsFailureFailsThePortNamingDeviceCallAndFix) {
  fabric_.reg_mr_errno = ENOMEM;
  const std::vector<std::string> devices = {"rocep1s0f1"};
  absl::StatusOr<v1::RunFabricResponse> r =
      runner_.Run(Request(), {MakeRdmaNode(1, devices), MakeRdmaNode(2, devices)});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  EXPECT_FALSE(r->results(0).measured());
  EXPECT_EQ(r->results(0).verdict(), "fail");
  EXPECT_THAT(r->results(0).reason(),
              testing::AllOf(HasSubstr("not measured: rocep1s0f1 to rocep1s0f1: rocep1s0f1: "
                                       "ibv_reg_mr"),
                             HasSubstr("Cannot allocate memory"), HasSubstr("LimitMEMLOCK")));
  EXPECT_EQ(fabric_.open_contexts(), 0);
}

TEST_F(FabricRdmaTest, NodesWithoutAnActivePortAreNotMeasured) {
  absl::StatusOr<v1::RunFabricResponse> r = runner_.Run(
      Request(), {MakeRdmaNode(1, {"rocep1s0f1"}), MakeRdmaNode(2, {"rocep1s0f1"}, "DOWN")});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  EXPECT_EQ(r->results(0).verdict(), "not-measured");
  EXPECT_THAT(r->results(0).reason(), HasSubstr("no RDMA port on spark-2 is ACTIVE"));
  EXPECT_TRUE(agents_.rdma_calls.empty());
}

}  // namespace
}  // namespace fleet::controller
