// RDMA, network and limits probes against recorded DGX Spark trees (tests/fixtures/nodes), edited
// copies of them, and the live machine, which has no RDMA device.
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "agent/probes/limits.h"
#include "agent/probes/network.h"
#include "agent/probes/rdma.h"
#include "agent/probes/verbs_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

std::string Fixture(const std::string& node) {
  return std::string(FLEET_SOURCE_DIR) + "/tests/fixtures/nodes/" + node;
}

// A writable copy of a recorded tree, removed at the end of the test.
class TreeCopy {
 public:
  explicit TreeCopy(const std::string& node) {
    std::string pattern = (std::filesystem::temp_directory_path() / "probes_test.XXXXXX").string();
    root_ = ::mkdtemp(pattern.data());
    std::filesystem::copy(Fixture(node), root_, std::filesystem::copy_options::recursive);
  }
  ~TreeCopy() { std::filesystem::remove_all(root_); }

  void Write(const std::string& path, const std::string& content) const {
    std::ofstream(root_ + "/" + path, std::ios::trunc) << content << "\n";
  }
  void Remove(const std::string& path) const { std::filesystem::remove_all(root_ + "/" + path); }
  ProbeContext Context() const { return ProbeContext{.root = root_, .live = false}; }

 private:
  std::string root_;
};

ProbeContext Recorded(const std::string& node) {
  return ProbeContext{.root = Fixture(node), .live = false, .node_name = node};
}

const v1::RdmaDevice* FindDevice(const v1::NodeProbe& probe, const std::string& name) {
  for (const v1::RdmaDevice& dev : probe.rdma()) {
    if (dev.name() == name) return &dev;
  }
  return nullptr;
}

const v1::ProbedInterface* FindInterface(const v1::NodeProbe& probe, const std::string& name) {
  for (const v1::ProbedInterface& itf : probe.interfaces()) {
    if (itf.name() == name) return &itf;
  }
  return nullptr;
}

std::vector<std::string> Unavailable(const v1::NodeProbe& probe) {
  return {probe.unavailable().begin(), probe.unavailable().end()};
}

struct Spark {
  std::string node;
  std::string last_octet;
  std::string mac_tail;  // the last two groups of enp1s0f1np1's link-local address
};

class HealthySparkTest : public ::testing::TestWithParam<Spark> {};

TEST_P(HealthySparkTest, RdmaDevicesPortsAndGidsAsIbdev2netdevAndNcclSeeThem) {
  const Spark& spark = GetParam();
  v1::NodeProbe probe;
  ProbeRdma(Recorded(spark.node), &probe);

  std::vector<std::string> names;
  for (const v1::RdmaDevice& dev : probe.rdma()) names.push_back(dev.name());
  EXPECT_THAT(names, ElementsAre("roceP2p1s0f0", "roceP2p1s0f1", "rocep1s0f0", "rocep1s0f1"));
  EXPECT_THAT(Unavailable(probe), IsEmpty());

  struct Up {
    std::string device, netdev, subnet;
  };
  for (const Up& up :
       {Up{"rocep1s0f1", "enp1s0f1np1", "100"}, Up{"roceP2p1s0f1", "enP2p1s0f1np1", "101"}}) {
    SCOPED_TRACE(up.device);
    const v1::RdmaDevice* dev = FindDevice(probe, up.device);
    ASSERT_NE(dev, nullptr);
    ASSERT_EQ(dev->ports_size(), 1);
    const v1::RdmaPort& port = dev->ports(0);
    EXPECT_EQ(port.port(), 1u);
    EXPECT_EQ(port.state(), "ACTIVE");
    EXPECT_EQ(port.phys_state(), "LinkUp");
    EXPECT_EQ(port.link_layer(), "Ethernet");
    EXPECT_EQ(port.rate(), "100 Gb/sec (2X HDR)");
    EXPECT_EQ(port.rate_gbps(), 100.0);
    EXPECT_EQ(port.netdev(), up.netdev);
    EXPECT_EQ(port.active_mtu(), 4096u);  // netdev MTU 9000
    ASSERT_EQ(port.gids_size(), 4);       // index 4 is all zero and skipped
    EXPECT_EQ(port.gids(0).type(), "IB/RoCE v1");
    EXPECT_THAT(port.gids(0).gid(), HasSubstr("fe80:0000:0000:0000:"));
    EXPECT_EQ(port.gids(0).ipv4(), "");
    EXPECT_EQ(port.gids(3).index(), 3u);
    EXPECT_EQ(port.gids(3).type(), "RoCE v2");
    EXPECT_EQ(port.gids(3).netdev(), up.netdev);
    EXPECT_EQ(port.gids(3).ipv4(), "192.168." + up.subnet + "." + spark.last_octet);
    EXPECT_EQ(port.roce_v2_gid_index(), 3);
    EXPECT_FALSE(port.verbs_checked());
  }
  const v1::RdmaPort& spark_port = FindDevice(probe, "rocep1s0f1")->ports(0);
  EXPECT_THAT(spark_port.gids(0).gid(), HasSubstr(spark.mac_tail));

  for (const char* down : {"rocep1s0f0", "roceP2p1s0f0"}) {
    SCOPED_TRACE(down);
    const v1::RdmaPort& port = FindDevice(probe, down)->ports(0);
    EXPECT_EQ(port.state(), "DOWN");
    EXPECT_EQ(port.phys_state(), "Disabled");
    EXPECT_THAT(port.gids(), IsEmpty());
    EXPECT_EQ(port.roce_v2_gid_index(), -1);
    EXPECT_EQ(port.active_mtu(), 1024u);  // netdev MTU 1500
  }
}

