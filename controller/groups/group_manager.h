// GroupManager: the serving groups the controller was asked to run. It parses and places an
// applied recipe, stores it with a new generation, orders each rank to start in the engine's
// launch order, folds the shard states that agents report into the group's state, stops
// groups (confirmed on every node), and fetches logs. Plain class: the Controller service
// translates RPCs into these calls, off its reactors. Applies and stops of one application run
// one at a time, in order (ApplyAsync, StopAsync); those of different applications run in
// parallel, and only choosing and reserving nodes is serialized across them.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/executor.h"
#include "common/serial_queue.h"
#include "controller/groups/agent_client.h"
#include "controller/groups/group_listener.h"
#include "controller/preflight/preflight.h"
#include "controller/registry/node_registry.h"
#include "controller/rendezvous/rendezvous_store.h"
#include "controller/store/store.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/state.pb.h"
#include "launch/plan.h"
#include "launch/recipe.h"
#include "launch/signatures.h"

namespace fleet::controller {

struct GroupManagerConfig {
  // Master (rendezvous) ports are chosen in this range, the lowest one no other group with the
  // same head node uses. 29500 is torch.distributed's default; the range is SparkFleet's.
  int master_port_first = 29500;
  int master_port_last = 29999;
  absl::Duration start_call_deadline = absl::Seconds(10);
  // A stop waits for every rank's grace period (10 s by default) on every node.
  absl::Duration stop_call_deadline = absl::Seconds(60);
  absl::Duration log_call_deadline = absl::Seconds(10);
  // A probe may hash a model directory the first time (150 GB at disk speed).
  absl::Duration probe_deadline = absl::Minutes(15);
  int events_kept_in_describe = 20;
  // While a group runs, each rank's new output is read this often and matched against the
  // group's log signatures (launch/signatures.h).
  absl::Duration log_scan_period = absl::Seconds(1);
  // Lines of each rank's output read after a rank ended, to find a cause no restart heals.
  int tail_lines_on_exit = 200;
  // `fleet events` keeps this much history in the store.
  absl::Duration events_kept_for = absl::Hours(24 * 7);
};

// Example:
//   GroupManager groups(config, &clock, &store, &registry, &agents, &rendezvous, &pool);
//   RETURN_IF_ERROR(groups.Load());
//   groups.ApplyAsync(request, [reactor](absl::StatusOr<v1::ApplyResponse> r) { ... });
//   groups.ReportShards(node_id, heartbeat.shards());  // on every heartbeat
class GroupManager {
 public:
  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

  // `rendezvous` gets a scope for each running generation of a `native` group: opened with a
  // new random token when the generation starts, closed when it ends (stopped, replaced,
  // failed). The ranks get the token as FLEET_RENDEZVOUS_TOKEN in their start orders; every
  // view of the group (List, Get, Apply's and Stop's answers, the stored `group`) shows it as
  // "<secret>".
  // `executor` runs applies, stops and background work (stopping a rank that should not run,
  // checking a launch's log); the controller passes a pool of its own for group work.
  GroupManager(GroupManagerConfig config, const Clock* clock, Store* store, NodeRegistry* registry,
               AgentClient* agents, RendezvousStore* rendezvous, Executor* executor)
      : config_(config),
        clock_(clock),
        store_(store),
        registry_(registry),
        agents_(agents),
        rendezvous_(rendezvous),
        executor_(executor),
        serial_(executor) {}

  // Reads the stored groups, and reopens the rendezvous scopes of the running ones with their
  // stored tokens. Their ranks keep running on the agents; the agents' next reports bring the
  // states up to date.
  absl::Status Load();

  // Apply and Stop on the executor, behind every earlier ApplyAsync and StopAsync of the same
  // application and beside those of others; `done` runs there with the result.
  void ApplyAsync(v1::ApplyRequest request, Done<v1::ApplyResponse> done);
  void StopAsync(std::string name, Done<std::vector<v1::Group>> done);

  // Blocking (agent calls): parse, place, store, order starts. The caller must not run it at
  // once with another Apply or Stop of the same application (ApplyAsync makes sure of that).
  // InvalidArgument for a bad recipe or override, FailedPrecondition when nodes are missing or a
  // node refuses its rank (the ranks already started are stopped again, and the group is Failed
  // with that reason). Preflight runs first: a failure stops the apply before anything changes,
  // unless request.force (failures then become warnings in the response).
  absl::StatusOr<v1::ApplyResponse> Apply(const v1::ApplyRequest& request);

  // Blocking (agent probes): places the recipe as Apply would, probes the chosen nodes and
  // judges them. No side effects.
  absl::StatusOr<v1::PreflightResponse> Preflight(const v1::ApplyRequest& request);

  // Blocking: probes one node now through its agent, with what `request` adds (an image).
  // NotFound names the fix.
  absl::StatusOr<v1::ProbeNodeResponse> ProbeNode(absl::string_view name,
                                                  const v1::ProbeRequest& request);

