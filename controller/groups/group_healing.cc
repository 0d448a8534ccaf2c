// GroupManager after Ready: a rank that ended or a log signature that fired replaces the
// generation (every old rank stopped and confirmed gone, then the next generation in launch
// order, after the restart policy's backoff), or fails the group with the cause and its fix.
// `fleet restart` and `fleet events` are here too.
#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "controller/groups/group_manager.h"
#include "controller/groups/restart_budget.h"
#include "launch/placement.h"
#include "launch/plan.h"

namespace fleet::controller {
namespace {

// Reasons shown when the budget is spent.
constexpr int kLastErrorsKept = 3;

bool Ended(v1::ShardState state) {
  return state == v1::SHARD_STATE_EXITED || state == v1::SHARD_STATE_FAILED;
}

// "the last line `...`: fix" for a signature that fires.
std::string Quote(const engine::SignatureMatch& m) {
  std::string out = absl::StrCat("`", m.line, "`");
  if (m.seen > 1) absl::StrAppend(&out, " (", m.seen, " times)");
  return out;
}

}  // namespace

void GroupManager::HealEvent(const v1::Group& group, const std::string& node, int rank,
                             const std::string& reason, const std::string& action) {
  v1::GroupEventRecord e;
  *e.mutable_at() = ToProtoTime(clock_->Now());
  e.set_group(group.name());
  e.set_generation(group.generation());
  e.set_node(node);
  e.set_rank(rank);
  e.set_reason(reason);
  e.set_action(action);
  if (absl::StatusOr<int64_t> id = store_->AppendGroupEvent(e); !id.ok()) {
    Log(LogLevel::kWarning, "groups", "event not stored", {{"error", id.status().ToString()}});
  }
  Event(group.name(), absl::StrCat("heal-", action.substr(0, action.find(' '))),
        absl::StrCat("generation ", group.generation(), ": ", reason, " → ", action));
}

void GroupManager::FailGroup(v1::StoredGroup& stored, const std::string& message) {
  v1::Group& group = *stored.mutable_group();
  pending_.erase(group.name());
  watches_.erase(group.name());
  group.set_state(v1::GROUP_STATE_FAILED);
  group.set_message(message);
  *group.mutable_updated_at() = ToProtoTime(clock_->Now());
  Persist(stored);
}

void GroupManager::PostHeal(v1::StoredGroup& stored, HealCause cause) {
  const v1::Group& group = stored.group();
  auto it = pending_.find(group.name());
  if (it != pending_.end() && it->second.generation == group.generation()) return;
  pending_[group.name()] = PendingRestart{.generation = group.generation()};
  // Until the stop is confirmed, every node of the generation may still run its rank.
  stored.clear_unconfirmed_node_ids();
  std::set<std::string> nodes;
  for (const v1::GroupRank& rank : group.ranks()) {
    if (nodes.insert(rank.node_id()).second) stored.add_unconfirmed_node_ids(rank.node_id());
  }
  serial_.Post(group.application(),
               [this, name = group.name(), generation = group.generation(),
                cause = std::move(cause)]() mutable { Heal(name, generation, std::move(cause)); });
}

void GroupManager::Heal(const std::string& name, uint64_t generation, HealCause cause) {
  v1::StoredGroup snapshot;
  absl::flat_hash_set<std::string> lost;  // a Lost node answers nothing: not asked
  {
    absl::MutexLock lock(&mu_);
    auto it = groups_.find(name);
    if (it == groups_.end() || it->second.group().generation() != generation ||
        it->second.group().state() == v1::GROUP_STATE_STOPPED) {
      if (auto p = pending_.find(name); p != pending_.end() && p->second.generation == generation) {
        pending_.erase(p);
      }
      return;
    }
    snapshot = it->second;
    lost = lost_nodes_;
  }
  const v1::Group& group = snapshot.group();
  absl::StatusOr<engine::Recipe> recipe =
      engine::ParseRecipe(group.recipe_path(), snapshot.recipe_yaml());
  engine::RestartSettings settings;
  if (recipe.ok()) settings = recipe->restart;
  HealEvent(group, cause.node, cause.rank, cause.reason,
            cause.by_operator ? "restart" : "stop every rank");

  // A start failure that no restart heals shows in the output of one of the ranks.
  if (!cause.by_operator && recipe.ok() &&
      !(cause.match.has_value() &&
        cause.match->signature.action == engine::SignatureAction::kFail)) {
    for (const v1::GroupRank& rank : group.ranks()) {
      if (lost.contains(rank.node_id())) continue;
      v1::ReadShardLogRequest read;
      read.set_group(name);
      read.set_rank(rank.rank());
      read.set_tail_lines(config_.tail_lines_on_exit);
      absl::StatusOr<v1::ReadShardLogResponse> log = agents_->ReadShardLog(
          rank.node_address(), rank.node_id(), read, config_.log_call_deadline);
      if (!log.ok()) continue;
      engine::SignatureCounter counter(engine::EffectiveSignatures(*recipe));
      std::optional<engine::SignatureMatch> m = counter.FeedAll(log->data(), clock_->Now());
      if (m.has_value() && m->signature.action == engine::SignatureAction::kFail) {
        cause.match = std::move(m);
        cause.node = rank.node_name();
        cause.rank = static_cast<int>(rank.rank());
        break;
      }
    }
  }

  absl::Status stopped = StopRanks(group, cause.replace_lost);
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(name);
  if (it == groups_.end() || it->second.group().generation() != generation) return;
  v1::StoredGroup& stored = it->second;
  if (!stopped.ok()) {
    // The nodes stay in unconfirmed_node_ids: no other group is placed there until their
    // agents report the ranks gone.
    FailGroup(stored,
              absl::StrCat(cause.reason, "; the ranks of generation ", generation,
                           " are not confirmed gone, so nothing restarts: ", stopped.message()));
    HealEvent(stored.group(), "", -1, "stop not confirmed", "fail");
    return;
  }
  stored.clear_unconfirmed_node_ids();
  for (v1::GroupRank& rank : *stored.mutable_group()->mutable_ranks()) {
    // Left running on a Lost node: stopped when its agent returns (ReportShards).
    if (cause.replace_lost && lost.contains(rank.node_id())) {
      stored.add_unconfirmed_node_ids(rank.node_id());
      continue;
    }
    if (!Ended(rank.status().state())) {
      rank.mutable_status()->set_state(v1::SHARD_STATE_EXITED);
      rank.mutable_status()->set_message("stopped with its group");
    }
  }
  // Failed already (restart.policy never, start timeout): the ranks are gone now; a cause
  // found in the output says more than the exit did.
  if (group.state() == v1::GROUP_STATE_FAILED && !cause.by_operator) {
    std::string message = stored.group().message();
    if (cause.match.has_value() &&
        cause.match->signature.action == engine::SignatureAction::kFail) {
      message = absl::StrCat("cannot heal: rank ", cause.rank, " on ", cause.node, " printed ",
                             Quote(*cause.match), ". Fix: ", cause.match->signature.fix,
                             "; then `fleet apply` again");
    }
    FailGroup(stored, absl::StrCat(message, ". Every rank is stopped."));
    HealEvent(stored.group(), cause.node, cause.rank, cause.reason, "fail");
    return;
  }
  if (cause.match.has_value() && cause.match->signature.action == engine::SignatureAction::kFail) {
    const engine::SignatureMatch& m = *cause.match;
    FailGroup(stored, absl::StrCat(
                          "cannot heal: ", cause.node.empty() ? "" : "rank ",
                          cause.rank < 0 ? "" : absl::StrCat(cause.rank, " on ", cause.node),
                          cause.node.empty() ? "" : " printed ", Quote(m),
                          ". Fix: ", m.signature.fix.empty() ? "see `fleet logs`" : m.signature.fix,
                          "; then `fleet apply` again. Every rank is stopped."));
    HealEvent(stored.group(), cause.node, cause.rank, absl::StrCat("log: ", m.line), "fail");
    return;
  }
  if (!recipe.ok()) {
    FailGroup(stored, absl::StrCat(cause.reason, "; the stored recipe no longer parses (",
                                   recipe.status().message(), "). Every rank is stopped."));
    return;
  }
  std::vector<absl::Time> history;
  for (const auto& t : stored.restarts()) history.push_back(FromProtoTime(t));
  if (cause.by_operator) history.clear();
  RestartBudget budget(settings, clock_, history);
  RestartBudget::Decision decision = budget.Decide();
  if (!cause.by_operator && !decision.restart) {
    std::vector<std::string> errors(stored.last_errors().begin(), stored.last_errors().end());
    errors.push_back(cause.reason);
    if (static_cast<int>(errors.size()) > kLastErrorsKept) {
      errors.erase(errors.begin(), errors.end() - kLastErrorsKept);
    }
    const std::string why =
        !settings.always
            ? absl::StrCat(cause.reason, "; restart.policy is never")
            : absl::StrCat("restart budget spent: ", decision.restarts_in_window,
                           " restarts within ", absl::FormatDuration(settings.window),
                           " (restart.max_restarts); last errors: ", absl::StrJoin(errors, " | "));
    FailGroup(stored, absl::StrCat(why, ". Every rank is stopped; `fleet logs ", name,
                                   "` shows the output, `fleet restart ", name, "` tries again"));
    HealEvent(stored.group(), cause.node, cause.rank,
              settings.always ? "restart budget spent" : "restart.policy never", "fail");
    return;
  }
  if (!cause.by_operator) budget.Record();
  stored.clear_restarts();
  for (absl::Time t : budget.history()) *stored.add_restarts() = ToProtoTime(t);
  stored.add_last_errors(cause.reason);
  while (stored.last_errors_size() > kLastErrorsKept) {
    stored.mutable_last_errors()->erase(stored.mutable_last_errors()->begin());
  }
  const absl::Duration delay = cause.by_operator ? absl::ZeroDuration() : decision.delay;
  v1::Group& g = *stored.mutable_group();
  g.set_state(v1::GROUP_STATE_STARTING);
  g.set_message(absl::StrCat(
      cause.reason, "; every rank stopped; generation ", generation + 1,
      delay > absl::ZeroDuration()
          ? absl::StrCat(" starts in ", absl::FormatDuration(delay), " (restart backoff)")
          : " starting"));
  *g.mutable_updated_at() = ToProtoTime(clock_->Now());
  Persist(stored);
  PendingRestart& pending = pending_[name];
  pending.generation = generation;
  pending.due = clock_->Now() + delay;
  pending.start_posted = true;
  if (delay > absl::ZeroDuration()) {
    pending.start_posted = false;  // TickHealing posts it when due
    HealEvent(stored.group(), cause.node, cause.rank, cause.reason,
              absl::StrCat("restart in ", absl::FormatDuration(delay)));
    return;
  }
  // An operator's restart (Restart) starts the next generation itself, in its own task.
  if (!cause.by_operator) {
    serial_.Post(g.application(),
                 [this, name, generation] { StartNextGeneration(name, generation); });
  }
}

absl::StatusOr<engine::GroupPlan> GroupManager::Replan(const v1::StoredGroup& stored,
                                                       uint64_t generation,
                                                       engine::Recipe* parsed) {
  const v1::Group& group = stored.group();
  ASSIGN_OR_RETURN(engine::Recipe recipe,
                   engine::ParseRecipe(group.recipe_path(), stored.recipe_yaml()));
  if (parsed != nullptr) *parsed = recipe;
  std::vector<engine::Override> overrides;
  for (const std::string& text : stored.overrides()) {
    ASSIGN_OR_RETURN(engine::Override o, engine::ParseOverride(text));
    overrides.push_back(std::move(o));
  }
  engine::GroupContext context;
  context.group = group.name();
  context.generation = generation;
  const std::vector<v1::Node> nodes = registry_->List();
  for (const v1::GroupRank& rank : group.ranks()) {
    auto node = std::find_if(nodes.begin(), nodes.end(), [&](const v1::Node& n) {
      return n.identity().node_id() == rank.node_id();
    });
    if (node == nodes.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", rank.node_name(), " (rank ", rank.rank(), ") was removed"));
    }
    context.nodes.push_back(ToNodeView(*node));
  }
  if (context.nodes.empty()) return absl::FailedPreconditionError("the group has no ranks");
  context.master_addr = context.nodes[0].fabric_address;
  context.master_port = ChooseMasterPort(context.nodes[0].node_id, group.application());
  if (context.master_port == 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no free master port in ", config_.master_port_first, "-",
                     config_.master_port_last, " on ", context.nodes[0].name));
  }
  ASSIGN_OR_RETURN(engine::GroupPlan plan, engine::PlanGroup(recipe, overrides, context));
  if (plan.ranks.size() != static_cast<size_t>(group.ranks_size())) {
    return absl::FailedPreconditionError(absl::StrCat("the recipe now plans ", plan.ranks.size(),
                                                      " ranks, not ", group.ranks_size()));
  }
  return plan;
}