TEST_P(HealthySparkTest, NetworkMarksFabricInterfacesAndReadsRecordedAddresses) {
  const Spark& spark = GetParam();
  v1::NodeProbe probe;
  ProbeRdma(Recorded(spark.node), &probe);
  ProbeNetwork(Recorded(spark.node), &probe);
  EXPECT_THAT(Unavailable(probe), IsEmpty());

  std::vector<std::string> names;
  for (const v1::ProbedInterface& itf : probe.interfaces()) names.push_back(itf.name());
  EXPECT_THAT(names, ElementsAre("enP2p1s0f0np0", "enP2p1s0f1np1", "enP7s7", "enp1s0f0np0",
                                 "enp1s0f1np1", "lo"));

  const v1::ProbedInterface* fabric = FindInterface(probe, "enp1s0f1np1");
  ASSERT_NE(fabric, nullptr);
  EXPECT_EQ(fabric->mtu(), 9000u);
  EXPECT_EQ(fabric->operstate(), "up");
  EXPECT_EQ(fabric->speed_mbps(), 100000u);
  EXPECT_TRUE(fabric->fabric());
  EXPECT_THAT(fabric->rdma_devices(), ElementsAre("rocep1s0f1"));
  EXPECT_THAT(fabric->addresses(), ElementsAre("192.168.100." + spark.last_octet + "/24",
                                               "fe80::3e6d:66ff:" + spark.mac_tail + "/64"));
  EXPECT_THAT(FindInterface(probe, "enP2p1s0f1np1")->addresses(),
              Contains("192.168.101." + spark.last_octet + "/24"));

  const v1::ProbedInterface* down = FindInterface(probe, "enp1s0f0np0");
  EXPECT_EQ(down->operstate(), "down");
  EXPECT_EQ(down->speed_mbps(), 0u);  // sysfs prints -1 without a link
  EXPECT_TRUE(down->fabric());
  EXPECT_THAT(down->addresses(), IsEmpty());

  const v1::ProbedInterface* mgmt = FindInterface(probe, "enP7s7");
  EXPECT_FALSE(mgmt->fabric());
  EXPECT_THAT(mgmt->addresses(), Contains(HasSubstr("192.168.1.")));
  EXPECT_THAT(FindInterface(probe, "lo")->addresses(), ElementsAre("127.0.0.1/8", "::1/128"));
}

