// HealthCollector and the RDMA port counters it reads: the change of every error counter and of
// the GPUs' ECC totals since the previous look, XIDs passed on, the asked disk paths probed, the
// shards listed; ReadPortCounters on a recorded sysfs tree.
#include "agent/health/health_collector.h"

#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/health/port_counters.h"
#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class FakeGpuErrors final : public GpuErrorSource {
 public:
  std::vector<v1::GpuErrors> Read() override { return std::exchange(next_, {}); }
  std::vector<GpuErrorTotals> Totals() override { return {}; }
  void Next(uint64_t corrected, uint64_t uncorrected, std::vector<uint64_t> xids) {
    v1::GpuErrors& e = next_.emplace_back();
    e.set_index(0);
    e.set_ecc_corrected(corrected);
    e.set_ecc_uncorrected(uncorrected);
    for (uint64_t x : xids) e.add_xids(x);
  }
  void Add(v1::GpuErrors e) { next_.push_back(std::move(e)); }

 private:
  std::vector<v1::GpuErrors> next_;
};

v1::PortCounters Port(uint64_t symbol_errors, uint64_t out_of_buffer) {
  v1::PortCounters p;
  p.set_device("rocep1s0f1");
  p.set_port(1);
  v1::PortCounter& a = *p.add_counters();
  a.set_name("symbol_error");
  a.set_value(symbol_errors);
  v1::PortCounter& b = *p.add_counters();
  b.set_name("out_of_buffer");
  b.set_value(out_of_buffer);
  return p;
}

class HealthCollectorTest : public ::testing::Test {
 protected:
  HealthCollectorTest()
      : collector_({.clock = &clock_,
                    .probe =
                        [this](const v1::ProbeRequest& r) {
                          asked_ = r;
                          return v1::NodeProbe();
                        },
                    .read_ports = [this] { return std::vector<v1::PortCounters>{port_}; },
                    .gpus = &gpus_,
                    .shards =
                        [] {
                          v1::ShardStatus s;
                          s.set_group("ds4");
                          s.mutable_engine()->set_requests_running(3);
                          return std::vector<v1::ShardStatus>{s};
                        }}) {}

  FakeClock clock_;
  FakeGpuErrors gpus_;
  v1::PortCounters port_ = Port(10, 100);
  v1::ProbeRequest asked_;
  HealthCollector collector_;
};

TEST_F(HealthCollectorTest, TheFirstLookHasNoChangesAndTheNextOnesCountFromThePrevious) {
  gpus_.Next(40, 1, {});
  v1::NodeHealthSample first = collector_.Collect({});
  EXPECT_EQ(first.since_last_look_s(), 0);
  EXPECT_EQ(first.ports(0).counters(0).value(), 10u);
  EXPECT_EQ(first.ports(0).counters(0).delta(), 0u);
  EXPECT_EQ(first.gpu_errors(0).ecc_uncorrected_delta(), 0u);

  clock_.Advance(absl::Seconds(7));
  port_ = Port(13, 100);
  gpus_.Next(45, 3, {79});
  v1::NodeHealthSample second = collector_.Collect({});
  EXPECT_EQ(second.since_last_look_s(), 7);
  EXPECT_EQ(second.ports(0).counters(0).delta(), 3u);
  EXPECT_EQ(second.ports(0).counters(1).delta(), 0u);
  EXPECT_EQ(second.gpu_errors(0).ecc_corrected_delta(), 5u);
  EXPECT_EQ(second.gpu_errors(0).ecc_uncorrected_delta(), 2u);
  EXPECT_THAT(second.gpu_errors(0).xids(), ElementsAre(79u));

  // A cleared counter (driver reload) counts from zero.
  clock_.Advance(absl::Seconds(3));
  port_ = Port(2, 100);
  EXPECT_EQ(collector_.Collect({}).ports(0).counters(0).delta(), 2u);
}

