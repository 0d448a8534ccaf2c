// The controller's and the agent's Prometheus series: what a scrape shows for known states,
// events counted once, node figures from a recorded DGX Spark tree, the probe cache and the
// heartbeat timing decorator. No sockets: the exposition is serialized in memory.
#include <limits>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "agent/metrics/agent_metrics.h"
#include "agent/probes/limits.h"
#include "agent/probes/rdma.h"
#include "agent/session/fake_controller_client.h"
#include "common/fake_clock.h"
#include "common/files.h"
#include "common/metrics/metrics_server.h"
#include "common/proto_time.h"
#include "controller/metrics/controller_metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Text(std::vector<prometheus::MetricFamily> families) {
  auto source = ScrapeTimeCollectable([families] { return families; });
  return SerializeMetrics({source});
}

v1::Node MakeNode(const std::string& name, v1::NodeState state, absl::Time last_heartbeat) {
  v1::Node node;
  node.mutable_identity()->set_name(name);
  node.set_state(state);
  *node.mutable_last_heartbeat() = ToProtoTime(last_heartbeat);
  return node;
}

TEST(ControllerSnapshot, CountsNodesAndGroupsByStateWithEveryStateWritten) {
  absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  std::vector<v1::Node> nodes = {MakeNode("spark-1", v1::NODE_STATE_READY, now - absl::Seconds(1)),
                                 MakeNode("spark-2", v1::NODE_STATE_READY, now),
                                 MakeNode("spark-3", v1::NODE_STATE_LOST, now - absl::Seconds(9))};
  v1::Group group;
  group.set_name("ds4");
  group.set_state(v1::GROUP_STATE_DEGRADED);
  group.add_ranks()->mutable_status()->set_state(v1::SHARD_STATE_READY);
  group.add_ranks()->mutable_status()->set_state(v1::SHARD_STATE_FAILED);
  group.add_ranks();  // not reported yet
  controller::HeartbeatCounters beats{.answered = 40, .unproven = 2, .missed = 3};

  std::string text = Text(controller::ControllerSnapshot(nodes, {group}, beats, now));
  EXPECT_THAT(text, HasSubstr("fleet_nodes{state=\"Ready\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_nodes{state=\"Lost\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_nodes{state=\"Suspect\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_heartbeat_age_seconds{node=\"spark-3\"} 9\n"));
  EXPECT_THAT(text, HasSubstr("fleet_heartbeats_total{result=\"answered\"} 40\n"));
  EXPECT_THAT(text, HasSubstr("fleet_heartbeats_total{result=\"unproven\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_heartbeats_missed_total 3\n"));
  EXPECT_THAT(text, HasSubstr("fleet_groups{state=\"Degraded\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_groups{state=\"Ready\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("fleet_group_ranks{group=\"ds4\",state=\"Failed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_group_ranks{group=\"ds4\",state=\"Unreported\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE fleet_heartbeats_total counter"));
}

TEST(ControllerMetrics, CountsRankExitsPreflightFailuresAndFabricResults) {
  controller::ControllerMetrics metrics;
  metrics.OnGroupEvent("ds4", "rank-failed");
  metrics.OnGroupEvent("ds4", "rank-failed");
  metrics.OnGroupEvent("ds4", "rank-exited");
  metrics.OnGroupEvent("ds4", "rank-ready");
  metrics.OnPreflight(
      {{.node = "spark-1", .check = "mtu", .verdict = controller::Verdict::kFail},
       {.node = "spark-2", .check = "mtu", .verdict = controller::Verdict::kPass},
       {.node = "spark-2", .check = "nccl", .verdict = controller::Verdict::kWarn}});
  metrics.OnFabricResult("tcp", "pass");
  metrics.rpc().Observe("/fleet.v1.Controller/Apply", 9, 0.2);

  std::string text = SerializeMetrics({metrics.registry()});
  EXPECT_THAT(text, HasSubstr("fleet_rank_exits_total{group=\"ds4\",state=\"Failed\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_rank_exits_total{group=\"ds4\",state=\"Exited\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_group_events_total{kind=\"rank-ready\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_preflight_failures_total{check=\"mtu\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("check=\"nccl\"")));  // a warning is not a failure
  EXPECT_THAT(text, HasSubstr("fleet_fabric_results_total{test=\"tcp\",verdict=\"pass\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_rpc_duration_seconds_bucket{code=\"FAILED_PRECONDITION\","
                              "method=\"/fleet.v1.Controller/Apply\",le=\"0.5\"} 1\n"));
}