TEST_P(HealthySparkTest, LimitsFromTheRecordedTree) {
  const Spark& spark = GetParam();
  ProbeContext ctx = Recorded(spark.node);
  ctx.request.add_disk_paths("/var/lib/fleet/models");
  v1::NodeProbe probe;
  ProbeLimits(ctx, &probe);
  const v1::LimitsProbe& limits = probe.limits();
  EXPECT_EQ(limits.memlock_soft(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(limits.memlock_hard(), std::numeric_limits<uint64_t>::max());
  EXPECT_TRUE(limits.can_raise_memlock());
  EXPECT_EQ(limits.shm_total_bytes(), 64ull << 30);
  EXPECT_EQ(limits.shm_free_bytes(), 0u);
  EXPECT_EQ(limits.memory_total_bytes(), 127535184ull * 1024);
  EXPECT_EQ(limits.memory_available_bytes(), 121380736ull * 1024);
  EXPECT_EQ(limits.swap_total_bytes(), 16777212ull * 1024);
  EXPECT_EQ(limits.hugepages_total(), 0u);
  EXPECT_EQ(limits.hugepage_size_bytes(), 2048u * 1024);
  EXPECT_THAT(probe.disks(), IsEmpty());
  EXPECT_THAT(Unavailable(probe),
              ElementsAre(HasSubstr("/dev/shm free: only measurable on the live system"),
                          AllOf(HasSubstr("disks: free space only measurable on the live"),
                                HasSubstr("/var/lib/fleet/models"))));
}

INSTANTIATE_TEST_SUITE_P(Pair, HealthySparkTest,
                         ::testing::Values(Spark{"spark-a", "10", "fecc:b3b7"},
                                           Spark{"spark-b", "11", "fecc:c1b7"}),
                         [](const auto& info) { return info.param.node == "spark-a" ? "A" : "B"; });

TEST(RdmaVariantTest, NetdevMtu1500GivesActiveMtu1024) {
  TreeCopy tree("spark-a");
  tree.Write("sys/class/net/enp1s0f1np1/mtu", "1500");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  ProbeNetwork(tree.Context(), &probe);
  EXPECT_EQ(FindDevice(probe, "rocep1s0f1")->ports(0).active_mtu(), 1024u);
  EXPECT_EQ(FindDevice(probe, "roceP2p1s0f1")->ports(0).active_mtu(), 4096u);
  EXPECT_EQ(FindInterface(probe, "enp1s0f1np1")->mtu(), 1500u);
}

TEST(RdmaVariantTest, ActiveMtuFollowsTheKernelsRoceHeaderAllowance) {
  // iboe_get_mtu subtracts 96 header bytes: 4192 is the smallest netdev MTU for 4096.
  TreeCopy tree("spark-a");
  tree.Write("sys/class/net/enp1s0f1np1/mtu", "4192");
  tree.Write("sys/class/net/enP2p1s0f1np1/mtu", "4191");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  EXPECT_EQ(FindDevice(probe, "rocep1s0f1")->ports(0).active_mtu(), 4096u);
  EXPECT_EQ(FindDevice(probe, "roceP2p1s0f1")->ports(0).active_mtu(), 2048u);
}

TEST(RdmaVariantTest, PortDownIsReportedAsSysfsSaysIt) {
  TreeCopy tree("spark-b");
  tree.Write("sys/class/infiniband/rocep1s0f1/ports/1/state", "1: DOWN");
  tree.Write("sys/class/infiniband/rocep1s0f1/ports/1/phys_state", "3: Disabled");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  const v1::RdmaPort& port = FindDevice(probe, "rocep1s0f1")->ports(0);
  EXPECT_EQ(port.state(), "DOWN");
  EXPECT_EQ(port.phys_state(), "Disabled");
  EXPECT_EQ(FindDevice(probe, "roceP2p1s0f1")->ports(0).state(), "ACTIVE");
}

TEST(RdmaVariantTest, NetdevFoundThroughGidsWhenDeviceNetIsMissing) {
  TreeCopy tree("spark-a");
  tree.Remove("sys/class/infiniband/rocep1s0f1/device");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  EXPECT_EQ(FindDevice(probe, "rocep1s0f1")->ports(0).netdev(), "enp1s0f1np1");
  EXPECT_EQ(FindDevice(probe, "rocep1s0f1")->ports(0).active_mtu(), 4096u);
}

TEST(RdmaVariantTest, MissingGidTypeIsReportedAndLeavesNoRoceV2Gid) {
  // NCCL reads the type of index 3 as unknown and stays on index 2, a RoCE v1 GID.
  TreeCopy tree("spark-a");
  tree.Remove("sys/class/infiniband/rocep1s0f1/ports/1/gid_attrs/types/3");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  const v1::RdmaPort& port = FindDevice(probe, "rocep1s0f1")->ports(0);
  EXPECT_EQ(port.gids(3).type(), "");
  EXPECT_EQ(port.roce_v2_gid_index(), -1);
  EXPECT_THAT(Unavailable(probe), ElementsAre(HasSubstr("rdma rocep1s0f1 port 1: type of GID 3:")));
}

TEST(RdmaVariantTest, RoceV2GidIndexFollowsNcclWhenTheTableIsOrderedDifferently) {
  // IPv4 entries first: NCCL moves to the first IPv4 GID, then to the RoCE v2 one after it.
  TreeCopy tree("spark-a");
  std::string port = "sys/class/infiniband/rocep1s0f1/ports/1/";
  tree.Write(port + "gids/0", "0000:0000:0000:0000:0000:ffff:c0a8:640a");
  tree.Write(port + "gids/2", "fe80:0000:0000:0000:3e6d:66ff:fecc:b3b7");
  tree.Write(port + "gids/3", "0000:0000:0000:0000:0000:0000:0000:0000");
  tree.Write(port + "gids/4", "0000:0000:0000:0000:0000:ffff:c0a8:640a");
  tree.Write(port + "gid_attrs/types/4", "RoCE v2");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  EXPECT_EQ(FindDevice(probe, "rocep1s0f1")->ports(0).roce_v2_gid_index(), 4);
}

TEST(RdmaMissingTest, NoClassDirectoryMeansNoDevice) {
  TreeCopy tree("spark-a");
  tree.Remove("sys/class/infiniband");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  ProbeNetwork(tree.Context(), &probe);
  EXPECT_THAT(probe.rdma(), IsEmpty());
  EXPECT_THAT(Unavailable(probe),
              ElementsAre(AllOf(HasSubstr("rdma: "), HasSubstr("sys/class/infiniband"),
                                HasSubstr("(no RDMA device)"))));
  EXPECT_FALSE(FindInterface(probe, "enp1s0f1np1")->fabric());
}

TEST(RdmaMissingTest, UnreadableFilesAreNamedAndTheRestIsStillReported) {
  TreeCopy tree("spark-a");
  tree.Remove("sys/class/infiniband/rocep1s0f1/ports/1/rate");
  tree.Remove("sys/class/net/enP2p1s0f1np1/mtu");
  v1::NodeProbe probe;
  ProbeRdma(tree.Context(), &probe);
  const v1::RdmaPort& port = FindDevice(probe, "rocep1s0f1")->ports(0);
  EXPECT_EQ(port.rate(), "");
  EXPECT_EQ(port.rate_gbps(), 0.0);
  EXPECT_EQ(port.state(), "ACTIVE");
  EXPECT_EQ(FindDevice(probe, "roceP2p1s0f1")->ports(0).active_mtu(), 0u);
  EXPECT_THAT(Unavailable(probe), ElementsAre(HasSubstr("rdma roceP2p1s0f1 port 1: active MTU: "),
                                              HasSubstr("rdma rocep1s0f1 port 1: rate: ")));
}

TEST(NetworkMissingTest, RecordedTreeWithoutRoutesSaysWhyIpv4IsMissing) {
  TreeCopy tree("spark-a");
  tree.Remove("proc/net/route");
  v1::NodeProbe probe;
  ProbeNetwork(tree.Context(), &probe);
  EXPECT_THAT(Unavailable(probe), ElementsAre(HasSubstr("interface IPv4 addresses: ")));
  EXPECT_THAT(FindInterface(probe, "enp1s0f1np1")->addresses(),
              ElementsAre("fe80::3e6d:66ff:fecc:b3b7/64"));
}

TEST(NetworkMissingTest, AddressOutsideEveryLinkRouteIsReportedNotGuessed) {
  TreeCopy tree("spark-a");
  tree.Write("proc/net/route",
             "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
             "enP7s7\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0");
  v1::NodeProbe probe;
  ProbeNetwork(tree.Context(), &probe);
  EXPECT_THAT(Unavailable(probe), ElementsAre(AllOf(HasSubstr("192.168.100.10, 192.168.101.10"),
                                                    HasSubstr("interface is unknown"))));
}

TEST(LimitsVariantTest, MemlockNumbersAndCapEffBits) {
  TreeCopy tree("spark-a");
  tree.Write("proc/self/limits",
             "Limit                     Soft Limit           Hard Limit           Units     \n"
             "Max locked memory         8388608              8388608              bytes     ");
  tree.Write("proc/self/status", "Name:\tfleet-agent\nCapEff:\t0000000000000000");
  v1::NodeProbe probe;
  ProbeLimits(tree.Context(), &probe);
  EXPECT_EQ(probe.limits().memlock_soft(), 8u << 20);
  EXPECT_EQ(probe.limits().memlock_hard(), 8u << 20);
  EXPECT_FALSE(probe.limits().can_raise_memlock());

  // CAP_SYS_RESOURCE alone is bit 24.
  tree.Write("proc/self/status", "CapEff:\t0000000001000000");
  v1::NodeProbe only_resource;
  ProbeLimits(tree.Context(), &only_resource);
  EXPECT_TRUE(only_resource.limits().can_raise_memlock());
  tree.Write("proc/self/status", "CapEff:\t0000000000ffffff");
  v1::NodeProbe below;
  ProbeLimits(tree.Context(), &below);
  EXPECT_FALSE(below.limits().can_raise_memlock());
}

TEST(LimitsVariantTest, SoftUnlimitedHardNumber) {
  TreeCopy tree("spark-a");
  tree.Write("proc/self/limits", "Max locked memory         unlimited            65536  bytes");
  v1::NodeProbe probe;
  ProbeLimits(tree.Context(), &probe);
  EXPECT_EQ(probe.limits().memlock_soft(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(probe.limits().memlock_hard(), 65536u);
}

TEST(LimitsMissingTest, ShmWithoutSizeOptionAndMissingFilesAreUnavailable) {
  TreeCopy tree("spark-a");
  tree.Write("proc/mounts", "tmpfs /dev/shm tmpfs rw,nosuid,nodev,inode64 0 0");
  tree.Remove("proc/self/limits");
  tree.Remove("proc/self/status");
  tree.Write("proc/meminfo", "MemTotal:       127535184 kB");
  v1::NodeProbe probe;
  ProbeLimits(tree.Context(), &probe);
  EXPECT_EQ(probe.limits().shm_total_bytes(), 0u);
  EXPECT_EQ(probe.limits().memlock_hard(), 0u);
  EXPECT_EQ(probe.limits().memory_total_bytes(), 127535184ull * 1024);
  EXPECT_THAT(Unavailable(probe),
              ElementsAre(HasSubstr("memlock: "), HasSubstr("can raise memlock: "),
                          HasSubstr("/dev/shm free: "),
                          HasSubstr("/dev/shm size: no /dev/shm mount with a size= option"),
                          HasSubstr("memory: no MemAvailable, SwapTotal, SwapFree, "
                                    "HugePages_Total, Hugepagesize in")));
}

TEST(LiveTest, NoRdmaDeviceHereIsReportedHonestly) {
  v1::NodeProbe probe;
  ProbeContext live{.root = "/", .live = true};
  ProbeRdma(live, &probe);
  if (std::filesystem::exists("/sys/class/infiniband")) GTEST_SKIP() << "this host has RDMA";
  EXPECT_THAT(probe.rdma(), IsEmpty());
  EXPECT_THAT(Unavailable(probe), ElementsAre(HasSubstr("(no RDMA device)")));

  ProbeNetwork(live, &probe);
  const v1::ProbedInterface* lo = FindInterface(probe, "lo");
  ASSERT_NE(lo, nullptr);
  EXPECT_THAT(lo->addresses(), Contains("127.0.0.1/8"));
  EXPECT_FALSE(lo->fabric());
}

TEST(LiveTest, LimitsAndDisks) {
  ProbeContext live{.root = "/", .live = true};
  live.request.add_disk_paths("/");
  live.request.add_disk_paths("/nonexistent/fleet-probes-test");
  v1::NodeProbe probe;
  ProbeLimits(live, &probe);
  EXPECT_GT(probe.limits().memlock_hard(), 0u);
  EXPECT_GT(probe.limits().memory_total_bytes(), 0u);
  EXPECT_THAT(Unavailable(probe), Not(Contains(HasSubstr("memlock"))));
  ASSERT_EQ(probe.disks_size(), 2);
  EXPECT_TRUE(probe.disks(0).present());
  EXPECT_GT(probe.disks(0).total_bytes(), 0u);
  EXPECT_FALSE(probe.disks(1).present());
  EXPECT_THAT(probe.disks(1).error(), HasSubstr("No such file or directory"));
}

TEST(VerbsLibraryTest, MissingLibraryIsNotFoundWithDlerror) {
  absl::StatusOr<VerbsLibrary> verbs = VerbsLibrary::Load("libibverbs-fleet-absent.so.1");
  ASSERT_FALSE(verbs.ok());
  EXPECT_EQ(verbs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(verbs.status().message(), HasSubstr("dlopen libibverbs-fleet-absent.so.1"));
}

TEST(VerbsLibraryTest, RealLibraryWithoutDevicesListsNoneAndCannotQuery) {
  absl::StatusOr<VerbsLibrary> verbs = VerbsLibrary::Load();
  if (!verbs.ok()) GTEST_SKIP() << verbs.status();
  if (std::filesystem::exists("/sys/class/infiniband")) GTEST_SKIP() << "this host has RDMA";
  // Without any RDMA driver rdma-core either lists nothing or fails the list (no uverbs ABI).
  absl::StatusOr<std::vector<std::string>> names = verbs->DeviceNames();
  if (names.ok()) {
    EXPECT_THAT(*names, IsEmpty());
  }
  std::vector<ibv_gid> gids;
  EXPECT_FALSE(verbs->QueryPort("rocep1s0f1", 1, {0}, &gids).ok());
  VerbsLibrary moved = std::move(*verbs);
  EXPECT_FALSE(moved.QueryPort("rocep1s0f1", 1, {}, &gids).ok());
}

}  // namespace
}  // namespace fleet::agent
