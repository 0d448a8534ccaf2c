// Preflight: a healthy pair of DGX Sparks passes every check; each broken variant fails (or
// warns) the one check it breaks, with the observed value and the fix the operator needs.
#include "controller/preflight/preflight.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

// One half of a Spark's ConnectX-7 port: RDMA device, its interface and RoCE v2 GID.
void AddHalf(v1::NodeProbe* probe, const std::string& device, const std::string& netdev,
             const std::string& ipv4) {
  v1::RdmaDevice* dev = probe->add_rdma();
  dev->set_name(device);
  v1::RdmaPort* port = dev->add_ports();
  port->set_port(1);
  port->set_state("ACTIVE");
  port->set_phys_state("LinkUp");
  port->set_link_layer("Ethernet");
  port->set_rate("100 Gb/sec (4X EDR)");
  port->set_rate_gbps(100);
  port->set_active_mtu(4096);
  port->set_netdev(netdev);
  v1::RdmaGid* link_local = port->add_gids();
  link_local->set_index(1);
  link_local->set_gid("fe80:0000:0000:0000:0000:0000:0000:0001");
  link_local->set_type("RoCE v2");
  link_local->set_netdev(netdev);
  v1::RdmaGid* gid = port->add_gids();
  gid->set_index(3);
  gid->set_type("RoCE v2");
  gid->set_netdev(netdev);
  gid->set_ipv4(ipv4);
  port->set_roce_v2_gid_index(3);
  port->set_verbs_checked(true);

  v1::ProbedInterface* iface = probe->add_interfaces();
  iface->set_name(netdev);
  iface->add_addresses(absl::StrCat(ipv4, "/24"));
  iface->set_mtu(9000);
  iface->set_operstate("up");
  iface->set_speed_mbps(100000);
  iface->set_fabric(true);
  iface->add_rdma_devices(device);
}

// What a healthy DGX Spark's probes see; `host` is the last octet of its fabric addresses.
v1::NodeProbe SparkProbe(int host) {
  v1::NodeProbe probe;
  AddHalf(&probe, "rocep1s0f1", "enp1s0f1np1", absl::StrCat("192.168.100.", host));
  AddHalf(&probe, "roceP2p1s0f1", "enP2p1s0f1np1", absl::StrCat("192.168.101.", host));
  v1::ProbedInterface* control = probe.add_interfaces();
  control->set_name("enP7s7");
  control->add_addresses(absl::StrCat("10.0.0.", host, "/24"));
  control->set_mtu(1500);

  v1::GpuProbe* gpu = probe.mutable_gpu();
  gpu->set_driver_version("580.95.05");
  gpu->set_cuda_device_count(1);
  gpu->set_cuda_driver_version("13.0");
  gpu->set_cuda_runtime_version("13.0");
  v1::GpuDevice* device = gpu->add_gpus();
  device->set_name("NVIDIA GB10");
  device->set_compute_capability("12.1");
  device->set_arch("sm_121");

  v1::NcclProbe* nccl = probe.mutable_nccl();
  nccl->set_version("2.30.4");
  nccl->set_version_code(23004);
  nccl->set_library("/usr/lib/aarch64-linux-gnu/libnccl.so.2.30.4");

  v1::LimitsProbe* limits = probe.mutable_limits();
  limits->set_memlock_soft(kUnlimited);
  limits->set_memlock_hard(kUnlimited);
  limits->set_shm_total_bytes(64 * kGiB);
  limits->set_shm_free_bytes(64 * kGiB);

  v1::DiskProbe* disk = probe.add_disks();
  disk->set_path("/srv/models/ds4");
  disk->set_present(true);
  disk->set_free_bytes(800 * kGiB);
  disk->set_total_bytes(3700 * kGiB);
  v1::DiskProbe* cache = probe.add_disks();
  cache->set_path("/var/lib/fleet/cache/ds4/root_.cache_vllm");
  cache->set_present(true);
  cache->set_free_bytes(800 * kGiB);

  v1::ImageProbe* image = probe.add_images();
  image->set_image("vllm-node:latest");
  image->set_present(true);
  image->set_id("sha256:aaa");

  v1::ModelProbe* model = probe.add_models();
  model->set_path("/srv/models/ds4");
  model->set_present(true);
  model->set_total_bytes(150 * kGiB);
  model->set_file_count(48);
  model->set_sha256("5e3c0ffee");
  return probe;
}

v1::ShardSpec SparkSpec(int rank, int world, int host, v1::ShardRuntime runtime) {
  v1::ShardSpec spec;
  spec.set_group("ds4");
  spec.set_rank(rank);
  spec.set_world_size(world);
  spec.set_runtime(runtime);
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"NCCL_SOCKET_IFNAME", "enp1s0f1np1"},
           {"NCCL_IB_HCA", "=rocep1s0f1,roceP2p1s0f1"},
           {"NCCL_IB_DISABLE", "0"},
           {"VLLM_HOST_IP", absl::StrCat("192.168.100.", host)}}) {
    v1::EnvVar* var = spec.add_env();
    var->set_name(name);
    var->set_value(value);
  }
  if (runtime == v1::SHARD_RUNTIME_DOCKER) {
    spec.set_image("vllm-node:latest");
    spec.add_cache_dirs("/root/.cache/vllm");
    spec.set_shm_bytes(32 * kGiB);
    spec.set_gpus(true);
    spec.set_infiniband(true);
  }
  spec.set_memlock_bytes(kUnlimited);
  return spec;
}