TEST(ControllerMetrics, CountsStagingRunsTheirBytesAndDurationAndTheOneInFlight) {
  controller::ControllerMetrics metrics;
  std::string idle = SerializeMetrics({metrics.registry()});
  EXPECT_THAT(idle, HasSubstr("fleet_stage_in_flight 0\n"));
  EXPECT_THAT(idle, HasSubstr("fleet_stage_sent_bytes_total{kind=\"image\"} 0\n"));
  EXPECT_THAT(idle, HasSubstr("fleet_stage_run_seconds_count{kind=\"model\"} 0\n"));

  metrics.OnStageStarted();
  EXPECT_THAT(SerializeMetrics({metrics.registry()}), HasSubstr("fleet_stage_in_flight 1\n"));
  v1::StageRun run;
  run.set_kind("model");
  run.set_state("done");
  run.set_seconds(42.5);
  run.add_nodes()->set_bytes_sent(1000);
  run.add_nodes()->set_bytes_sent(24);
  metrics.OnStageEnded(run);
  metrics.OnStageStarted();
  run.set_state("cancelled");
  run.set_seconds(3);
  metrics.OnStageEnded(run);

  std::string text = SerializeMetrics({metrics.registry()});
  EXPECT_THAT(text, HasSubstr("fleet_stage_in_flight 0\n"));
  EXPECT_THAT(text, HasSubstr("fleet_stage_runs_total{kind=\"model\",result=\"done\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_stage_runs_total{kind=\"model\",result=\"cancelled\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_stage_sent_bytes_total{kind=\"model\"} 2048\n"));
  EXPECT_THAT(text, HasSubstr("fleet_stage_run_seconds_bucket{kind=\"model\",le=\"5\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_stage_run_seconds_bucket{kind=\"model\",le=\"60\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_stage_run_seconds_sum{kind=\"model\"} 45.5\n"));
}

std::string Fixture(const std::string& node) {
  return std::string(FLEET_SOURCE_DIR) + "/tests/fixtures/nodes/" + node;
}

TEST(NodeFigures, RdmaPortsOfARecordedSparkAndNoNumbersForWhatCouldNotBeSeen) {
  agent::ProbeContext ctx{.root = Fixture("spark-a"), .live = false, .node_name = "spark-a"};
  v1::NodeProbe probe;
  agent::ProbeRdma(ctx, &probe);
  probe.add_unavailable("gpu: libnvidia-ml.so.1 not found (no NVIDIA driver)");
  ASSERT_GT(probe.rdma_size(), 0);
  const v1::RdmaDevice& device = probe.rdma(0);
  const v1::RdmaPort& port = device.ports(0);

  std::string text = Text(agent::NodeFigures(probe));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fleet_node_rdma_port_up{device=\"", device.name(),
                                           "\",port=\"1\",netdev=\"", port.netdev(), "\"} ",
                                           port.state() == "ACTIVE" ? 1 : 0, "\n")));
  // The recorded ports run at 100 Gb/s (a CX-7 port is two such devices): 12.5e9 bytes/s.
  ASSERT_EQ(port.rate_gbps(), 100);
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fleet_node_rdma_port_speed_bytes{device=\"",
                                           device.name(), "\",port=\"1\"} 12500000000\n")));
  EXPECT_THAT(text, HasSubstr("fleet_node_probe_unavailable{probe=\"gpu\"} 1\n"));
  // No NVML: no GPU series at all, rather than a count of zero.
  EXPECT_THAT(text, Not(HasSubstr("fleet_node_gpus")));
}