void GroupManager::StartNextGeneration(const std::string& name, uint64_t generation) {
  v1::StoredGroup next;
  std::vector<std::string> moved;  // "rank 1 node-2 -> node-3"
  std::string revised;             // set when the new generation runs a newly applied recipe
  {
    absl::MutexLock lock(&mu_);
    auto p = pending_.find(name);
    auto it = groups_.find(name);
    if (p == pending_.end() || p->second.generation != generation || it == groups_.end() ||
        it->second.group().generation() != generation ||
        it->second.group().state() != v1::GROUP_STATE_STARTING) {
      return;
    }
    pending_.erase(p);
    watches_.erase(name);
    v1::StoredGroup& stored = it->second;
    // Ranks on a Lost node move to free nodes; the others stay where placement keeps them.
    if (std::any_of(stored.group().ranks().begin(), stored.group().ranks().end(),
                    [&](const v1::GroupRank& r) { return lost_nodes_.contains(r.node_id()); })) {
      absl::StatusOr<std::vector<engine::NodeView>> nodes = ReplacementNodes(stored);
      if (!nodes.ok()) {
        FailGroup(stored, absl::StrCat("generation ", generation + 1,
                                       " cannot be placed again: ", nodes.status().message(),
                                       ". Every rank that answers is stopped; `fleet apply` "
                                       "places it again"));
        HealEvent(stored.group(), "", -1, std::string(nodes.status().message()), "fail");
        return;
      }
      std::map<std::string, std::string> addresses;
      for (const v1::Node& node : registry_->List()) {
        addresses[node.identity().node_id()] = node.address();
      }
      for (v1::GroupRank& rank : *stored.mutable_group()->mutable_ranks()) {
        const engine::NodeView& to = (*nodes)[rank.rank()];
        if (to.node_id == rank.node_id()) continue;
        moved.push_back(absl::StrCat("rank ", rank.rank(), " ", rank.node_name(), " -> ", to.name));
        rank.set_node_id(to.node_id);
        rank.set_node_name(to.name);
        rank.set_node_address(addresses[to.node_id]);
      }
    }
    // Rendered again for the new generation: adapters put the generation into the ranks'
    // arguments and environment too (FLEET_GENERATION).
    engine::Recipe recipe;
    absl::StatusOr<engine::GroupPlan> plan = Replan(stored, generation + 1, &recipe);
    if (!plan.ok()) {
      FailGroup(stored, absl::StrCat("generation ", generation + 1,
                                     " cannot be planned: ", plan.status().message(),
                                     ". Every rank is stopped; `fleet apply` places it again"));
      HealEvent(stored.group(), "", -1, std::string(plan.status().message()), "fail");
      return;
    }
    // The old generation's rendezvous scope ends here; Persist opens the new one.
    if (!stored.rendezvous_token().empty()) rendezvous_->Close(name, generation);
    v1::Group& group = *stored.mutable_group();
    const absl::Time now = clock_->Now();
    group.set_generation(generation + 1);
    group.set_message(absl::StrCat("generation ", generation + 1, ": ordering ranks to start"));
    *group.mutable_started_at() = ToProtoTime(now);
    *group.mutable_updated_at() = ToProtoTime(now);
    group.clear_ready_at();
    group.clear_launch_checks();
    if (!stored.rendezvous_token().empty()) {
      stored.set_rendezvous_token(pki::HexEncode(pki::RandomBytes(32)));
    }
    group.set_endpoint(plan->endpoint);
    // A recipe applied over running replicas waits in the stored group for its turn in the
    // roll (Apply's "rolling"): the generation that starts now runs it.
    const std::string fingerprint =
        RecipeFingerprint(group.application(), stored.recipe_yaml(), stored.overrides());
    if (fingerprint != group.fingerprint()) {
      SetRecipeFields(recipe, fingerprint, *plan, group);
      revised =
          absl::StrCat("rolled to the applied recipe (revision ", fingerprint.substr(0, 12), ")");
    }
    for (v1::GroupRank& rank : *group.mutable_ranks()) {
      *rank.mutable_spec() = plan->ranks[rank.rank()];
      if (!stored.rendezvous_token().empty()) {
        // The view holds a stand-in; StartRanks puts the token into the orders it sends.
        v1::EnvVar& token = *rank.mutable_spec()->add_env();
        token.set_name(kRendezvousTokenEnv);
        token.set_value(kRendezvousTokenShown);
      }
      rank.clear_status();
    }
    Persist(stored);
    next = stored;
  }
  HealEvent(next.group(), "", -1,
            !moved.empty()     ? absl::StrCat("re-placed: ", absl::StrJoin(moved, ", "))
            : !revised.empty() ? revised
                               : "restart",
            absl::StrCat("started generation ", generation + 1));
  if (absl::Status st = StartRanks(next); !st.ok()) {
    absl::MutexLock lock(&mu_);
    auto it = groups_.find(name);
    if (it == groups_.end() || it->second.group().generation() != generation + 1) return;
    FailGroup(it->second, std::string(st.message()));
    HealEvent(it->second.group(), "", -1, std::string(st.message()), "fail");
  }
}