engine::Recipe SparkRecipe() {
  engine::Recipe recipe;
  recipe.name = "ds4";
  recipe.engine = "vllm";
  recipe.requirements.nccl = ">=2.30.4";
  recipe.requirements.memlock_bytes = kUnlimited;
  recipe.requirements.shm_bytes = 32 * kGiB;
  recipe.requirements.mtu = 9000;
  recipe.requirements.gpu_arch = "sm_121";
  recipe.requirements.min_free_disk_bytes = 100 * kGiB;
  return recipe;
}

// spark-a, spark-b, ... with fabric addresses .11, .12, ...
std::vector<PreflightNode> Group(int size, v1::ShardRuntime runtime = v1::SHARD_RUNTIME_DOCKER) {
  std::vector<PreflightNode> nodes(size);
  for (int rank = 0; rank < size; ++rank) {
    const int host = 11 + rank;
    PreflightNode& node = nodes[rank];
    node.view.name = absl::StrCat("spark-", std::string(1, static_cast<char>('a' + rank)));
    node.view.fabric_interface = "enp1s0f1np1";
    node.view.fabric_address = absl::StrCat("192.168.100.", host);
    node.view.rdma_devices = {"rocep1s0f1", "roceP2p1s0f1"};
    node.view.has_gpus = true;
    node.view.has_infiniband = true;
    node.probe = SparkProbe(host);
    node.spec = SparkSpec(rank, size, host, runtime);
  }
  return nodes;
}

v1::RdmaPort* Port(PreflightNode* node, int device) {
  return node->probe.mutable_rdma(device)->mutable_ports(0);
}

std::vector<CheckRow> Rows(const std::vector<CheckRow>& rows, const std::string& node,
                           const std::string& check) {
  std::vector<CheckRow> out;
  for (const CheckRow& row : rows) {
    if (row.node == node && row.check == check) out.push_back(row);
  }
  return out;
}

// The only row of `check` on `node`.
CheckRow Row(const std::vector<CheckRow>& rows, const std::string& node, const std::string& check) {
  std::vector<CheckRow> found = Rows(rows, node, check);
  EXPECT_EQ(found.size(), 1u) << node << " " << check;
  return found.empty() ? CheckRow{} : found.front();
}

std::vector<std::string> NonPassing(const std::vector<CheckRow>& rows) {
  std::vector<std::string> out;
  for (const CheckRow& row : rows) {
    if (row.verdict != Verdict::kPass) {
      out.push_back(absl::StrCat(row.node, " ", row.check, " ", VerdictName(row.verdict), ": ",
                                 row.observed, " / ", row.expected, " / ", row.fix));
    }
  }
  return out;
}

TEST(PreflightTest, HealthyPairPassesEveryCheck) {
  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), Group(2));
  EXPECT_THAT(NonPassing(rows), IsEmpty());
  EXPECT_FALSE(AnyFailure(rows));
  for (const std::string node : {"spark-a", "spark-b"}) {
    for (const std::string check :
         {"nccl", "nccl-same", "memlock", "shm", "mtu", "subnet", "gpu", "gpu-driver", "gpu-cuda",
          "image", "model", "disk", "cache-dirs"}) {
      EXPECT_THAT(Rows(rows, node, check), Not(IsEmpty())) << node << " " << check;
    }
    EXPECT_EQ(Rows(rows, node, "rdma-port").size(), 2u);
    EXPECT_EQ(Rows(rows, node, "rdma-gid").size(), 2u);
    EXPECT_EQ(Rows(rows, node, "rdma-rate").size(), 2u);
    EXPECT_EQ(Rows(rows, node, "subnet").size(), 2u);
  }
  for (const CheckRow& row : rows) EXPECT_THAT(row.fix, IsEmpty()) << row.check;
  EXPECT_TRUE(Rows(rows, "spark-a", "nccl-2.28").empty());
  EXPECT_EQ(Row(rows, "spark-b", "nccl").observed, "2.30.4");
  EXPECT_EQ(Rows(rows, "spark-b", "rdma-gid")[0].observed,
            "rocep1s0f1 port 1 GID 3 192.168.100.12");
  EXPECT_EQ(Row(rows, "spark-a", "image").observed, "sha256:aaa");
}

TEST(PreflightTest, RowsAreSortedByCheckThenRank) {
  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), Group(2));
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.front().check, "nccl");
  EXPECT_EQ(rows.front().node, "spark-a");
  EXPECT_EQ(rows[1].check, "nccl");
  EXPECT_EQ(rows[1].node, "spark-b");
  EXPECT_EQ(rows.back().check, "cache-dirs");
  EXPECT_EQ(rows.back().node, "spark-b");
  const std::vector<std::string> order = {
      "nccl",       "nccl-same", "nccl-2.28", "memlock", "shm",    "rdma-device",
      "rdma-port",  "rdma-gid",  "rdma-rate", "mtu",     "subnet", "gpu",
      "gpu-driver", "gpu-cuda",  "image",     "model",   "disk",   "cache-dirs"};
  auto key = [&](const CheckRow& row) {
    return std::make_pair(std::find(order.begin(), order.end(), row.check) - order.begin(),
                          row.rank);
  };
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_LE(key(rows[i - 1]), key(rows[i])) << rows[i - 1].check << " " << rows[i].check;
  }
}

