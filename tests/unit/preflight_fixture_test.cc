// Preflight end to end over recorded DGX Spark trees (tests/fixtures/nodes): the real RDMA,
// network and limits probes read each tree, placement derives each rank's fabric interface
// and RDMA devices from them, the repo's 2-Spark recipe is planned, and preflight judges the
// pair. The node facts each agent registers with (/dev/infiniband among them) are read from the
// same trees. The library-backed sections (GPU through NVML, NCCL through dlopen, the image and the
// model) need a live node, so the test fills them as those probes report them on a Spark.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "agent/probes/limits.h"
#include "agent/probes/network.h"
#include "agent/probes/node_facts.h"
#include "agent/probes/rdma.h"
#include "controller/preflight/preflight.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/placement.h"
#include "launch/plan.h"
#include "launch/recipe.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;

std::string Source(const std::string& path) { return std::string(FLEET_SOURCE_DIR) + "/" + path; }

// A writable copy of a recorded tree.
class Tree {
 public:
  explicit Tree(const std::string& node) {
    std::string pattern = (std::filesystem::temp_directory_path() / "preflight.XXXXXX").string();
    root_ = ::mkdtemp(pattern.data());
    std::filesystem::copy(Source("tests/fixtures/nodes/" + node), root_,
                          std::filesystem::copy_options::recursive);
  }
  ~Tree() { std::filesystem::remove_all(root_); }
  void Write(const std::string& path, const std::string& content) const {
    std::ofstream(root_ + "/" + path, std::ios::trunc) << content << "\n";
  }
  void Remove(const std::string& path) const { std::filesystem::remove_all(root_ + "/" + path); }
  v1::NodeFacts Facts() const { return agent::ReadNodeFacts(root_); }
  v1::NodeProbe Probe() const {
    agent::ProbeContext ctx{.root = root_, .live = false};
    v1::NodeProbe probe;
    agent::ProbeRdma(ctx, &probe);
    agent::ProbeNetwork(ctx, &probe);
    agent::ProbeLimits(ctx, &probe);
    v1::GpuDevice& gpu = *probe.mutable_gpu()->add_gpus();
    gpu.set_name("NVIDIA GB10");
    gpu.set_compute_capability("12.1");
    gpu.set_arch("sm_121");
    probe.mutable_gpu()->set_driver_version("580.95.05");
    probe.mutable_gpu()->set_cuda_driver_version("13.0");
    probe.mutable_nccl()->set_version(nccl_);
    probe.mutable_nccl()->set_library("/usr/lib/aarch64-linux-gnu/libnccl.so.2");
    v1::ImageProbe& image = *probe.add_images();
    image.set_image("vllm-node-dsv4");
    image.set_present(true);
    image.set_id("sha256:5f1e");
    v1::ModelProbe& model = *probe.add_models();
    model.set_path("/root/.cache/huggingface/hub/models--deepseek-ai--DeepSeek-V4-Flash");
    model.set_present(true);
    model.set_total_bytes(uint64_t{158} << 30);
    model.set_sha256("a1b2");
    return probe;
  }
  void set_nccl(std::string version) { nccl_ = std::move(version); }

 private:
  std::string root_;
  std::string nccl_ = "2.30.4";
};

v1::Node Registered(const std::string& name, const std::string& address, const Tree& tree) {
  v1::Node node;
  node.mutable_identity()->set_name(name);
  node.mutable_identity()->set_node_id(name);
  node.set_address(address + ":7101");
  *node.mutable_probe() = tree.Probe();
  *node.mutable_facts() = tree.Facts();
  return node;
}

std::string Env(const v1::ShardSpec& spec, const std::string& name) {
  for (const v1::EnvVar& e : spec.env()) {
    if (e.name() == name) return e.value();
  }
  return "";
}

class PreflightFixtureTest : public ::testing::Test {
 protected:
  // Plans the 2-Spark recipe on the pair as registered (healthy, or spark-b as
  // `registered_b` is), then judges it with what the probes see now in `a` and `b`.
  std::vector<CheckRow> Judge(const Tree& a, const Tree& b, const Tree* registered_b = nullptr) {
    absl::StatusOr<engine::Recipe> recipe =
        engine::LoadRecipe(Source("recipes/deepseek-v4-flash-2x.yaml"));
    EXPECT_TRUE(recipe.ok()) << recipe.status();
    Tree healthy_a("spark-a"), healthy_b("spark-b");
    engine::GroupContext group;
    group.group = "ds4";
    group.nodes = {ToNodeView(Registered("spark-a", "192.168.100.10", healthy_a)),
                   ToNodeView(Registered("spark-b", "192.168.100.11",
                                         registered_b != nullptr ? *registered_b : healthy_b))};
    group.master_addr = group.nodes[0].fabric_address;
    group.master_port = 29500;
    absl::StatusOr<engine::GroupPlan> plan = engine::PlanGroup(*recipe, {}, group);
    EXPECT_TRUE(plan.ok()) << plan.status();
    plan_ = *plan;
    return RunPreflight(*recipe, {{group.nodes[0], a.Probe(), plan->ranks[0]},
                                  {group.nodes[1], b.Probe(), plan->ranks[1]}});
  }