std::optional<GroupManager::HealCause> GroupManager::LostNodeCause(const v1::StoredGroup& stored) {
  const v1::Group& group = stored.group();
  auto lost = std::find_if(group.ranks().begin(), group.ranks().end(), [&](const v1::GroupRank& r) {
    return lost_nodes_.contains(r.node_id());
  });
  if (lost == group.ranks().end()) return std::nullopt;
  absl::StatusOr<engine::Recipe> recipe =
      engine::ParseRecipe(group.recipe_path(), stored.recipe_yaml());
  if (!recipe.ok() || !recipe->restart.always || !ReplacementNodes(stored).ok()) {
    return std::nullopt;
  }
  return HealCause{.reason = absl::StrCat("node ", lost->node_name(), " (rank ", lost->rank(),
                                          ") is Lost; placing the group again"),
                   .node = lost->node_name(),
                   .rank = static_cast<int>(lost->rank()),
                   .replace_lost = true};
}

void GroupManager::TickHealing(absl::Time now) {
  for (auto& [name, pending] : pending_) {
    if (pending.start_posted || !pending.due.has_value() || *pending.due > now) continue;
    auto it = groups_.find(name);
    if (it == groups_.end()) continue;
    pending.start_posted = true;
    serial_.Post(it->second.group().application(),
                 [this, name = name, generation = pending.generation] {
                   StartNextGeneration(name, generation);
                 });
  }
  if (now >= next_prune_) {
    next_prune_ = now + absl::Minutes(10);
    if (absl::Status st = store_->PruneGroupEvents(now - config_.events_kept_for); !st.ok()) {
      Log(LogLevel::kWarning, "groups", "events not pruned", {{"error", st.ToString()}});
    }
  }
  for (auto& [name, stored] : groups_) {
    const v1::Group& group = stored.group();
    if ((group.state() != v1::GROUP_STATE_READY && group.state() != v1::GROUP_STATE_STARTING) ||
        pending_.count(name)) {
      continue;
    }
    LogWatch& watch = watches_[name];
    if (watch.generation != group.generation() || watch.counters.empty()) {
      absl::StatusOr<engine::Recipe> recipe =
          engine::ParseRecipe(group.recipe_path(), stored.recipe_yaml());
      if (!recipe.ok()) continue;
      watch = LogWatch{.generation = group.generation(),
                       .offsets = std::vector<uint64_t>(group.ranks_size(), 0),
                       .counters = {},
                       .busy = false,
                       .next_scan = now};
      // One count per rank: vLLM's wedge warning shows on several ranks at once, and three of
      // them in a minute are one wedge seen three times, not three minutes of it.
      for (int k = 0; k < group.ranks_size(); ++k) {
        watch.counters.push_back(
            std::make_shared<engine::SignatureCounter>(engine::EffectiveSignatures(*recipe)));
      }
    }
    if (watch.busy || now < watch.next_scan) continue;
    watch.busy = true;
    watch.next_scan = now + config_.log_scan_period;
    executor_->Post([this, snapshot = group] { ScanLogs(snapshot); });
  }
}