TEST(PreflightTest, ProcessRuntimeMemlockOfTheAgentFails) {
  std::vector<PreflightNode> nodes = Group(2, v1::SHARD_RUNTIME_PROCESS);
  nodes[1].probe.mutable_limits()->set_memlock_hard(8 * kMiB);
  nodes[1].spec.clear_memlock_bytes();  // the recipe asks for none: the agent's limit is kept
  engine::Recipe recipe = SparkRecipe();
  recipe.requirements.memlock_bytes.reset();

  const CheckRow row = Row(RunPreflight(recipe, nodes), "spark-b", "memlock");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "8 MiB (the agent's hard limit)");
  EXPECT_EQ(row.expected, "unlimited (RDMA is used)");
  EXPECT_THAT(row.fix, AllOf(HasSubstr("Cannot allocate memory"),
                             HasSubstr("LimitMEMLOCK=infinity in its systemd unit"),
                             HasSubstr("/etc/security/limits.conf")));
}

TEST(PreflightTest, ProcessRuntimeMemlockTheAgentMayNotGrantFails) {
  std::vector<PreflightNode> nodes = Group(2, v1::SHARD_RUNTIME_PROCESS);
  nodes[1].probe.mutable_limits()->set_memlock_hard(8 * kMiB);

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "memlock");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "the agent's hard limit is 8 MiB and it may not raise it to unlimited");
  EXPECT_THAT(row.fix, HasSubstr("LimitMEMLOCK=infinity"));

  nodes[1].probe.mutable_limits()->set_can_raise_memlock(true);
  EXPECT_EQ(Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "memlock").verdict, Verdict::kPass);
}

TEST(PreflightTest, DockerRuntimeMemlockWarnsAboutDockerd) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_limits()->set_memlock_hard(8 * kMiB);

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "memlock");
  EXPECT_EQ(row.verdict, Verdict::kWarn);
  EXPECT_EQ(row.observed,
            "container --ulimit memlock=-1 (unlimited); this node's hard limit is 8 MiB and "
            "dockerd's own is not probed");
  EXPECT_THAT(row.fix, AllOf(HasSubstr("LimitMEMLOCK=infinity"), HasSubstr("systemctl edit docker"),
                             HasSubstr("error setting rlimit type 8")));
}

TEST(PreflightTest, DockerRuntimeFiniteMemlockFailsWithRdma) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].spec.set_memlock_bytes(8 * kMiB);
  engine::Recipe recipe = SparkRecipe();
  recipe.requirements.memlock_bytes = 8 * kMiB;

  const CheckRow row = Row(RunPreflight(recipe, nodes), "spark-b", "memlock");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "container --ulimit memlock=8 MiB");
  EXPECT_THAT(row.fix, AllOf(HasSubstr("Cannot allocate memory"), HasSubstr("--ulimit memlock=-1"),
                             HasSubstr("requires: {memlock: unlimited}")));
}

TEST(PreflightTest, Mtu1500OnOneSideFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_interfaces(0)->set_mtu(1500);  // enp1s0f1np1

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  EXPECT_THAT(NonPassing(rows), testing::SizeIs(1));
  const CheckRow row = Rows(rows, "spark-b", "mtu")[0];
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "MTU 1500 on enp1s0f1np1");
  EXPECT_EQ(row.expected, "9000");
  EXPECT_EQ(row.fix,
            "set `mtu: 9000` in netplan for enp1s0f1np1 on both ends of the link, then "
            "`netplan apply`");
}

TEST(PreflightTest, PortDownFails) {
  std::vector<PreflightNode> nodes = Group(2);
  Port(&nodes[1], 1)->set_state("DOWN");
  Port(&nodes[1], 1)->set_phys_state("Disabled");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const CheckRow row = Rows(rows, "spark-b", "rdma-port")[1];
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "roceP2p1s0f1 port 1 DOWN/Disabled");
  EXPECT_THAT(row.fix, HasSubstr("`ip link set enP2p1s0f1np1 up`"));
  EXPECT_TRUE(AnyFailure(rows));
}

TEST(PreflightTest, MissingDeviceFailsNamingTheNodesDevices) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].spec.mutable_env(1)->set_value("=rocep1s0f0,roceP2p1s0f1");

  const CheckRow row = Rows(RunPreflight(SparkRecipe(), nodes), "spark-b", "rdma-port")[0];
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "rocep1s0f0 not found (the node has: rocep1s0f1, roceP2p1s0f1)");
}

TEST(PreflightTest, Nccl228FailsAtFourRanks) {
  std::vector<PreflightNode> nodes = Group(4);
  for (PreflightNode& node : nodes) node.probe.mutable_nccl()->set_version("2.28.9");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const CheckRow wedge = Row(rows, "spark-d", "nccl-2.28");
  EXPECT_EQ(wedge.verdict, Verdict::kFail);
  EXPECT_EQ(wedge.observed, "2.28.9 with 4 ranks");
  EXPECT_EQ(wedge.fix,
            "NCCL 2.28 wedges long generations at 4+ ranks; install 2.30.4 in the image or pin "
            "it with LD_PRELOAD=/path/libnccl.so.2.30.4");
  EXPECT_EQ(Row(rows, "spark-a", "nccl").verdict, Verdict::kFail);

  engine::Recipe any_nccl = SparkRecipe();
  any_nccl.requirements.nccl.clear();
  EXPECT_EQ(Row(RunPreflight(any_nccl, nodes), "spark-a", "nccl-2.28").verdict, Verdict::kFail);
}

