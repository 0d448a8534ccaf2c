// Node facts and identity read from a recorded root directory made by the test.
#include <cstdlib>
#include <filesystem>

#include "agent/probes/node_facts.h"
#include "agent/session/identity.h"
#include "common/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

class RootDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-root-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void Put(const std::string& rel, const std::string& content) {
    std::string path = root_ + "/" + rel;
    ASSERT_TRUE(MakeDirectories(path.substr(0, path.rfind('/'))).ok());
    ASSERT_TRUE(WriteFileAtomically(path, content).ok());
  }
  std::string root_;
};

TEST_F(RootDirTest, ReadsFactsOfARecordedSpark) {
  Put("proc/sys/kernel/hostname", "spark-a1b2\n");
  Put("proc/sys/kernel/osrelease", "6.11.0-1016-nvidia\n");
  Put("sys/devices/system/cpu/online", "0-19\n");
  Put("proc/meminfo",
      "MemTotal:       128452548 kB\nMemFree:        100000000 kB\n"
      "MemAvailable:   120000000 kB\n");
  Put("etc/os-release", "NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\n");
  Put("sys/class/net/enp1s0f1np1/mtu", "9000\n");
  Put("sys/class/net/enp1s0f1np1/operstate", "up\n");
  Put("sys/class/net/enp1s0f1np1/type", "1\n");
  Put("sys/class/net/lo/mtu", "65536\n");
  Put("sys/class/infiniband/roceP2p1s0f1/node_type", "1: CA\n");
  Put("sys/class/infiniband/rocep1s0f1/node_type", "1: CA\n");
  Put("sys/class/net/lo/type", "772\n");

  v1::NodeFacts f = ReadNodeFacts(root_);
  EXPECT_EQ(f.hostname(), "spark-a1b2");
  EXPECT_EQ(f.kernel(), "6.11.0-1016-nvidia");
  EXPECT_EQ(f.cpu_count(), 20u);
  EXPECT_EQ(f.memory_total_bytes(), 128452548ull * 1024);
  EXPECT_EQ(f.memory_available_bytes(), 120000000ull * 1024);
  EXPECT_EQ(f.os(), "Ubuntu 24.04.3 LTS");
  ASSERT_EQ(f.interfaces_size(), 2);
  EXPECT_EQ(f.interfaces(0).name(), "enp1s0f1np1");
  EXPECT_EQ(f.interfaces(0).mtu(), 9000u);
  EXPECT_EQ(f.interfaces(0).operstate(), "up");
  EXPECT_FALSE(f.interfaces(0).loopback());
  EXPECT_TRUE(f.interfaces(1).loopback());
  // Both halves of the CX-7 port, as a DGX Spark shows them.
  EXPECT_THAT(f.rdma_devices(), ::testing::ElementsAre("roceP2p1s0f1", "rocep1s0f1"));
  // A recorded tree has no live addresses or machine type; they are said to be missing.
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("interface addresses")));
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("arch")));
}

TEST_F(RootDirTest, CpuListsWithGapsAreCounted) {
  Put("sys/devices/system/cpu/online", "0-3,8-11,16\n");
  EXPECT_EQ(ReadNodeFacts(root_).cpu_count(), 9u);
}

TEST_F(RootDirTest, MissingFactsAreNamedNotInvented) {
  Put("sys/devices/system/cpu/online", "garbage\n");
  v1::NodeFacts f = ReadNodeFacts(root_);
  EXPECT_EQ(f.cpu_count(), 0u);
  EXPECT_EQ(f.memory_total_bytes(), 0u);
  EXPECT_TRUE(f.os().empty());
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("cpu count: bad CPU list")));
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("memory: open")));
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("os: open")));
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("hostname: open")));
  EXPECT_THAT(f.unavailable(), Contains(HasSubstr("rdma devices:")));
  EXPECT_EQ(f.rdma_devices_size(), 0);
}

TEST_F(RootDirTest, LiveSystemHasArchAndAddresses) {
  v1::NodeFacts f = ReadNodeFacts("/");
  EXPECT_FALSE(f.arch().empty());
  EXPECT_GT(f.cpu_count(), 0u);
  bool loopback_address = false;
  for (const auto& itf : f.interfaces()) {
    for (const auto& a : itf.addresses()) loopback_address |= a == "127.0.0.1/8";
  }
  EXPECT_TRUE(loopback_address);
}

TEST_F(RootDirTest, NodeIdIsCreatedOnceAndKept) {
  auto first = LoadOrCreateIdentity(root_ + "/state", "spark-1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->node_id().size(), 32u);
  auto second = LoadOrCreateIdentity(root_ + "/state", "spark-1");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->node_id(), second->node_id());
  EXPECT_EQ(second->name(), "spark-1");
}

TEST_F(RootDirTest, DamagedNodeIdIsAnErrorNotReplaced) {
  Put("state/node_id", "not-an-id\n");
  auto id = LoadOrCreateIdentity(root_ + "/state", "spark-1");
  ASSERT_FALSE(id.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(id.status()));
  EXPECT_THAT(id.status().message(), HasSubstr("node_id"));
  EXPECT_EQ(*ReadFileToString(root_ + "/state/node_id"), "not-an-id\n");
}

}  // namespace
}  // namespace fleet::agent
