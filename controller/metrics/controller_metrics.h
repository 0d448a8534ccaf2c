// ControllerMetrics: the controller's Prometheus series. Figures the controller already keeps
// (nodes by state, heartbeat ages and counters, groups by state) are read when Prometheus
// scrapes; events (rank exits, preflight failures, fabric results) and RPC latencies are counted
// as they happen.
//
// Series (all prefixed fleet_):
//   nodes{state}                         gauge    nodes known, by Ready/Suspect/Lost
//   node_heartbeat_age_seconds{node}     gauge    time since each node's last heartbeat
//   heartbeats_total{result}             counter  datagrams answered, dropped, told to register
//   heartbeats_missed_total              counter  beats that never arrived (sequence gaps)
//   groups{state}                        gauge    serving groups by state
//   group_ranks{group,state}             gauge    ranks of each group by shard state
//   group_events_total{kind}             counter  every group event (restarts, failures, ...)
//   rank_exits_total{group,state}        counter  ranks that exited or failed
//   preflight_failures_total{check}      counter  preflight rows judged fail
//   fabric_results_total{test,verdict}   counter  fabric test results
//   stage_runs_total{kind,result}        counter  `fleet stage` runs ended, by model/image and
//                                                 done/failed/cancelled
//   stage_sent_bytes_total{kind}         counter  bytes staging wrote to targets (sum over nodes)
//   stage_run_seconds{kind}              histogram how long each staging run took
//   stage_in_flight                      gauge    staging runs in flight (0 or 1)
//   rpc_duration_seconds{method,code}    histogram (common/metrics/rpc_metrics.h)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/clock.h"
#include "common/metrics/rpc_metrics.h"
#include "controller/groups/group_listener.h"
#include "controller/registry/heartbeat_sessions.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/stage.pb.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace fleet::controller {

// The scrape-time families from what the controller knows at `now`.
std::vector<prometheus::MetricFamily> ControllerSnapshot(const std::vector<v1::Node>& nodes,
                                                         const std::vector<v1::Group>& groups,
                                                         const HeartbeatCounters& heartbeats,
                                                         absl::Time now);

// Example:
//   ControllerMetrics metrics;
//   group_manager.SetListener(&metrics);
//   std::vector<std::shared_ptr<prometheus::Collectable>> sources = {
//       metrics.registry(), ScrapeTimeCollectable([&] { return ControllerSnapshot(...); })};
class ControllerMetrics : public GroupListener {
 public:
  ControllerMetrics();

  // Counters and histograms counted as things happen.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  RpcMetrics& rpc() { return rpc_; }

  void OnGroupEvent(absl::string_view group, absl::string_view kind) override;
  void OnPreflight(const std::vector<CheckRow>& rows) override;
  // `test` is "tcp", "rdma" or "nccl"; `verdict` "pass", "warn", "fail" or "not-measured".
  void OnFabricResult(absl::string_view test, absl::string_view verdict);
  // `fleet stage` (StageRunEvents): a run started; `run` ended, in its final state.
  void OnStageStarted();
  void OnStageEnded(const v1::StageRun& run);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& group_events_;
  prometheus::Family<prometheus::Counter>& rank_exits_;
  prometheus::Family<prometheus::Counter>& preflight_failures_;
  prometheus::Family<prometheus::Counter>& fabric_results_;
  prometheus::Family<prometheus::Counter>& stage_runs_;
  prometheus::Family<prometheus::Counter>& stage_sent_bytes_;
  prometheus::Family<prometheus::Histogram>& stage_run_seconds_;
  prometheus::Gauge& stage_in_flight_;
  RpcMetrics rpc_;
};

}  // namespace fleet::controller