TEST(PreflightTest, GpuNotProbedIsNoConcernForARecipeThatNeedsNone) {
  std::vector<PreflightNode> nodes = Group(2);
  for (PreflightNode& node : nodes) {
    node.probe.clear_gpu();
    node.probe.add_unavailable("gpu: libnvidia-ml.so.1 not found: no NVIDIA driver on this node");
  }
  engine::Recipe exec = SparkRecipe();
  exec.engine = "exec";
  exec.requirements.gpu_arch.clear();
  const CheckRow row = Row(RunPreflight(exec, nodes), "spark-a", "gpu");
  EXPECT_EQ(row.verdict, Verdict::kPass);
  EXPECT_THAT(row.observed, ::testing::HasSubstr("not probed"));
  EXPECT_EQ(row.fix, "");
  // vLLM needs one: the same probe fails there.
  EXPECT_EQ(Row(RunPreflight(SparkRecipe(), nodes), "spark-a", "gpu").verdict, Verdict::kFail);
}

TEST(PreflightTest, ExecCommandWithoutRequiresNcclIsNotJudgedOnNccl) {
  std::vector<PreflightNode> nodes = Group(4);
  for (PreflightNode& node : nodes) node.probe.mutable_nccl()->set_version("2.28.9");
  engine::Recipe exec = SparkRecipe();
  exec.engine = "exec";
  exec.requirements.nccl.clear();
  const std::vector<CheckRow> rows = RunPreflight(exec, nodes);
  EXPECT_EQ(Row(rows, "spark-a", "nccl").verdict, Verdict::kPass);
  EXPECT_EQ(Row(rows, "spark-a", "nccl").observed, "not used (engine exec, no requires.nccl)");
  for (const CheckRow& row : rows) EXPECT_NE(row.check, "nccl-2.28");
  // Saying it uses NCCL brings every NCCL check back.
  exec.requirements.nccl = ">=2.30.4";
  EXPECT_EQ(Row(RunPreflight(exec, nodes), "spark-a", "nccl-2.28").verdict, Verdict::kFail);
}

TEST(PreflightTest, FleetEngineIsJudgedOnNcclAndGpuOnlyWithDeviceCuda) {
  std::vector<PreflightNode> nodes = Group(4);
  for (PreflightNode& node : nodes) {
    node.probe.mutable_nccl()->set_version("2.28.9");
    node.spec.add_argv("fleet-engine");
    node.spec.add_argv("serve");
    node.spec.add_argv("--device");
    node.spec.add_argv("cpu");
  }
  engine::Recipe native = SparkRecipe();
  native.engine = "native";
  native.requirements.nccl.clear();
  native.requirements.gpu_arch.clear();
  std::vector<CheckRow> rows = RunPreflight(native, nodes);
  EXPECT_EQ(Row(rows, "spark-a", "nccl").observed,
            "not used (fleet-engine on CPUs talks over Gloo)");
  for (const CheckRow& row : rows) EXPECT_NE(row.check, "nccl-2.28");
  // On GPUs its collectives are NCCL's: 2.28 at 4 ranks is refused as for vLLM.
  for (PreflightNode& node : nodes) node.spec.set_argv(3, "cuda");
  rows = RunPreflight(native, nodes);
  EXPECT_EQ(Row(rows, "spark-a", "nccl-2.28").verdict, Verdict::kFail);
}

TEST(PreflightTest, Nccl228AtTwoRanksIsOnlyTheConstraint) {
  std::vector<PreflightNode> nodes = Group(2);
  for (PreflightNode& node : nodes) node.probe.mutable_nccl()->set_version("2.28.9");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const CheckRow row = Row(rows, "spark-a", "nccl");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "2.28.9");
  EXPECT_EQ(row.expected, ">=2.30.4");
  EXPECT_THAT(row.fix, AllOf(HasSubstr("install NCCL 2.30.4 in the image"),
                             HasSubstr("LD_PRELOAD=/path/libnccl.so.2.30.4")));
  EXPECT_TRUE(Rows(rows, "spark-a", "nccl-2.28").empty());
  EXPECT_TRUE(Rows(rows, "spark-b", "nccl-2.28").empty());

  engine::Recipe any_nccl = SparkRecipe();
  any_nccl.requirements.nccl.clear();
  EXPECT_THAT(NonPassing(RunPreflight(any_nccl, nodes)), IsEmpty());
}

TEST(PreflightTest, DifferentNcclVersionsFailNamingThem) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_nccl()->set_version("2.31.0");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  EXPECT_EQ(Row(rows, "spark-a", "nccl-same").verdict, Verdict::kPass);
  const CheckRow row = Row(rows, "spark-b", "nccl-same");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "2.31.0");
  EXPECT_EQ(row.expected, "2.30.4 (as on spark-a)");
  EXPECT_THAT(row.fix, HasSubstr("(spark-a 2.30.4, spark-b 2.31.0)"));
}

TEST(PreflightTest, ImageDigestThatDiffersFailsOnTheOddNode) {
  std::vector<PreflightNode> nodes = Group(3);
  nodes[1].probe.mutable_images(0)->set_id("sha256:bbb");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  EXPECT_EQ(Row(rows, "spark-a", "image").verdict, Verdict::kPass);
  EXPECT_EQ(Row(rows, "spark-c", "image").verdict, Verdict::kPass);
  const CheckRow row = Row(rows, "spark-b", "image");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "sha256:bbb");
  EXPECT_EQ(row.expected, "sha256:aaa (as on spark-a)");
  EXPECT_THAT(row.fix, AllOf(HasSubstr("`docker pull vllm-node:latest`"),
                             HasSubstr("`fleet stage image vllm-node:latest`")));
}