void GroupManager::ScanLogs(const v1::Group& group) {
  std::vector<uint64_t> offsets;
  std::vector<std::shared_ptr<engine::SignatureCounter>> counters;
  {
    absl::MutexLock lock(&mu_);
    auto w = watches_.find(group.name());
    if (w == watches_.end() || w->second.generation != group.generation()) return;
    offsets = w->second.offsets;
    counters = w->second.counters;
  }
  std::optional<engine::SignatureMatch> fired;
  const v1::GroupRank* where = nullptr;
  for (const v1::GroupRank& rank : group.ranks()) {
    if (rank.rank() >= offsets.size() || rank.rank() >= counters.size()) break;
    // Until its agent answered this generation's start, a node still holds the previous
    // generation's output under this rank.
    if (rank.status().generation() != group.generation()) continue;
    v1::ReadShardLogRequest read;
    read.set_group(group.name());
    read.set_rank(rank.rank());
    read.set_offset(offsets[rank.rank()]);
    absl::StatusOr<v1::ReadShardLogResponse> log =
        agents_->ReadShardLog(rank.node_address(), rank.node_id(), read, config_.log_call_deadline);
    if (!log.ok() || log->next_offset() < offsets[rank.rank()]) continue;
    offsets[rank.rank()] = log->next_offset();
    std::optional<engine::SignatureMatch> m =
        counters[rank.rank()]->Feed(log->data(), clock_->Now());
    if (m.has_value() && !fired.has_value()) {
      fired = std::move(m);
      where = &rank;
    }
  }
  absl::MutexLock lock(&mu_);
  auto w = watches_.find(group.name());
  if (w == watches_.end() || w->second.generation != group.generation()) return;
  w->second.busy = false;
  w->second.offsets = offsets;
  if (!fired.has_value()) return;
  auto it = groups_.find(group.name());
  if (it == groups_.end() || it->second.group().generation() != group.generation() ||
      (it->second.group().state() != v1::GROUP_STATE_READY &&
       it->second.group().state() != v1::GROUP_STATE_STARTING)) {
    return;
  }
  HealCause cause{.reason = absl::StrCat("rank ", where->rank(), " on ", where->node_name(),
                                         " printed ", Quote(*fired)),
                  .node = where->node_name(),
                  .rank = static_cast<int>(where->rank()),
                  .by_operator = false,
                  .match = std::move(fired)};
  v1::Group& g = *it->second.mutable_group();
  g.set_state(v1::GROUP_STATE_STARTING);
  g.set_message(absl::StrCat(cause.reason, "; stopping every rank"));
  PostHeal(it->second, std::move(cause));
  Persist(it->second);
}