TEST_F(HealthCollectorTest, ProbesTheAskedDiskPathsAndListsTheShardsWithTheirFigures) {
  v1::CollectHealthRequest request;
  request.add_disk_paths("/srv/models");
  v1::NodeHealthSample sample = collector_.Collect(request);
  EXPECT_THAT(asked_.disk_paths(), ElementsAre("/srv/models"));
  EXPECT_FALSE(asked_.hash_models());
  ASSERT_EQ(sample.shards_size(), 1);
  EXPECT_EQ(sample.shards(0).engine().requests_running(), 3);
}

TEST_F(HealthCollectorTest, EccThatCannotBeReadIsPassedOnWithItsReason) {
  v1::GpuErrors unreadable;
  unreadable.set_ecc_unavailable("nvmlDeviceGetTotalEccErrors: Not Supported");
  gpus_.Add(unreadable);
  v1::NodeHealthSample sample = collector_.Collect({});
  ASSERT_EQ(sample.gpu_errors_size(), 1);
  EXPECT_EQ(sample.gpu_errors(0).ecc_unavailable(), "nvmlDeviceGetTotalEccErrors: Not Supported");
  EXPECT_EQ(sample.gpu_errors(0).ecc_uncorrected_delta(), 0u);
}

TEST(HealthCollectorWithoutGpus, ClaimsNoGpuFigures) {
  FakeClock clock;
  HealthCollector collector({.clock = &clock,
                             .probe = [](const v1::ProbeRequest&) { return v1::NodeProbe(); },
                             .read_ports = [] { return std::vector<v1::PortCounters>{}; },
                             .gpus = nullptr,
                             .shards = [] { return std::vector<v1::ShardStatus>{}; }});
  EXPECT_THAT(collector.Collect({}).gpu_errors(), IsEmpty());
}

class PortCountersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::path(::testing::TempDir()) /
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
  }
  void Write(const std::string& relative, const std::string& text) {
    std::filesystem::path p = root_ / relative;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::filesystem::path root_;
};

TEST_F(PortCountersTest, ReadsTheErrorCountersOfEveryPortAndSkipsTraffic) {
  const std::string port = "sys/class/infiniband/rocep1s0f1/ports/1/";
  Write(port + "counters/symbol_error", "3\n");
  Write(port + "counters/link_downed", "1\n");
  Write(port + "counters/port_rcv_data", "123456789\n");  // traffic, not an error
  Write(port + "hw_counters/out_of_buffer", "42\n");
  Write("sys/class/infiniband/roceP2p1s0f1/ports/1/counters/port_rcv_errors", "0\n");

  std::vector<v1::PortCounters> ports = ReadPortCounters(root_.string());
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_EQ(ports[0].device(), "roceP2p1s0f1");  // sorted by name, as `ls` does
  EXPECT_EQ(ports[1].device(), "rocep1s0f1");
  EXPECT_EQ(ports[1].port(), 1u);
  std::vector<std::string> names;
  for (const v1::PortCounter& c : ports[1].counters()) {
    names.push_back(absl::StrCat(c.name(), "=", c.value()));
  }
  EXPECT_THAT(names, ElementsAre("symbol_error=3", "link_downed=1", "out_of_buffer=42"));
  EXPECT_TRUE(ports[1].error().empty());
}

TEST_F(PortCountersTest, AGarbledCounterOrNoneAtAllSaysWhy) {
  Write("sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error", "lots\n");
  Write("sys/class/infiniband/mlx5_1/ports/1/state", "4: ACTIVE\n");
  std::vector<v1::PortCounters> ports = ReadPortCounters(root_.string());
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_THAT(ports[0].error(), HasSubstr("symbol_error holds \"lots\", not a number"));
  EXPECT_THAT(ports[1].error(), HasSubstr("no error counter under"));
  EXPECT_THAT(ReadPortCounters((root_ / "nothing").string()), IsEmpty());
}

}  // namespace
}  // namespace fleet::agent