TEST(PreflightTest, MissingImageFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_images(0)->set_present(false);
  nodes[1].probe.mutable_images(0)->clear_id();

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "image");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "vllm-node:latest not on spark-b");
  EXPECT_THAT(row.fix, HasSubstr("`docker pull vllm-node:latest` on spark-b"));
}

TEST(PreflightTest, ModelThatDiffersFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_models(0)->set_sha256("badbad");

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "model");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "/srv/models/ds4: 161061273600 bytes, sha256 badbad");
  EXPECT_EQ(row.expected, "161061273600 bytes, sha256 5e3c0ffee (as on spark-a)");
  EXPECT_THAT(row.fix, HasSubstr("`fleet stage model /srv/models/ds4`"));
}

TEST(PreflightTest, TooLittleShmFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[0].probe.mutable_limits()->set_shm_total_bytes(8 * kGiB);

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-a", "shm");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "/dev/shm 8 GiB");
  EXPECT_EQ(row.expected, ">= 32 GiB");
  EXPECT_THAT(row.fix,
              AllOf(HasSubstr("--ipc host"), HasSubstr("`mount -o remount,size=32G /dev/shm`")));
}

TEST(PreflightTest, NoGpuFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_gpu()->clear_gpus();

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "gpu");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "no GPU");
  EXPECT_EQ(row.expected, "a GPU of sm_121");
  EXPECT_THAT(row.fix, HasSubstr("nvidia-smi"));
}

TEST(PreflightTest, WrongGpuArchitectureFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_gpu()->mutable_gpus(0)->set_name("NVIDIA H100");
  nodes[1].probe.mutable_gpu()->mutable_gpus(0)->set_arch("sm_90");

  const CheckRow row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "gpu");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "NVIDIA H100 sm_90");
}

TEST(PreflightTest, DriverDifferenceWarnsAndCudaDifferenceFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_gpu()->set_driver_version("580.65.06");
  nodes[1].probe.mutable_gpu()->set_cuda_driver_version("12.9");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const CheckRow driver = Row(rows, "spark-b", "gpu-driver");
  EXPECT_EQ(driver.verdict, Verdict::kWarn);
  EXPECT_THAT(driver.fix, HasSubstr("(spark-a 580.95.05, spark-b 580.65.06)"));
  const CheckRow cuda = Row(rows, "spark-b", "gpu-cuda");
  EXPECT_EQ(cuda.verdict, Verdict::kFail);
  EXPECT_EQ(cuda.observed, "12.9");
  EXPECT_EQ(cuda.expected, "13.0 (as on spark-a)");
}

TEST(PreflightTest, DifferentSubnetsFailNamingTheAddresses) {
  std::vector<PreflightNode> nodes = Group(2);
  Port(&nodes[1], 0)->mutable_gids(1)->set_ipv4("192.168.200.12");
  nodes[1].probe.mutable_interfaces(0)->set_addresses(0, "192.168.200.12/24");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const std::vector<CheckRow> subnet = Rows(rows, "spark-b", "subnet");
  ASSERT_EQ(subnet.size(), 2u);
  EXPECT_EQ(subnet[0].verdict, Verdict::kFail);
  EXPECT_EQ(subnet[0].observed, "192.168.200.12/24 on enp1s0f1np1 (rocep1s0f1)");
  EXPECT_EQ(subnet[0].expected, "192.168.100.0/24 with spark-a's 192.168.100.11/24");
  EXPECT_THAT(subnet[0].fix,
              HasSubstr("192.168.200.12/24 (spark-b) and 192.168.100.11/24 (spark-a) are one "
                        "link on different subnets"));
  EXPECT_EQ(subnet[1].verdict, Verdict::kPass);  // the second half is fine
}

TEST(PreflightTest, NoRoceV2GidFails) {
  std::vector<PreflightNode> nodes = Group(2);
  Port(&nodes[0], 0)->set_roce_v2_gid_index(-1);

  const CheckRow row = Rows(RunPreflight(SparkRecipe(), nodes), "spark-a", "rdma-gid")[0];
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "no RoCE v2 GID with an IPv4 address on rocep1s0f1 port 1");
  EXPECT_THAT(row.fix, HasSubstr("give enp1s0f1np1 an IPv4 address"));
}

TEST(PreflightTest, RateMismatchWarnsNamingTheRates) {
  std::vector<PreflightNode> nodes = Group(2);
  Port(&nodes[1], 0)->set_rate_gbps(200);

  const CheckRow row = Rows(RunPreflight(SparkRecipe(), nodes), "spark-b", "rdma-rate")[0];
  EXPECT_EQ(row.verdict, Verdict::kWarn);
  EXPECT_EQ(row.observed, "rocep1s0f1 200 Gb/s");
  EXPECT_THAT(row.fix, HasSubstr("spark-a 100 Gb/s, spark-b 200 Gb/s"));
}

TEST(PreflightTest, UnavailableSectionWarnsUnlessTheRecipeNeedsIt) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.clear_nccl();
  nodes[1].probe.add_unavailable("nccl: libnccl.so.2 not found in the image");

  engine::Recipe any_nccl = SparkRecipe();
  any_nccl.requirements.nccl.clear();
  const CheckRow warn = Row(RunPreflight(any_nccl, nodes), "spark-b", "nccl");
  EXPECT_EQ(warn.verdict, Verdict::kWarn);
  EXPECT_EQ(warn.observed, "not probed: nccl: libnccl.so.2 not found in the image");

  const CheckRow fail = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "nccl");
  EXPECT_EQ(fail.verdict, Verdict::kFail);
  EXPECT_THAT(fail.fix, HasSubstr("LD_LIBRARY_PATH/LD_PRELOAD"));
}