void GroupManager::RestartAsync(std::string name, Done<std::vector<v1::Group>> done) {
  std::string key = SerialKey(name);
  serial_.Post(key, [this, name = std::move(name), done = std::move(done)]() mutable {
    std::move(done)(Restart(name));
  });
}

absl::StatusOr<std::vector<v1::Group>> GroupManager::Restart(absl::string_view name) {
  std::vector<std::pair<std::string, uint64_t>> targets;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& n : NamesOf(name)) {
      v1::StoredGroup& stored = groups_.at(n);
      if (stored.group().state() == v1::GROUP_STATE_STOPPED) {
        return absl::FailedPreconditionError(
            absl::StrCat("group ", n, " is Stopped; `fleet apply` its recipe to run it again"));
      }
      targets.emplace_back(n, stored.group().generation());
      // An operator's restart replaces whatever restart was under way.
      pending_[n] = PendingRestart{.generation = stored.group().generation()};
      stored.mutable_group()->set_state(v1::GROUP_STATE_STARTING);
      stored.mutable_group()->set_message("restart ordered by an operator; stopping every rank");
      stored.clear_unconfirmed_node_ids();
      std::set<std::string> nodes;
      for (const v1::GroupRank& rank : stored.group().ranks()) {
        if (nodes.insert(rank.node_id()).second) stored.add_unconfirmed_node_ids(rank.node_id());
      }
      Persist(stored);
    }
  }
  if (targets.empty()) return Get(name).status();
  std::vector<std::string> failures;
  for (const auto& [n, generation] : targets) {
    // Runs on the application's queue already: heal and start inline, in order.
    Heal(n, generation,
         HealCause{.reason = "restart ordered by an operator",
                   .node = "",
                   .rank = -1,
                   .by_operator = true,
                   .match = std::nullopt});
    bool start = false;
    {
      absl::MutexLock lock(&mu_);
      auto p = pending_.find(n);
      start = p != pending_.end() && p->second.generation == generation;
      if (!start) failures.push_back(absl::StrCat(n, ": ", groups_.at(n).group().message()));
    }
    if (start) StartNextGeneration(n, generation);
  }
  std::vector<v1::Group> out;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [n, generation] : targets) out.push_back(groups_.at(n).group());
  }
  if (!failures.empty()) return absl::UnavailableError(absl::StrJoin(failures, "; "));
  return out;
}

absl::StatusOr<std::vector<v1::GroupEventRecord>> GroupManager::Events(absl::string_view name,
                                                                       int64_t after_id,
                                                                       int limit) const {
  std::vector<std::string> names;
  if (!name.empty()) {
    absl::ReaderMutexLock lock(&mu_);
    names = NamesOf(name);
  }
  if (!name.empty() && names.empty()) return Get(name).status();
  return store_->LoadGroupEvents(names, after_id, limit <= 0 ? 1000 : limit);
}

}  // namespace fleet::controller