  // The shards a node holds, from its registration or heartbeat. Updates the ranks of known
  // groups; a shard of an older generation, or of a stopped group, is ordered to stop.
  void ReportShards(absl::string_view node_id,
                    const google::protobuf::RepeatedPtrField<v1::ShardStatus>& shards);

  // Moves groups whose nodes are Lost to Degraded and groups past their start timeout to
  // Failed. Called a few times a second.
  void Tick();

  std::vector<v1::Group> List() const;
  // NotFound names the groups that exist.
  absl::StatusOr<v1::GetGroupResponse> Get(absl::string_view name) const;
  // Blocking: every rank of the group (or of every replica of an application) stopped and
  // confirmed gone. The same rule as for Apply holds (StopAsync). Unavailable, naming the node,
  // when an agent cannot confirm it.
  absl::StatusOr<std::vector<v1::Group>> Stop(absl::string_view name);
  // Blocking: one rank's output from its node.
  absl::StatusOr<v1::GroupLogsResponse> Logs(const v1::GroupLogsRequest& request);

  // Tells `listener` (it must outlive the manager) about events and preflights from now on.
  // Call it before any other work starts.
  void SetListener(GroupListener* listener) { listener_ = listener; }
  // A coordinated restart of every group of `name` (a group or an application), now: every
  // rank of the running generation stopped and confirmed gone, then a new generation started
  // in the launch order. Not counted against the restart budget, which it resets. Runs behind
  // the application's applies, stops and restarts (RestartAsync). FailedPrecondition for a
  // Stopped group (apply it again), Unavailable when a node cannot confirm its ranks gone.
  void RestartAsync(std::string name, Done<std::vector<v1::Group>> done);
  absl::StatusOr<std::vector<v1::Group>> Restart(absl::string_view name);
  // What happened to the groups (every group when `name` is empty): rank exits, restarts,
  // failures, with their generation, node, rank, reason and action; ids above `after_id`,
  // oldest first, at most `limit`. NotFound for a name that is no group or application.
  absl::StatusOr<std::vector<v1::GroupEventRecord>> Events(absl::string_view name, int64_t after_id,
                                                           int limit) const;

 private:
  // An apply, parsed, placed and planned, before anything changes.
  struct Prepared {
    engine::Recipe recipe;
    std::vector<engine::Override> overrides;
    std::string app;
    std::string fingerprint;
    std::vector<std::string> names;                    // one per replica
    std::vector<std::vector<engine::NodeView>> nodes;  // per replica, index = rank
    std::vector<engine::GroupPlan> plans;              // per replica
    std::vector<v1::StoredGroup> previous;             // this application's groups
    std::map<std::string, std::string> addresses;      // node id → agent address
  };
  // Why an apply of a changed recipe replaces the running replicas instead of rolling them
  // (their count, names or nodes change, one is not Ready or serves nothing); nullopt when it
  // rolls.
  static std::optional<std::string> WhyNotRolled(const Prepared& p);
  // Nodes held by another application's active group or in-flight apply are not candidates.
  absl::StatusOr<Prepared> Prepare(const v1::ApplyRequest& request);
  // Prepare, and the chosen nodes and group names reserved for the application until
  // Unreserve: two applies in flight never place onto one node.
  absl::StatusOr<Prepared> PrepareAndReserve(const v1::ApplyRequest& request);
  void Unreserve(const std::string& app);
  // The application whose work `name` (a group or an application) is serialized under.
  std::string SerialKey(absl::string_view name) const;
  // Probes every placed node and runs the preflight checks; `nccl_by_rank` gets the NCCL
  // version each rank's node showed, in rank order across replicas.
  std::vector<CheckRow> Judge(const Prepared& prepared, std::vector<std::string>* nccl_by_rank);
  // After Ready: each rank's log checked for NCCL's banner and transport (on the executor).
  void CheckLaunch(const v1::Group& group);