// VLLM_NCCL_SO_PATH naming nothing loadable stops vLLM at start whatever requires.nccl says.
TEST(PreflightTest, VllmNcclSoPathThatLoadsNothingFailsEvenWithoutRequiresNccl) {
  std::vector<PreflightNode> nodes = Group(2);
  v1::NcclProbe* nccl = nodes[1].probe.mutable_nccl();
  nccl->Clear();
  nccl->set_library("/opt/nccl/libnccl.so.2.30.4");
  nccl->set_error(
      "VLLM_NCCL_SO_PATH=/opt/nccl/libnccl.so.2.30.4 (the shard's env) names no file in image "
      "vllm-node:latest");
  engine::Recipe any_nccl = SparkRecipe();
  any_nccl.requirements.nccl.clear();

  for (const engine::Recipe& recipe : {any_nccl, SparkRecipe()}) {
    const std::vector<CheckRow> rows = RunPreflight(recipe, nodes);
    const CheckRow row = Row(rows, "spark-b", "nccl");
    EXPECT_EQ(row.verdict, Verdict::kFail);
    EXPECT_EQ(row.observed, nccl->error());
    EXPECT_THAT(row.fix, HasSubstr("point VLLM_NCCL_SO_PATH in the recipe's env"));
    EXPECT_TRUE(Rows(rows, "spark-b", "nccl-same").empty());
  }
}

// A library found whose version could not be read (a pip wheel's plain libnccl.so.2 in an
// image the helper cannot run in) warns with the way to make it visible; it never fails.
TEST(PreflightTest, NcclOfUnknownVersionWarnsAndNeverFails) {
  std::vector<PreflightNode> nodes = Group(4);
  v1::NcclProbe* nccl = nodes[2].probe.mutable_nccl();
  nccl->Clear();
  nccl->set_library("/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2");
  nccl->set_version_unknown(
      "not checked: fleet-nccl-probe cannot run in image vllm-node:latest (it is built for "
      "another CPU architecture than the image's)");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  EXPECT_FALSE(AnyFailure(rows)) << ::testing::PrintToString(NonPassing(rows));
  const CheckRow row = Row(rows, "spark-c", "nccl");
  EXPECT_EQ(row.verdict, Verdict::kWarn);
  EXPECT_EQ(row.observed, absl::StrCat(nccl->library(), ": version ", nccl->version_unknown()));
  EXPECT_EQ(row.expected, ">=2.30.4");
  EXPECT_THAT(row.fix, HasSubstr("LD_PRELOAD=/path/libnccl.so.2.30.4"));
  EXPECT_TRUE(Rows(rows, "spark-c", "nccl-same").empty());
  EXPECT_EQ(Row(rows, "spark-a", "nccl-same").verdict, Verdict::kPass);
}

TEST(PreflightTest, DockerRankWithoutDevInfinibandOnAnRdmaNodeFails) {
  std::vector<PreflightNode> nodes = Group(2);
  EXPECT_EQ(Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "rdma-device").observed,
            "--device /dev/infiniband for rocep1s0f1, roceP2p1s0f1");
  nodes[1].view.has_infiniband = false;  // the node registered without /dev/infiniband
  nodes[1].spec.set_infiniband(false);   // so the plan left the device out

  std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  EXPECT_THAT(NonPassing(rows), ::testing::SizeIs(1));
  CheckRow row = Row(rows, "spark-b", "rdma-device");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed,
            "spark-b has RDMA devices rocep1s0f1, roceP2p1s0f1 but its docker line lacks "
            "--device /dev/infiniband (NCCL would fall back to TCP sockets)");
  EXPECT_EQ(row.expected, "--device /dev/infiniband in the docker line");
  EXPECT_THAT(
      row.fix,
      AllOf(HasSubstr("no recipe key sets it"), HasSubstr("`modprobe ib_uverbs rdma_ucm`"),
            HasSubstr("restart fleet-agent there"), HasSubstr("`infiniband: true` for spark-b"),
            HasSubstr("NCCL_IB_DISABLE=1 in the recipe's env")));

  // The node has the device by now; only the plan is stale.
  nodes[1].view.has_infiniband = true;
  row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "rdma-device");
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_THAT(row.fix, HasSubstr("plan the group again"));

  // NCCL told to stay off RDMA needs no device.
  nodes[1].spec.mutable_env(2)->set_value("1");  // NCCL_IB_DISABLE
  row = Row(RunPreflight(SparkRecipe(), nodes), "spark-b", "rdma-device");
  EXPECT_EQ(row.verdict, Verdict::kPass);
  EXPECT_EQ(row.observed, "not needed: NCCL_IB_DISABLE=1 leaves rocep1s0f1, roceP2p1s0f1 unused");
}

TEST(PreflightTest, RdmaDeviceIsJudgedOnlyForDockerRanksOnRdmaNodes) {
  std::vector<PreflightNode> process = Group(2, v1::SHARD_RUNTIME_PROCESS);
  EXPECT_TRUE(Rows(RunPreflight(SparkRecipe(), process), "spark-a", "rdma-device").empty());

  std::vector<PreflightNode> docker = Group(2);
  docker[0].probe.clear_rdma();
  docker[0].spec.set_infiniband(false);
  EXPECT_TRUE(Rows(RunPreflight(SparkRecipe(), docker), "spark-a", "rdma-device").empty());
}

