// `fleet health`'s judgement and drawing without a controller: each rule that makes a node or a
// group degraded or unhealthy, the reason shown, and 100 simulated nodes drawn in under 200 ms.
#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/health_commands.h"
#include "common/proto_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

v1::Node Spark(const std::string& name) {
  v1::Node node;
  node.mutable_identity()->set_name(name);
  node.set_state(v1::NODE_STATE_READY);
  *node.mutable_last_heartbeat() = ToProtoTime(kNow - absl::Milliseconds(400));
  v1::NodeProbe& probe = *node.mutable_probe();
  v1::GpuDevice* gpu = probe.mutable_gpu()->add_gpus();
  gpu->set_name("NVIDIA GB10");
  gpu->set_temperature_c(45);
  gpu->set_sm_clock_mhz(2405);
  for (const char* dev : {"rocep1s0f1", "roceP2p1s0f1"}) {
    v1::RdmaPort* port = probe.add_rdma()->add_ports();
    probe.mutable_rdma(probe.rdma_size() - 1)->set_name(dev);
    port->set_port(1);
    port->set_state("ACTIVE");
    port->set_phys_state("LinkUp");
    port->set_rate_gbps(100);
    port->set_active_mtu(4096);
  }
  probe.mutable_limits()->set_memlock_soft(std::numeric_limits<uint64_t>::max());
  probe.mutable_limits()->set_shm_total_bytes(64ull << 30);
  probe.mutable_limits()->set_shm_free_bytes(60ull << 30);
  return node;
}

v1::ListNodesResponse Nodes(std::vector<v1::Node> nodes) {
  v1::ListNodesResponse r;
  for (v1::Node& n : nodes) *r.add_nodes() = std::move(n);
  *r.mutable_now() = ToProtoTime(kNow);
  return r;
}

// Each node's agent answered a second look: its probe as the node holds it, GPU 0 without
// errors, both ports' counters unchanged.
v1::HealthResponse LooksOf(const v1::ListNodesResponse& nodes) {
  v1::HealthResponse looks;
  for (const v1::Node& node : nodes.nodes()) {
    v1::NodeHealthReport& r = *looks.add_nodes();
    r.set_node(node.identity().name());
    v1::NodeHealthSample& sample = *r.mutable_sample();
    *sample.mutable_probe() = node.probe();
    sample.set_since_last_look_s(5);
    if (node.probe().gpu().gpus_size() > 0) sample.add_gpu_errors()->set_index(0);
    for (const v1::RdmaDevice& d : node.probe().rdma()) {
      v1::PortCounters& port = *sample.add_ports();
      port.set_device(d.name());
      port.set_port(1);
      v1::PortCounter& c = *port.add_counters();
      c.set_name("symbol_error");
      c.set_value(7);
    }
  }
  return looks;
}

HealthReport Judge(const v1::ListNodesResponse& nodes, const v1::ListGroupsResponse& groups = {},
                   const std::vector<v1::FabricResult>& fabric = {}) {
  return JudgeHealth(nodes, groups, fabric, LooksOf(nodes));
}

TEST(JudgeHealth, AWellSetUpSparkIsHealthy) {
  HealthReport report = Judge(Nodes({Spark("spark-1")}));
  ASSERT_EQ(report.nodes.size(), 1u);
  const NodeHealth& n = report.nodes[0];
  EXPECT_EQ(n.health.verdict, "healthy") << n.health.reasons.front();
  EXPECT_EQ(n.gpu, "1 x NVIDIA GB10, 45 C, 2405 MHz");
  EXPECT_EQ(n.gpu_errors, "gpu 0: ecc 0/0, no xid");
  EXPECT_EQ(n.link_errors, "none new");
  EXPECT_EQ(n.links, "2/2 up, 200 Gb/s, MTU 4096");
  EXPECT_EQ(n.memlock, "unlimited");
  EXPECT_NEAR(n.heartbeat_age_s, 0.4, 1e-9);
}

