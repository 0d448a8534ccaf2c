// ControllerMetrics: scrape-time families and event counters of the controller.
#include "controller/metrics/controller_metrics.h"

#include <map>
#include <string>

#include "common/metrics/metrics_server.h"
#include "common/proto_time.h"
#include "controller/groups/group_manager.h"
#include "controller/registry/node_registry.h"

namespace fleet::controller {
namespace {

// A staging run lasts from a second (nothing to send) to hours (150 GB to a slow disk).
prometheus::Histogram::BucketBoundaries StageRunBuckets() {
  return {1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400};
}

}  // namespace

std::vector<prometheus::MetricFamily> ControllerSnapshot(const std::vector<v1::Node>& nodes,
                                                         const std::vector<v1::Group>& groups,
                                                         const HeartbeatCounters& heartbeats,
                                                         absl::Time now) {
  std::vector<prometheus::MetricFamily> out;

  // Every state is written, zero included, so a dashboard's "Lost" line exists before the first
  // node is lost.
  std::map<std::string, int> by_state;
  for (v1::NodeState s : {v1::NODE_STATE_READY, v1::NODE_STATE_SUSPECT, v1::NODE_STATE_LOST}) {
    by_state[std::string(NodeStateName(s))] = 0;
  }
  prometheus::MetricFamily age = GaugeFamily("fleet_node_heartbeat_age_seconds",
                                             "Seconds since the node's last heartbeat arrived");
  for (const v1::Node& node : nodes) {
    ++by_state[std::string(NodeStateName(node.state()))];
    if (node.has_last_heartbeat()) {
      AddSample(age, {{"node", node.identity().name()}},
                absl::ToDoubleSeconds(now - FromProtoTime(node.last_heartbeat())));
    }
  }
  prometheus::MetricFamily node_states =
      GaugeFamily("fleet_nodes", "Nodes the controller knows, by state");
  for (const auto& [state, count] : by_state) AddSample(node_states, {{"state", state}}, count);
  out.push_back(std::move(node_states));
  out.push_back(std::move(age));

  prometheus::MetricFamily beats = CounterFamily(
      "fleet_heartbeats_total", "Heartbeat datagrams received, by what became of them");
  AddSample(beats, {{"result", "answered"}}, static_cast<double>(heartbeats.answered));
  AddSample(beats, {{"result", "told_to_register"}},
            static_cast<double>(heartbeats.told_to_register));
  AddSample(beats, {{"result", "malformed"}}, static_cast<double>(heartbeats.malformed));
  AddSample(beats, {{"result", "unproven"}}, static_cast<double>(heartbeats.unproven));
  AddSample(beats, {{"result", "replayed"}}, static_cast<double>(heartbeats.replayed));
  out.push_back(std::move(beats));
  prometheus::MetricFamily missed =
      CounterFamily("fleet_heartbeats_missed_total",
                    "Heartbeats that never arrived: gaps in the sequence numbers of a session");
  AddSample(missed, {}, static_cast<double>(heartbeats.missed));
  out.push_back(std::move(missed));

  std::map<std::string, int> group_states;
  for (v1::GroupState s :
       {v1::GROUP_STATE_PENDING, v1::GROUP_STATE_STARTING, v1::GROUP_STATE_READY,
        v1::GROUP_STATE_DEGRADED, v1::GROUP_STATE_FAILED, v1::GROUP_STATE_STOPPED}) {
    group_states[std::string(GroupStateName(s))] = 0;
  }
  prometheus::MetricFamily ranks =
      GaugeFamily("fleet_group_ranks", "Ranks of each serving group, by shard state");
  for (const v1::Group& group : groups) {
    ++group_states[std::string(GroupStateName(group.state()))];
    std::map<std::string, int> rank_states;
    for (const v1::GroupRank& rank : group.ranks()) {
      ++rank_states[std::string(ShardStateName(rank.status().state()))];
    }
    for (const auto& [state, count] : rank_states) {
      AddSample(ranks, {{"group", group.name()}, {"state", state == "-" ? "Unreported" : state}},
                count);
    }
  }
  prometheus::MetricFamily group_family =
      GaugeFamily("fleet_groups", "Serving groups the controller runs, by state");
  for (const auto& [state, count] : group_states) {
    AddSample(group_family, {{"state", state}}, count);
  }
  out.push_back(std::move(group_family));
  out.push_back(std::move(ranks));
  return out;
}

ControllerMetrics::ControllerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      group_events_(prometheus::BuildCounter()
                        .Name("fleet_group_events_total")
                        .Help("Events of serving groups, by kind (rank-exited, group-failed, ...)")
                        .Register(*registry_)),
      rank_exits_(prometheus::BuildCounter()
                      .Name("fleet_rank_exits_total")
                      .Help("Ranks of serving groups that exited or failed, by group and state")
                      .Register(*registry_)),
      preflight_failures_(prometheus::BuildCounter()
                              .Name("fleet_preflight_failures_total")
                              .Help("Preflight checks judged fail, by check")
                              .Register(*registry_)),
      fabric_results_(prometheus::BuildCounter()
                          .Name("fleet_fabric_results_total")
                          .Help("Fabric test results, by test and verdict")
                          .Register(*registry_)),
      stage_runs_(prometheus::BuildCounter()
                      .Name("fleet_stage_runs_total")
                      .Help("Staging runs (fleet stage) ended, by kind (model, image) and result "
                            "(done, failed, cancelled)")
                      .Register(*registry_)),
      stage_sent_bytes_(prometheus::BuildCounter()
                            .Name("fleet_stage_sent_bytes_total")
                            .Help("Bytes staging runs wrote to their targets, summed over the "
                                  "targets, by kind")
                            .Register(*registry_)),
      stage_run_seconds_(prometheus::BuildHistogram()
                             .Name("fleet_stage_run_seconds")
                             .Help("Duration of each staging run, by kind")
                             .Register(*registry_)),
      stage_in_flight_(prometheus::BuildGauge()
                           .Name("fleet_stage_in_flight")
                           .Help("Staging runs in flight (at most one at a time)")
                           .Register(*registry_)
                           .Add({})),
      rpc_(*registry_) {
  // Both kinds from the start, so a dashboard's rate() has a zero before the first run.
  for (const char* kind : {"model", "image"}) {
    stage_sent_bytes_.Add({{"kind", kind}});
    stage_run_seconds_.Add({{"kind", kind}}, StageRunBuckets());
  }
}

void ControllerMetrics::OnGroupEvent(absl::string_view group, absl::string_view kind) {
  group_events_.Add({{"kind", std::string(kind)}}).Increment();
  if (kind == "rank-exited" || kind == "rank-failed") {
    rank_exits_
        .Add(
            {{"group", std::string(group)}, {"state", kind == "rank-exited" ? "Exited" : "Failed"}})
        .Increment();
  }
}

void ControllerMetrics::OnPreflight(const std::vector<CheckRow>& rows) {
  for (const CheckRow& row : rows) {
    if (row.verdict == Verdict::kFail) preflight_failures_.Add({{"check", row.check}}).Increment();
  }
}

void ControllerMetrics::OnStageStarted() { stage_in_flight_.Increment(); }

void ControllerMetrics::OnStageEnded(const v1::StageRun& run) {
  stage_in_flight_.Decrement();
  const std::string kind = run.kind().empty() ? "model" : run.kind();
  stage_runs_.Add({{"kind", kind}, {"result", run.state()}}).Increment();
  uint64_t sent = 0;
  for (const v1::StageNodeResult& node : run.nodes()) sent += node.bytes_sent();
  stage_sent_bytes_.Add({{"kind", kind}}).Increment(static_cast<double>(sent));
  stage_run_seconds_.Add({{"kind", kind}}, StageRunBuckets()).Observe(run.seconds());
}

void ControllerMetrics::OnFabricResult(absl::string_view test, absl::string_view verdict) {
  fabric_results_.Add({{"test", std::string(test)}, {"verdict", std::string(verdict)}}).Increment();
}

}  // namespace fleet::controller