TEST(PreflightTest, AgentThatDidNotAnswerFailsWhatTheRecipeNeeds) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe = v1::NodeProbe();
  nodes[1].probe.add_unavailable("probe: the agent did not answer: deadline exceeded");

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  for (const std::string check : {"nccl", "memlock", "shm", "rdma-port", "mtu", "gpu", "image"}) {
    const std::vector<CheckRow> found = Rows(rows, "spark-b", check);
    ASSERT_THAT(found, Not(IsEmpty())) << check;
    EXPECT_THAT(found[0].observed, HasSubstr("not probed: probe: the agent did not answer"))
        << check;
  }
  EXPECT_EQ(Row(rows, "spark-b", "gpu").verdict, Verdict::kFail);
}

TEST(PreflightTest, MissingCacheDirWarnsOnly) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[0].probe.mutable_disks(1)->set_present(false);

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const CheckRow row = Row(rows, "spark-a", "cache-dirs");
  EXPECT_EQ(row.verdict, Verdict::kWarn);
  EXPECT_THAT(row.fix, HasSubstr("the agent creates it"));
  EXPECT_FALSE(AnyFailure(rows));
}

TEST(PreflightTest, TooLittleDiskFails) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[0].probe.mutable_disks(0)->set_free_bytes(40 * kGiB);

  const std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  const CheckRow row = Rows(rows, "spark-a", "disk")[0];
  EXPECT_EQ(row.verdict, Verdict::kFail);
  EXPECT_EQ(row.observed, "40 GiB free at /srv/models/ds4");
  EXPECT_EQ(row.expected, ">= 100 GiB free");
}

TEST(PreflightTest, DowngradeTurnsFailuresIntoMarkedWarnings) {
  std::vector<PreflightNode> nodes = Group(2);
  nodes[1].probe.mutable_interfaces(0)->set_mtu(1500);
  std::vector<CheckRow> rows = RunPreflight(SparkRecipe(), nodes);
  ASSERT_TRUE(AnyFailure(rows));

  Downgrade(&rows);
  EXPECT_FALSE(AnyFailure(rows));
  const CheckRow row = Row(rows, "spark-b", "mtu (forced)");
  EXPECT_EQ(row.verdict, Verdict::kWarn);
  EXPECT_EQ(row.observed, "MTU 1500 on enp1s0f1np1");
  EXPECT_THAT(row.fix, HasSubstr("set `mtu: 9000` in netplan"));
  EXPECT_EQ(Row(rows, "spark-a", "nccl").verdict, Verdict::kPass);
}

constexpr char kIbLog[] =
    "INFO 05-01 12:00:03 [pynccl.py:70] vLLM is using nccl==2.30.4\n"
    "spark-a:2841:2841 [0] NCCL INFO Bootstrap: Using enp1s0f1np1:192.168.100.11<0>\n"
    "spark-a:2841:2841 [0] NCCL INFO cudaDriverVersion 13000\n"
    "spark-a:2841:2841 [0] NCCL INFO NCCL version 2.30.4+cuda13.0\n"
    "spark-a:2841:2903 [0] NCCL INFO NET/Plugin: Could not find: libnccl-net.so.\n"
    "spark-a:2841:2903 [0] NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE "
    "[1]roceP2p1s0f1:1/RoCE [RO]; OOB enp1s0f1np1:192.168.100.11<0>\n"
    "spark-a:2841:2903 [0] NCCL INFO Using network IB\n";

constexpr char kSocketLog[] =
    "spark-b:3107:3107 [0] NCCL INFO NCCL version 2.28.9+cuda12.9\n"
    "spark-b:3107:3170 [0] NCCL INFO NET/IB : No device found.\n"
    "spark-b:3107:3170 [0] NCCL INFO NET/Socket : Using [0]enp1s0f1np1:192.168.100.12<0>\n"
    "spark-b:3107:3170 [0] NCCL INFO Using network Socket\n";

TEST(CheckEngineLogTest, MatchingBannerAndIbPass) {
  const std::vector<CheckRow> rows = CheckEngineLog("spark-a", kIbLog, "2.30.4", true);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].check, "engine-nccl");
  EXPECT_EQ(rows[0].verdict, Verdict::kPass);
  EXPECT_EQ(rows[0].observed, "NCCL 2.30.4");  // vLLM's line
  EXPECT_EQ(rows[1].observed, "NCCL 2.30.4+cuda13.0");
  EXPECT_EQ(rows[1].verdict, Verdict::kPass);
  EXPECT_EQ(rows[2].check, "engine-transport");
  EXPECT_EQ(rows[2].verdict, Verdict::kPass);
  EXPECT_EQ(rows[2].observed,
            "NET/IB : Using [0]rocep1s0f1:1/RoCE [1]roceP2p1s0f1:1/RoCE [RO]; OOB "
            "enp1s0f1np1:192.168.100.11<0>");
  EXPECT_FALSE(AnyFailure(rows));
}