TEST(JudgeHealth, EveryProblemIsNamedWithItsFix) {
  v1::Node node = Spark("spark-2");
  node.set_state(v1::NODE_STATE_SUSPECT);
  node.mutable_probe()->mutable_gpu()->clear_gpus();
  node.mutable_probe()->add_unavailable("gpu: libnvidia-ml.so.1 not found (no NVIDIA driver)");
  node.mutable_probe()->mutable_rdma(1)->mutable_ports(0)->set_state("DOWN");
  node.mutable_probe()->mutable_rdma(1)->mutable_ports(0)->set_phys_state("Disabled");
  node.mutable_probe()->mutable_rdma(0)->mutable_ports(0)->set_active_mtu(1024);
  node.mutable_probe()->mutable_limits()->set_memlock_soft(8 << 20);
  node.mutable_probe()->mutable_limits()->set_shm_free_bytes(64 << 20);
  v1::FabricResult slow;
  slow.set_test("tcp");
  slow.set_from("spark-2");
  slow.set_to("spark-1");
  slow.set_measured(true);
  slow.set_bandwidth_gbps(40);
  slow.set_verdict("fail");
  slow.set_reason("40.0 Gb/s is 40% of the link's 100 Gb/s (pass from 90%)");

  HealthReport report = Judge(Nodes({node}), {}, {slow});
  const NodeHealth& n = report.nodes[0];
  EXPECT_EQ(n.health.verdict, "degraded");
  EXPECT_EQ(n.gpu, "no NVIDIA driver");
  EXPECT_EQ(n.links, "1/2 up, 100 Gb/s, MTU 1024");
  EXPECT_THAT(n.health.reasons,
              ElementsAre("heartbeats are late (Suspect)",
                          HasSubstr("rocep1s0f1/1 MTU 1024: RoCE wants 4096"),
                          "roceP2p1s0f1/1 is DOWN/Disabled",
                          HasSubstr("memlock 8 MiB: RDMA needs unlimited (run the agent with "
                                    "LimitMEMLOCK=infinity)"),
                          "/dev/shm has only 64 MiB free",
                          HasSubstr("fabric tcp to spark-1: fail (40.0 Gb/s is 40%")));
  EXPECT_THAT(n.fabric, HasSubstr("tcp spark-1 40.0 Gb/s fail"));
}

TEST(JudgeHealth, ALostNodeAndAFailedGroupAreUnhealthy) {
  v1::Node lost = Spark("spark-3");
  lost.set_state(v1::NODE_STATE_LOST);
  v1::ListGroupsResponse groups;
  v1::Group* ds4 = groups.add_groups();
  ds4->set_name("ds4");
  ds4->set_generation(3);
  ds4->set_state(v1::GROUP_STATE_FAILED);
  ds4->set_message("rank 1 on spark-3 Failed (exited with status 1)");
  ds4->add_ranks()->mutable_status()->set_state(v1::SHARD_STATE_READY);
  ds4->add_ranks()->mutable_status()->set_state(v1::SHARD_STATE_FAILED);

  HealthReport report = Judge(Nodes({lost}), groups);
  EXPECT_EQ(report.nodes[0].health.verdict, "unhealthy");
  ASSERT_EQ(report.groups.size(), 1u);
  EXPECT_EQ(report.groups[0].health.verdict, "unhealthy");
  EXPECT_EQ(report.groups[0].ranks, "1/2 ready");
  EXPECT_THAT(report.groups[0].health.reasons[0],
              HasSubstr("group failed: rank 1 on spark-3 Failed"));
  std::string text = RenderHealth(report);
  EXPECT_THAT(text, HasSubstr("GROUP"));
  EXPECT_THAT(HealthJson(report).dump(), HasSubstr("\"health\":\"unhealthy\""));
}

TEST(JudgeHealth, GpuErrorsSinceTheLastLookAreNamed) {
  v1::ListNodesResponse nodes = Nodes({Spark("spark-1")});
  v1::HealthResponse looks = LooksOf(nodes);
  v1::GpuErrors& gpu = *looks.mutable_nodes(0)->mutable_sample()->mutable_gpu_errors(0);
  gpu.set_ecc_uncorrected(5);
  gpu.set_ecc_uncorrected_delta(2);
  gpu.set_ecc_corrected(40);
  gpu.set_ecc_corrected_delta(3);  // corrected errors are shown, not judged
  gpu.add_xids(13);
  gpu.add_xids(79);

  HealthReport report = JudgeHealth(nodes, {}, {}, looks);
  const NodeHealth& n = report.nodes[0];
  EXPECT_EQ(n.health.verdict, "unhealthy");
  EXPECT_EQ(n.gpu_errors, "gpu 0: ecc 5/40, xid 13 79");
  EXPECT_THAT(n.health.reasons,
              ElementsAre(HasSubstr("GPU 0: 2 uncorrectable ECC error(s) since the last look"),
                          HasSubstr("GPU 0: XID 13 since the last look (usually the "
                                    "application's fault"),
                          HasSubstr("GPU 0: XID 79 (GPU has fallen off the bus)")));
}

