// The controller's durable state, behind an interface so policy code is tested against
// FakeStore (fake_store.h) and production uses SqliteStore (sqlite_store.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleet/v1/bench.pb.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/fabric.pb.h"
#include "fleet/v1/stage.pb.h"
#include "fleet/v1/state.pb.h"

namespace fleet::controller {

struct StoredEvent {
  absl::Time at;
  std::string kind;
  std::string message;
};

// Where an application's router runs (RouterManager), kept so that a restarted controller adopts
// it instead of starting a second one, and still stops the routers it left on Lost nodes.
struct StoredRouter {
  std::string application;
  std::string node_id;
  std::string node_name;
  std::string agent_address;
  std::string host;  // the address it listens on
  uint32_t port = 0;
  uint64_t generation = 0;                         // of its last start order
  std::map<std::string, std::string> left_behind;  // agent address → node id
};

class Store {
 public:
  virtual ~Store() = default;
  // A random id made when the state is first created; survives restarts.
  virtual absl::StatusOr<std::string> ControllerId() = 0;
  // Every stored node, as last written by PutNode.
  virtual absl::StatusOr<std::vector<v1::Node>> LoadNodes() = 0;
  // Inserts or replaces the node with this node id.
  virtual absl::Status PutNode(const v1::Node& node) = 0;
  virtual absl::Status DeleteNode(absl::string_view node_id) = 0;
  // Join tokens, keyed by id (inserted or replaced whole).
  virtual absl::StatusOr<std::vector<v1::StoredToken>> LoadTokens() = 0;
  virtual absl::Status PutToken(const v1::StoredToken& token) = 0;
  // Nodes removed by an operator; their certificates are refused from then on.
  virtual absl::StatusOr<std::vector<v1::RevokedNode>> LoadRevokedNodes() = 0;
  virtual absl::Status PutRevokedNode(const v1::RevokedNode& node) = 0;
  // Applied groups, keyed by group name (inserted or replaced whole).
  virtual absl::StatusOr<std::vector<v1::StoredGroup>> LoadGroups() = 0;
  virtual absl::Status PutGroup(const v1::StoredGroup& group) = 0;
  virtual absl::Status DeleteGroup(absl::string_view name) = 0;
  // An audit line: "node-registered", "node-lost", ... kept for `fleet describe` and debugging.
  virtual absl::Status AppendEvent(absl::Time at, absl::string_view kind, absl::string_view subject,
                                   absl::string_view message) = 0;
  // The last `limit` events about `subject` (a node id, a group name), oldest first.
  virtual absl::StatusOr<std::vector<StoredEvent>> LoadEvents(absl::string_view subject,
                                                              int limit) = 0;
  // Fabric test results (`fleet fabric`), kept so regressions show.
  virtual absl::Status AppendFabricResult(const v1::FabricResult& result) = 0;
  // The last `limit` results of each test and link (test, from, to), oldest first per link.
  virtual absl::StatusOr<std::vector<v1::FabricResult>> LoadFabricResults(int limit) = 0;
  // `fleet events`: stores `event` under a new id (larger than every earlier one) and returns
  // it. Its `id` field is ignored.
  virtual absl::StatusOr<int64_t> AppendGroupEvent(const v1::GroupEventRecord& event) = 0;
  // Events of the groups in `groups` (every group when empty) with an id above `after_id`,
  // oldest first, at most `limit`.
  virtual absl::StatusOr<std::vector<v1::GroupEventRecord>> LoadGroupEvents(
      const std::vector<std::string>& groups, int64_t after_id, int limit) = 0;
  // Forgets the events that happened before `before`.
  virtual absl::Status PruneGroupEvents(absl::Time before) = 0;
  // `fleet bench` sweeps against groups: stores `run` under a new id (larger than every earlier
  // one) and returns it. Its `id` field is ignored.
  virtual absl::StatusOr<int64_t> AppendBenchRun(const v1::BenchRun& run) = 0;
  // The last `limit` runs whose group or application is `name`, oldest first.
  virtual absl::StatusOr<std::vector<v1::BenchRun>> LoadBenchRuns(absl::string_view name,
                                                                  int limit) = 0;
  // Every application's router, as last written by PutRouter (one per application).
  virtual absl::StatusOr<std::vector<StoredRouter>> LoadRouters() = 0;
  virtual absl::Status PutRouter(const StoredRouter& router) = 0;
  virtual absl::Status DeleteRouter(absl::string_view application) = 0;
  // The last staging run (`fleet stage status`), replaced whole by each write: nullopt before
  // the first run.
  virtual absl::StatusOr<std::optional<v1::StageRun>> LoadLastStageRun() = 0;
  virtual absl::Status PutLastStageRun(const v1::StageRun& run) = 0;
};

}  // namespace fleet::controller
