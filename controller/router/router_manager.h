// RouterManager: one endpoint per applied recipe. For every application with a serving group it
// runs a router (HAProxy, router.h) as a shard on the agent of the first replica's head node,
// and keeps the router's view equal to the groups': replica i's head endpoint in slot i + 1,
// READY while the group is Ready, MAINT otherwise, DRAIN while `fleet roll` drains it. It talks
// to HAProxy only through that agent (the RouterCommand RPC), never by reload. Level-triggered:
// each reconcile compares what the router shows with what the groups say and sends only the
// difference, so a router that restarted, a controller that restarted, or a group whose state
// changed all converge the same way. A router whose node is Lost cannot answer: it moves to the
// first replica whose head is on a node that is not Lost (a new endpoint, shown by `fleet get
// services`), and the old one is stopped once its node answers again. Plain class: the
// controller's ticker calls Tick, the Controller service calls List and RollAsync.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/executor.h"
#include "controller/groups/agent_client.h"
#include "controller/router/engine_metrics.h"
#include "controller/router/rollout.h"
#include "controller/store/store.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::controller {

struct RouterManagerConfig {
  // A router's port when the recipe sets no `router.port`: the lowest in this range that no
  // other router on the same node uses.
  uint32_t first_port = 8100;
  uint32_t last_port = 8199;
  absl::Duration call_deadline = absl::Seconds(5);
  // Between two steps of a roll.
  absl::Duration roll_period = absl::Milliseconds(200);
  // A router that is not running is started again at most this often.
  absl::Duration restart_interval = absl::Seconds(2);
  // The router's argv[0]; the agent looks it up in its PATH.
  std::string haproxy = "haproxy";
};

// Example:
//   RouterManager routers(config, clock, store, agents, &metrics, pool,
//                         [&] { return groups.List(); }, [&] { return registry.LostNodeIds(); },
//                         restart_group, sleep);
//   RETURN_IF_ERROR(routers.Load());
//   routers.Tick();  // a few times a second
//   std::vector<v1::Service> services = routers.List("");
class RouterManager {
 public:
  using GroupSource = std::function<std::vector<v1::Group>()>;
  // The ids of the Lost nodes (NodeRegistry::LostNodeIds).
  using LostNodeSource = std::function<absl::flat_hash_set<std::string>()>;
  // A coordinated restart of one group (GroupManager::RestartAsync, waited for).
  using Restarter = std::function<absl::Status(const std::string& group)>;
  using Sleeper = std::function<void(absl::Duration)>;
  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

  RouterManager(RouterManagerConfig config, const Clock* clock, Store* store, AgentClient* agents,
                EngineMetrics* metrics, Executor* executor, GroupSource groups,
                LostNodeSource lost_nodes, Restarter restart, Sleeper sleep)
      : config_(std::move(config)),
        clock_(clock),
        store_(store),
        agents_(agents),
        metrics_(metrics),
        executor_(executor),
        groups_(std::move(groups)),
        lost_nodes_(std::move(lost_nodes)),
        restart_(std::move(restart)),
        sleep_(std::move(sleep)) {}

  // Reads where the routers ran (the store), so the first reconcile adopts each one where it
  // runs instead of starting another, and still stops those left on Lost nodes.
  absl::Status Load();
  // Posts a reconcile of every application that has none in flight.
  void Tick();
  // Blocking (agent calls): makes `application`'s router match its groups. Starts the router
  // when it does not run; stops it once every group of the application is Stopped.
  absl::Status Reconcile(const std::string& application);

  // Every application's router (or the one named: NotFound when there is none).
  absl::StatusOr<std::vector<v1::Service>> List(const std::string& name) const;

  // `fleet roll`: blocking until the roll ended; RollAsync runs it on the executor.
  absl::StatusOr<v1::RollGroupResponse> Roll(const std::string& name);
  void RollAsync(std::string name, Done<v1::RollGroupResponse> done);
  // A roll in progress stops at its next step (Aborted); no new work starts.
  void Shutdown();

 private:
  struct Router {
    absl::Mutex reconcile_mu;  // one reconcile (or roll step) of this router at a time
    // Guarded by the manager's mu_:
    std::string node_id, node_name, agent_address, host;
    uint32_t port = 0;
    int slots = 0;
    uint64_t generation = 0;              // 0: never started by this controller
    std::vector<v1::RouterServer> shown;  // the last `show`, by slot
    std::string message;
    std::vector<bool> draining;            // by replica, set by a roll
    std::optional<absl::Time> last_start;  // the last start order sent
    bool posted = false;
    bool rolling = false;
    // Agents (address → node id) of Lost nodes this router moved away from, whose old router
    // is stopped once they answer.
    std::map<std::string, std::string> left_behind;
  };
  // Stops the routers left on nodes that answer again; forgets each one stopped.
  void StopLeftBehind(const std::string& application, Router& router);
  // Writes the router's placement to the store (a failure is logged: the router still works).
  void Persist(const std::string& application, const Router& router)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The application's groups, by name (replica order).
  std::vector<v1::Group> GroupsOf(const std::string& application) const;
  std::shared_ptr<Router> RouterOf(const std::string& application) const;
  uint32_t ChoosePort(const v1::Group& first, const std::string& node_id) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status StartRouter(const std::string& application, Router& router, int slots);
  // Reconcile with `router.reconcile_mu` held.
  absl::Status ReconcileLocked(const std::string& application, Router& router);

  const RouterManagerConfig config_;
  const Clock* const clock_;
  Store* const store_;
  AgentClient* const agents_;
  EngineMetrics* const metrics_;
  Executor* const executor_;
  const GroupSource groups_;
  const LostNodeSource lost_nodes_;
  const Restarter restart_;
  const Sleeper sleep_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Router>> routers_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fleet::controller