TEST(JudgeHealth, EccAndXidThatCannotBeReadSayWhy) {
  v1::ListNodesResponse nodes = Nodes({Spark("spark-1")});
  v1::HealthResponse looks = LooksOf(nodes);
  v1::GpuErrors& gpu = *looks.mutable_nodes(0)->mutable_sample()->mutable_gpu_errors(0);
  gpu.set_ecc_unavailable("nvmlDeviceGetTotalEccErrors: Not Supported");
  gpu.set_xid_unavailable("nvmlDeviceRegisterEvents: Not Supported");

  const NodeHealth n = JudgeHealth(nodes, {}, {}, looks).nodes[0];
  EXPECT_EQ(n.health.verdict, "healthy");
  EXPECT_EQ(n.gpu_errors,
            "gpu 0: ecc not read (nvmlDeviceGetTotalEccErrors: Not Supported), xid not watched "
            "(nvmlDeviceRegisterEvents: Not Supported)");
}

TEST(JudgeHealth, AHotOrHeldBackGpuIsDegraded) {
  v1::Node node = Spark("spark-1");
  v1::GpuDevice& gpu = *node.mutable_probe()->mutable_gpu()->mutable_gpus(0);
  gpu.set_temperature_c(91);
  gpu.add_throttle_reasons("GpuIdle");
  gpu.add_throttle_reasons("HwThermalSlowdown");
  gpu.set_memory_total_bytes(80ull << 30);
  gpu.set_memory_used_bytes(20ull << 30);

  const NodeHealth n = Judge(Nodes({node})).nodes[0];
  EXPECT_EQ(n.gpu, "1 x NVIDIA GB10, 91 C, 2405 MHz, 20.0 GiB of 80.0 GiB used");
  EXPECT_THAT(n.health.reasons, ElementsAre("GPU 0 at 91 C (85 C and over): check the airflow",
                                            "GPU 0 clocks held back: HwThermalSlowdown"));
}

TEST(JudgeHealth, LinkErrorCountersThatGrewAreNamedWithThePort) {
  v1::ListNodesResponse nodes = Nodes({Spark("spark-1")});
  v1::HealthResponse looks = LooksOf(nodes);
  v1::PortCounters& port = *looks.mutable_nodes(0)->mutable_sample()->mutable_ports(1);
  port.mutable_counters(0)->set_delta(3);
  v1::PortCounter& oob = *port.add_counters();
  oob.set_name("out_of_buffer");
  oob.set_value(12);
  oob.set_delta(12);

  const NodeHealth n = JudgeHealth(nodes, {}, {}, looks).nodes[0];
  EXPECT_EQ(n.health.verdict, "degraded");
  EXPECT_EQ(n.link_errors, "symbol_error +3 (roceP2p1s0f1/1), out_of_buffer +12 (roceP2p1s0f1/1)");
  EXPECT_THAT(n.health.reasons,
              ElementsAre(HasSubstr("roceP2p1s0f1/1 symbol_error +3 since the last look: check "
                                    "the cable"),
                          HasSubstr("roceP2p1s0f1/1 out_of_buffer +12")));

  // An agent's first look has nothing to compare with.
  looks = LooksOf(nodes);
  looks.mutable_nodes(0)->mutable_sample()->set_since_last_look_s(0);
  EXPECT_EQ(JudgeHealth(nodes, {}, {}, looks).nodes[0].link_errors, "first look");
}

TEST(JudgeHealth, ANodeWithoutAFreshLookIsJudgedOnItsRegistrationAndSaysWhy) {
  v1::ListNodesResponse nodes = Nodes({Spark("spark-1"), Spark("spark-2")});
  v1::HealthResponse looks = LooksOf(nodes);
  looks.mutable_nodes(1)->clear_sample();
  looks.mutable_nodes(1)->set_error("no answer from its agent: deadline exceeded");

  HealthReport report = JudgeHealth(nodes, {}, {}, looks);
  EXPECT_EQ(report.nodes[0].health.verdict, "healthy");
  const NodeHealth& n = report.nodes[1];
  EXPECT_EQ(n.health.verdict, "degraded");
  EXPECT_THAT(n.health.reasons,
              ElementsAre("no fresh look (no answer from its agent: deadline exceeded): figures "
                          "are from its registration"));
  EXPECT_EQ(n.gpu, "1 x NVIDIA GB10");  // no live temperature from a registration probe
  EXPECT_EQ(n.links, "2/2 up, 200 Gb/s, MTU 4096");
}

TEST(JudgeHealth, FreeDiskAtTheMountedPathsIsShown) {
  v1::Node node = Spark("spark-1");
  v1::DiskProbe& models = *node.mutable_probe()->add_disks();
  models.set_path("/srv/models");
  models.set_present(true);
  models.set_total_bytes(1000ull << 30);
  models.set_free_bytes(50ull << 30);
  v1::DiskProbe& gone = *node.mutable_probe()->add_disks();
  gone.set_path("/srv/hf");
  gone.set_error("statvfs /srv/hf: No such file or directory");

  const NodeHealth n = Judge(Nodes({node})).nodes[0];
  EXPECT_EQ(n.disks,
            "/srv/models 50.0 GiB free, /srv/hf statvfs /srv/hf: No such file or "
            "directory");
  EXPECT_THAT(n.health.reasons, ElementsAre("/srv/models has 50.0 GiB free (under 10%)"));
}