TEST(NodeFigures, LimitsWithUnlimitedMemlockAndGpus) {
  v1::NodeProbe probe;
  probe.mutable_limits()->set_memlock_soft(std::numeric_limits<uint64_t>::max());
  probe.mutable_limits()->set_memlock_hard(8 << 20);
  probe.mutable_limits()->set_shm_total_bytes(1 << 30);
  probe.mutable_gpu()->set_driver_version("580.95");
  v1::GpuDevice* gpu = probe.mutable_gpu()->add_gpus();
  gpu->set_temperature_c(61);
  gpu->set_sm_clock_mhz(2418);
  gpu->set_memory_used_bytes(1000);
  gpu->add_throttle_reasons("SwPowerCap");

  std::string text = Text(agent::NodeFigures(probe));
  EXPECT_THAT(text, HasSubstr("fleet_node_memlock_bytes{limit=\"soft\"} +Inf\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_memlock_bytes{limit=\"hard\"} 8388608\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_shm_bytes{kind=\"total\"} 1073741824\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_gpus 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_gpu_temperature_celsius{gpu=\"0\"} 61\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_gpu_sm_clock_hertz{gpu=\"0\"} 2418000000\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_gpu_memory_bytes{gpu=\"0\",kind=\"used\"} 1000\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_gpu_throttled{gpu=\"0\",reason=\"SwPowerCap\"} 1\n"));
}

TEST(PortErrorFigures, EachCounterOfEachPortAndNothingWithoutPorts) {
  v1::PortCounters port;
  port.set_device("rocep1s0f1");
  port.set_port(1);
  v1::PortCounter* c = port.add_counters();
  c->set_name("symbol_error");
  c->set_value(3);
  std::string text = Text(agent::PortErrorFigures({port}));
  EXPECT_THAT(text, HasSubstr("# TYPE fleet_node_rdma_port_errors_total counter\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_rdma_port_errors_total{device=\"rocep1s0f1\",port=\"1\","
                              "counter=\"symbol_error\"} 3\n"));
  EXPECT_TRUE(agent::PortErrorFigures({}).empty());
}

TEST(GpuErrorFigures, EccAndXidTotalsAndNothingForWhatNvmlCannotRead) {
  std::vector<agent::GpuErrorTotals> gpus(2);
  gpus[0].index = 0;
  gpus[0].ecc_corrected = 40;
  gpus[0].ecc_uncorrected = 2;
  gpus[0].xids = 1;
  gpus[1].index = 1;  // a GB10: no ECC memory, XIDs watched
  gpus[1].xids = 0;
  std::string text = Text(agent::GpuErrorFigures(gpus));
  EXPECT_THAT(text,
              HasSubstr("fleet_node_gpu_ecc_errors_total{gpu=\"0\",type=\"corrected\"} 40\n"));
  EXPECT_THAT(text,
              HasSubstr("fleet_node_gpu_ecc_errors_total{gpu=\"0\",type=\"uncorrected\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_node_gpu_xid_errors_total{gpu=\"1\"} 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("gpu=\"1\",type=")));
  EXPECT_TRUE(agent::GpuErrorFigures({}).empty());
}

TEST(ShardFigures, EveryStateWithItsCount) {
  std::vector<v1::ShardStatus> shards(3);
  shards[0].set_state(v1::SHARD_STATE_READY);
  shards[1].set_state(v1::SHARD_STATE_READY);
  shards[2].set_state(v1::SHARD_STATE_FAILED);
  std::string text = Text(agent::ShardFigures(shards));
  EXPECT_THAT(text, HasSubstr("fleet_agent_shards{state=\"ready\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_agent_shards{state=\"failed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fleet_agent_shards{state=\"starting\"} 0\n"));
}

TEST(CachedProbe, ProbesAgainOnlyOnceTheResultIsOlderThanMaxAge) {
  FakeClock clock;
  int probes = 0;
  agent::CachedProbe cache(&clock, absl::Seconds(15), [&] {
    v1::NodeProbe probe;
    probe.add_unavailable(absl::StrCat("probe ", ++probes));
    return probe;
  });
  EXPECT_EQ(cache.Get().unavailable(0), "probe 1");
  clock.Advance(absl::Seconds(14));
  EXPECT_EQ(cache.Get().unavailable(0), "probe 1");
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(cache.Get().unavailable(0), "probe 2");
  EXPECT_EQ(probes, 2);
}