  // Groups of an application (or the one group of that name), by name. Requires mu_.
  std::vector<std::string> NamesOf(absl::string_view name) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // `skip_lost`: ranks on Lost nodes are left (unconfirmed) instead of failing the stop.
  absl::Status StopRanks(const v1::Group& group, bool skip_lost = false);
  // Nodes for every rank of `stored` under its recipe's placement: its own Ready ones kept
  // where placement allows, free Ready nodes for those on Lost nodes. FailedPrecondition (from
  // PlaceReplicas) when there are not enough.
  absl::StatusOr<std::vector<engine::NodeView>> ReplacementNodes(const v1::StoredGroup& stored)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Orders every rank of `stored` to start, in order, with the generation's rendezvous token;
  // stops the started ones on failure.
  absl::Status StartRanks(const v1::StoredGroup& stored);
  // Recomputes state and message from the ranks; persists and logs a change. Requires mu_.
  void Refresh(v1::StoredGroup& stored) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores the record and makes the rendezvous scope follow its state.
  void Persist(const v1::StoredGroup& stored) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Opens the generation's rendezvous scope while the group runs, closes it once it ended.
  void SyncRendezvous(const v1::StoredGroup& stored) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Event(absl::string_view group, absl::string_view kind, absl::string_view message);
  int ChooseMasterPort(const std::string& head_node_id, absl::string_view except_application)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Why a generation is being replaced (group_healing.cc).
  struct HealCause {
    std::string reason;  // "rank 0 on spark-1 ended (killed by signal 9)"
    std::string node;    // where it happened; empty for the whole group
    int rank = -1;
    bool by_operator = false;
    std::optional<engine::SignatureMatch> match;  // a log signature that fired
    // A node of the group is Lost and free nodes can take its ranks: the others are stopped
    // and the next generation is placed again; the Lost node's ranks stay unconfirmed until
    // its agent returns and they are stopped.
    bool replace_lost = false;
  };
  // What the controller does between a failure of a generation and its successor's start.
  struct PendingRestart {
    uint64_t generation = 0;
    std::optional<absl::Time> due;  // set once the old ranks are gone and a backoff runs
    bool start_posted = false;
  };
  // Each running group's output, read incrementally and counted against its signatures.
  struct LogWatch {
    uint64_t generation = 0;
    std::vector<uint64_t> offsets;  // per rank: the next byte to read
    std::vector<std::shared_ptr<engine::SignatureCounter>> counters;  // per rank
    bool busy = false;
    absl::Time next_scan;
  };
  // Posts Heal for the group's current generation unless one is posted already.
  void PostHeal(v1::StoredGroup& stored, HealCause cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A re-placement for a group with a rank on a Lost node, when its restart policy and the
  // free nodes allow one; nullopt otherwise (it stays Degraded until the node returns).
  std::optional<HealCause> LostNodeCause(const v1::StoredGroup& stored)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On the application's queue: find an unhealable cause in the ranks' last output, stop every
  // rank of the generation (confirmed), then fail the group or restart it per its policy.
  void Heal(const std::string& name, uint64_t generation, HealCause cause);
  // The group's recipe rendered again for `generation` on the nodes it holds. Requires mu_.
  // `recipe`, when given, receives the parsed stored recipe.
  absl::StatusOr<engine::GroupPlan> Replan(const v1::StoredGroup& stored, uint64_t generation,
                                           engine::Recipe* recipe = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On the application's queue: the next generation, on the same nodes, in launch order.
  void StartNextGeneration(const std::string& name, uint64_t generation);
  // Reads the ranks' new output and counts it against the group's signatures.
  void ScanLogs(const v1::Group& group);
  // Posts due restarts and log scans. Called by Tick. Requires mu_.
  void TickHealing(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Failed with `message`; nodes whose ranks are not confirmed gone stay held. Requires mu_.
  void FailGroup(v1::StoredGroup& stored, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One line of `fleet events`, also logged and kept with the group's describe events.
  void HealEvent(const v1::Group& group, const std::string& node, int rank,
                 const std::string& reason, const std::string& action);

  const GroupManagerConfig config_;
  const Clock* const clock_;
  Store* const store_;
  NodeRegistry* const registry_;
  AgentClient* const agents_;
  RendezvousStore* const rendezvous_;
  Executor* const executor_;
  SerialQueue serial_;  // applies and stops, keyed by application
  // Held from choosing nodes to reserving them, never across an agent call.
  absl::Mutex placement_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  // Nodes (by id) and group names of applies in flight, each with its application.
  std::map<std::string, std::string> reserved_nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> reserved_names_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::StoredGroup, std::less<>> groups_ ABSL_GUARDED_BY(mu_);
  // Ids of the Lost nodes, as of the last Tick().
  absl::flat_hash_set<std::string> lost_nodes_ ABSL_GUARDED_BY(mu_);
  GroupListener* listener_ = nullptr;
  // By group name: restarts under way, and the output being watched.
  std::map<std::string, PendingRestart, std::less<>> pending_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, LogWatch, std::less<>> watches_ ABSL_GUARDED_BY(mu_);
  absl::Time next_prune_ ABSL_GUARDED_BY(mu_);
};

// "Pending", "Starting", "Ready", "Degraded", "Failed", "Stopped".
absl::string_view GroupStateName(v1::GroupState state);

// The revision of an applied recipe: a hash of the application's name, the recipe's text and
// its overrides. Equal revisions leave an apply nothing to change.
std::string RecipeFingerprint(absl::string_view app, absl::string_view recipe_yaml,
                              const google::protobuf::RepeatedPtrField<std::string>& overrides);

// Sets the fields of `group` that come from its recipe (of revision `fingerprint`) and from
// the plan of a generation: engine, endpoint, router and rollout settings, start timeout,
// launch order and the plan's notes.
void SetRecipeFields(const engine::Recipe& recipe, const std::string& fingerprint,
                     const engine::GroupPlan& plan, v1::Group& group);
// "Starting", "Running", "Ready", "Stopping", "Exited", "Failed", "-" (not reported yet).
absl::string_view ShardStateName(v1::ShardState state);

}  // namespace fleet::controller
