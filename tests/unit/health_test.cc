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

TEST(JudgeHealth, AWellSetUpSparkIsHealthy) {
  HealthReport report = JudgeHealth(Nodes({Spark("spark-1")}), {}, {});
  ASSERT_EQ(report.nodes.size(), 1u);
  const NodeHealth& n = report.nodes[0];
  EXPECT_EQ(n.health.verdict, "healthy") << n.health.reasons.front();
  EXPECT_EQ(n.gpu, "1 x NVIDIA GB10");
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

  HealthReport report = JudgeHealth(Nodes({node}), {}, {slow});
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

  HealthReport report = JudgeHealth(Nodes({lost}), groups, {});
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
  auto start = std::chrono::steady_clock::now();
  std::string text = RenderHealth(JudgeHealth(listed, {}, fabric));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::milliseconds(200));
  EXPECT_THAT(text, HasSubstr("spark-99"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 101);  // header + 100 nodes
}

}  // namespace
}  // namespace fleet::cli