// The fake controller, with the clock advanced by `step` on each Heartbeat, standing for the
// round trip.
class SlowController : public agent::ControllerClient {
 public:
  SlowController(FakeClock* clock, absl::Duration step) : clock_(clock), step_(step) {}
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& r) override {
    return fake.Register(r);
  }
  absl::StatusOr<v1::ReportShardsResponse> ReportShards(const v1::ReportShardsRequest& r) override {
    return fake.ReportShards(r);
  }
  absl::StatusOr<v1::HeartbeatVerdict> Heartbeat(const v1::HeartbeatDatagram& beat,
                                                 absl::string_view key, uint16_t port) override {
    clock_->Advance(step_);
    return fake.Heartbeat(beat, key, port);
  }
  absl::StatusOr<v1::RenewCertificateResponse> RenewCertificate(
      const v1::RenewCertificateRequest& r) override {
    return fake.RenewCertificate(r);
  }
  agent::FakeControllerClient fake;

 private:
  FakeClock* const clock_;
  const absl::Duration step_;
};

TEST(MeasuredControllerClient, TimesAnsweredBeatsAndCountsFailedOnes) {
  FakeClock clock;
  SlowController inner(&clock, absl::Milliseconds(3));
  inner.fake.heartbeat_results = {v1::HEARTBEAT_VERDICT_OK,
                                  absl::DeadlineExceededError("no ack from the controller"),
                                  v1::HEARTBEAT_VERDICT_REPORT_SHARDS};
  agent::AgentMetrics metrics;
  agent::MeasuredControllerClient client(&inner, &metrics, &clock);
  EXPECT_TRUE(client.Heartbeat({}, "key", 7100).ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(client.Heartbeat({}, "key", 7100).status()));
  EXPECT_EQ(*client.Heartbeat({}, "key", 7100), v1::HEARTBEAT_VERDICT_REPORT_SHARDS);
  EXPECT_EQ(inner.fake.heartbeats.size(), 3u);

  std::string text = SerializeMetrics({metrics.registry()});
  EXPECT_THAT(text, HasSubstr("fleet_agent_heartbeat_rtt_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_agent_heartbeat_rtt_seconds_bucket{le=\"0.001\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("fleet_agent_heartbeat_rtt_seconds_bucket{le=\"0.005\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fleet_agent_heartbeat_failures_total 1\n"));
}

// Every series the Grafana dashboard and the Prometheus config query is one a daemon or the
// engine writes: a renamed series breaks this test, not a panel nobody looks at.
TEST(Dashboard, QueriesOnlySeriesThatExist) {
  std::string sources;
  for (const char* file :
       {"controller/metrics/controller_metrics.cc", "agent/metrics/agent_metrics.cc",
        "common/metrics/rpc_metrics.cc", "engine/server/metrics.cc"}) {
    absl::StatusOr<std::string> text = ReadFileToString(absl::StrCat(FLEET_SOURCE_DIR, "/", file));
    ASSERT_TRUE(text.ok()) << text.status();
    sources += *text;
  }
  absl::StatusOr<std::string> dashboard =
      ReadFileToString(absl::StrCat(FLEET_SOURCE_DIR, "/deploy/grafana/sparkfleet-dashboard.json"));
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  std::set<std::string> names;
  std::regex series("(fleet_[a-z_]+|vllm:[a-z_]+)");
  for (auto it = std::sregex_iterator(dashboard->begin(), dashboard->end(), series);
       it != std::sregex_iterator(); ++it) {
    std::string name = it->str();
    // A histogram's series are its name plus _bucket, _sum or _count.
    name = std::regex_replace(name, std::regex("_bucket$"), "");
    names.insert(name);
  }
  EXPECT_GE(names.size(), 20u);
  for (const std::string& name : names) {
    EXPECT_THAT(sources, HasSubstr(absl::StrCat("\"", name, "\""))) << name;
  }
}

}  // namespace
}  // namespace fleet