  static const CheckRow* Find(const std::vector<CheckRow>& rows, const std::string& node,
                              const std::string& check) {
    for (const CheckRow& row : rows) {
      if (row.node == node && row.check == check && row.verdict != Verdict::kPass) return &row;
    }
    return nullptr;
  }

  engine::GroupPlan plan_;
};

TEST_F(PreflightFixtureTest, HealthyPairPassesAndNcclUsesBothHalvesOfThePort) {
  Tree a("spark-a"), b("spark-b");
  std::vector<CheckRow> rows = Judge(a, b);
  EXPECT_FALSE(AnyFailure(rows));
  for (const CheckRow& row : rows) {
    EXPECT_NE(row.verdict, Verdict::kFail) << row.node << " " << row.check << ": " << row.observed;
  }
  for (const v1::ShardSpec& spec : plan_.ranks) {
    EXPECT_EQ(Env(spec, "NCCL_IB_HCA"), "=rocep1s0f1,roceP2p1s0f1");
    EXPECT_EQ(Env(spec, "NCCL_SOCKET_IFNAME"), "enp1s0f1np1");
  }
  for (const v1::ShardSpec& spec : plan_.ranks) EXPECT_TRUE(spec.infiniband()) << spec.rank();
  EXPECT_EQ(Env(plan_.ranks[0], "VLLM_HOST_IP"), "192.168.100.10");
  EXPECT_EQ(Env(plan_.ranks[1], "VLLM_HOST_IP"), "192.168.100.11");
}

TEST_F(PreflightFixtureTest, Memlock8MiBIsCaughtWithTheDockerFix) {
  Tree a("spark-a"), b("spark-b");
  b.Write("proc/self/limits",
          "Limit                     Soft Limit           Hard Limit           Units\n"
          "Max locked memory         8388608              8388608              bytes");
  std::vector<CheckRow> rows = Judge(a, b);
  const CheckRow* row = Find(rows, "spark-b", "memlock");
  ASSERT_NE(row, nullptr);
  EXPECT_THAT(row->observed, HasSubstr("8"));
  EXPECT_THAT(row->fix, HasSubstr("LimitMEMLOCK=infinity"));
}

TEST_F(PreflightFixtureTest, Mtu1500OnOneSideFails) {
  Tree a("spark-a"), b("spark-b");
  b.Write("sys/class/net/enp1s0f1np1/mtu", "1500");
  std::vector<CheckRow> rows = Judge(a, b);
  const CheckRow* row = Find(rows, "spark-b", "mtu");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->verdict, Verdict::kFail);
  EXPECT_THAT(row->observed, HasSubstr("1500"));
  EXPECT_THAT(row->fix, HasSubstr("9000"));
}

TEST_F(PreflightFixtureTest, PortThatWentDownFails) {
  Tree a("spark-a"), b("spark-b");
  b.Write("sys/class/infiniband/roceP2p1s0f1/ports/1/state", "1: DOWN");
  b.Write("sys/class/infiniband/roceP2p1s0f1/ports/1/phys_state", "3: Disabled");
  std::vector<CheckRow> rows = Judge(a, b);
  const CheckRow* row = Find(rows, "spark-b", "rdma-port");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->verdict, Verdict::kFail);
  EXPECT_THAT(row->observed, HasSubstr("DOWN"));
}

// The 2-Spark recipe asks for no NCCL minimum (two-Spark groups ran on 2.28) and 2.28 is refused
// only from 4 ranks, but the ranks of one group must load the same NCCL.
TEST_F(PreflightFixtureTest, DifferentNcclVersionsFail) {
  Tree a("spark-a"), b("spark-b");
  b.set_nccl("2.28.9");
  std::vector<CheckRow> rows = Judge(a, b);
  const CheckRow* same = Find(rows, "spark-b", "nccl-same");
  ASSERT_NE(same, nullptr);
  EXPECT_EQ(same->verdict, Verdict::kFail);
  EXPECT_EQ(Find(rows, "spark-b", "nccl-2.28"), nullptr);
}

// A Spark whose RDMA driver is loaded (sysfs lists its devices) but not the verbs modules has
// no /dev/infiniband: it registers without it, the plan's docker line for it lacks the
// device, and preflight fails that rank before NCCL can fall back to TCP unseen.
TEST_F(PreflightFixtureTest, DockerRankWithoutDevInfinibandFailsNamingTheDevices) {
  Tree a("spark-a"), b("spark-b");
  b.Remove("dev/infiniband");
  std::vector<CheckRow> rows = Judge(a, b, &b);
  EXPECT_TRUE(plan_.ranks[0].infiniband());
  EXPECT_FALSE(plan_.ranks[1].infiniband());
  EXPECT_EQ(Find(rows, "spark-a", "rdma-device"), nullptr);
  const CheckRow* row = Find(rows, "spark-b", "rdma-device");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->verdict, Verdict::kFail);
  EXPECT_EQ(row->observed,
            "spark-b has RDMA devices roceP2p1s0f0, roceP2p1s0f1, rocep1s0f0, rocep1s0f1 but its "
            "docker line lacks --device /dev/infiniband (NCCL would fall back to TCP sockets)");
  EXPECT_THAT(row->fix, HasSubstr("modprobe ib_uverbs rdma_ucm"));
  EXPECT_THAT(row->fix, HasSubstr("`infiniband: true` for spark-b"));
}

}  // namespace
}  // namespace fleet::controller