TEST(CheckEngineLogTest, OtherBannerAndSocketFallbackFail) {
  const std::vector<CheckRow> rows = CheckEngineLog("spark-b", kSocketLog, "2.30.4", true);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].verdict, Verdict::kFail);
  EXPECT_EQ(rows[0].observed, "NCCL 2.28.9+cuda12.9");
  EXPECT_EQ(rows[0].expected, "2.30.4 (what preflight saw)");
  EXPECT_THAT(rows[0].fix, HasSubstr("LD_PRELOAD=/path/libnccl.so.2.30.4"));
  EXPECT_EQ(rows[1].check, "engine-transport");
  EXPECT_EQ(rows[1].verdict, Verdict::kFail);
  EXPECT_EQ(rows[1].observed, "NET/Socket : Using [0]enp1s0f1np1:192.168.100.12<0>");
  EXPECT_THAT(rows[1].fix, HasSubstr("NCCL fell back to TCP sockets"));
}

TEST(CheckEngineLogTest, SocketsAreFineWithoutRdma) {
  const std::vector<CheckRow> rows = CheckEngineLog("spark-b", kSocketLog, "", false);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].verdict, Verdict::kPass);
  EXPECT_EQ(rows[1].verdict, Verdict::kPass);
  EXPECT_EQ(rows[1].observed, "NET/Socket : Using [0]enp1s0f1np1:192.168.100.12<0>");
}

TEST(CheckEngineLogTest, LogWithoutNcclLinesSaysWhatIsNotCheckedYet) {
  const std::vector<CheckRow> rows = CheckEngineLog(
      "spark-a", "INFO 05-01 12:00:00 [api_server.py:1] vLLM API server\n", "2.30.4", true);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].check, "engine-nccl");
  EXPECT_EQ(rows[0].verdict, Verdict::kWarn);
  EXPECT_EQ(rows[0].observed, "no NCCL banner in the log yet");
  EXPECT_THAT(rows[0].fix, HasSubstr("NCCL_DEBUG_SUBSYS"));
  EXPECT_EQ(rows[0].node, "spark-a");
  EXPECT_EQ(rows[1].check, "engine-transport");
  EXPECT_EQ(rows[1].verdict, Verdict::kWarn);
  EXPECT_THAT(rows[1].observed, HasSubstr("not checked yet"));
  EXPECT_THAT(rows[1].fix, HasSubstr("NCCL_DEBUG_SUBSYS"));
  // Without RDMA the transport is still reported as unseen rather than left out.
  const std::vector<CheckRow> tcp = CheckEngineLog("spark-a", "", "", false);
  ASSERT_EQ(tcp.size(), 2u);
  EXPECT_EQ(tcp[1].check, "engine-transport");
  EXPECT_THAT(tcp[1].observed, HasSubstr("not checked yet"));
}

TEST(CheckEngineLogTest, NcclDebugFileMeansNotCheckedWithTheReason) {
  const std::vector<CheckRow> rows =
      CheckEngineLog("spark-a", kIbLog, "2.30.4", true, "/tmp/nccl.%h.%p");
  ASSERT_EQ(rows.size(), 2u);
  for (const CheckRow& row : rows) {
    EXPECT_EQ(row.verdict, Verdict::kWarn);
    EXPECT_THAT(row.observed, HasSubstr("not checked: NCCL_DEBUG_FILE=/tmp/nccl.%h.%p"));
    EXPECT_THAT(row.fix, HasSubstr("remove NCCL_DEBUG_FILE"));
  }
  EXPECT_EQ(rows[0].check, "engine-nccl");
  EXPECT_EQ(rows[1].check, "engine-transport");
}

TEST(NcclSatisfiesTest, Table) {
  struct Case {
    const char* version;
    const char* constraint;
    bool want;
  };
  for (const Case& c : std::vector<Case>{
           {"2.30.4", ">=2.30.4", true},
           {"2.30.4+cuda13.0", ">=2.30.4", true},
           {"2.28.9", ">=2.30.4", false},
           {"2.31.0", ">=2.30.4", true},
           {"2.28.9", ">2.28", true},
           {"2.28.0", ">2.28", false},
           {"2.30.4", "==2.30.4", true},
           {"2.30.5", "==2.30.4", false},
           {"2.30.4", "=2.30.4", true},
           {"2.30.4", "2.30.4", true},
           {"2.30.4", "<=2.30.4", true},
           {"2.30.5", "<=2.30.4", false},
           {"2.28.9", "<2.30", true},
           {"2.30.0", "<2.30", false},
           {"2.30.4", ">=2.30.4,<3", true},
           {"3.0.1", ">=2.30.4, <3", false},
           {"2.30.4-1", " >= 2.30.4 ", true},
       }) {
    absl::StatusOr<bool> got = NcclSatisfies(c.version, c.constraint);
    ASSERT_TRUE(got.ok()) << c.version << " " << c.constraint << ": " << got.status();
    EXPECT_EQ(*got, c.want) << c.version << " " << c.constraint;
  }
  for (const auto& [version, constraint] :
       std::vector<std::pair<const char*, const char*>>{{"2.30.4", ">=two"},
                                                        {"2.30.4", ""},
                                                        {"x.y", ">=2.30.4"},
                                                        {"2.30.4", ">=2.30.4.1"},
                                                        {"2.30.4", "~=2.30"}}) {
    absl::StatusOr<bool> got = NcclSatisfies(version, constraint);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument)
        << version << " " << constraint;
  }
}

TEST(VerdictNameTest, Names) {
  EXPECT_EQ(VerdictName(Verdict::kPass), "pass");
  EXPECT_EQ(VerdictName(Verdict::kWarn), "warn");
  EXPECT_EQ(VerdictName(Verdict::kFail), "fail");
}

}  // namespace
}  // namespace fleet::controller