TEST(JudgeHealth, AGroupShowsItsHeadsLiveFiguresAndAFullKvCacheWithAQueue) {
  v1::ListNodesResponse nodes = Nodes({Spark("spark-1"), Spark("spark-2")});
  v1::ListGroupsResponse groups;
  v1::Group& g = *groups.add_groups();
  g.set_name("ds4");
  g.set_generation(2);
  g.set_state(v1::GROUP_STATE_READY);
  v1::HealthResponse looks = LooksOf(nodes);
  auto head = [](double tps, double running, double waiting, double kv, uint64_t generation) {
    v1::ShardStatus s;
    s.set_group("ds4");
    s.set_generation(generation);
    v1::EngineFigures& e = *s.mutable_engine();
    e.set_tokens_per_second(tps);
    e.set_requests_running(running);
    e.set_requests_waiting(waiting);
    e.set_kv_cache_usage(kv);
    return s;
  };
  *looks.mutable_nodes(0)->mutable_sample()->add_shards() = head(812.5, 8, 3, 0.97, 2);
  *looks.mutable_nodes(1)->mutable_sample()->add_shards() = head(400, 4, 0, 0.5, 2);
  // The previous generation's head, still stopping, is not counted; nor is a worker.
  *looks.mutable_nodes(1)->mutable_sample()->add_shards() = head(999, 9, 9, 0.99, 1);
  v1::ShardStatus worker;
  worker.set_group("ds4");
  worker.set_generation(2);
  *looks.mutable_nodes(1)->mutable_sample()->add_shards() = worker;

  std::vector<v1::GroupEventRecord> events(3);
  events[0].set_group("ds4");
  events[0].set_action("stop every rank");
  events[1].set_group("ds4");
  events[1].set_action("started generation 2");
  events[2].set_group("other");
  events[2].set_action("started generation 5");
  HealthReport report = JudgeHealth(nodes, groups, {}, looks, events);
  ASSERT_EQ(report.groups.size(), 1u);
  const GroupHealth& h = report.groups[0];
  EXPECT_EQ(h.restarts, 1);  // its own "started generation", not the other group's
  EXPECT_DOUBLE_EQ(h.tokens_per_second.value_or(-1), 1212.5);
  EXPECT_DOUBLE_EQ(h.requests_running.value_or(-1), 12);
  EXPECT_DOUBLE_EQ(h.requests_waiting.value_or(-1), 3);
  EXPECT_DOUBLE_EQ(h.kv_cache_usage.value_or(-1), 0.97);
  EXPECT_EQ(h.health.verdict, "degraded");
  EXPECT_THAT(h.health.reasons, ElementsAre(HasSubstr("KV cache 97% full with 3 request(s) "
                                                      "waiting: add replicas")));
  std::string text = RenderHealth(report);
  EXPECT_THAT(text, HasSubstr("1212.5"));
  EXPECT_THAT(text, HasSubstr("97%"));
  nlohmann::ordered_json doc = HealthJson(report);
  EXPECT_DOUBLE_EQ(doc["groups"][0]["tokens_per_second"].get<double>(), 1212.5);

  // Without any head's figures the columns say so, never 0.
  looks = LooksOf(nodes);
  report = JudgeHealth(nodes, groups, {}, looks);
  EXPECT_FALSE(report.groups[0].tokens_per_second.has_value());
  EXPECT_TRUE(HealthJson(report)["groups"][0]["kv_cache_usage"].is_null());
}

TEST(RenderHealth, HundredNodesDrawInUnder200Milliseconds) {
  std::vector<v1::Node> nodes;
  std::vector<v1::FabricResult> fabric;
  for (int i = 0; i < 100; ++i) {
    nodes.push_back(Spark(absl::StrCat("spark-", i)));
    v1::FabricResult r;
    r.set_test("tcp");
    r.set_from(absl::StrCat("spark-", i));
    r.set_to(absl::StrCat("spark-", (i + 1) % 100));
    r.set_measured(true);
    r.set_bandwidth_gbps(95);
    r.set_verdict("pass");
    fabric.push_back(r);
  }
  v1::ListNodesResponse listed = Nodes(std::move(nodes));
  v1::HealthResponse looks = LooksOf(listed);
  auto start = std::chrono::steady_clock::now();
  std::string text = RenderHealth(JudgeHealth(listed, {}, fabric, looks));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::milliseconds(200));
  EXPECT_THAT(text, HasSubstr("spark-99"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 101);  // header + 100 nodes
}

}  // namespace
}  // namespace fleet::cli
