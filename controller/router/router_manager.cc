// One endpoint per applied recipe (router_manager.h).
#include "controller/router/router_manager.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "common/host_port.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "launch/router/router.h"

namespace fleet::controller {
namespace {

// A group's application: its own name for groups applied before applications had names.
std::string ApplicationOf(const v1::Group& group) {
  return group.application().empty() ? group.name() : group.application();
}

// "http://10.0.0.2:8000" → {"10.0.0.2", 8000}.
absl::StatusOr<HostPort> EndpointHostPort(absl::string_view endpoint) {
  absl::ConsumePrefix(&endpoint, "http://");
  return ParseHostPort(endpoint);
}

v1::RouterServerState DesiredState(const v1::Group& group, bool draining) {
  if (group.state() != v1::GROUP_STATE_READY) return v1::ROUTER_SERVER_STATE_MAINT;
  return draining ? v1::ROUTER_SERVER_STATE_DRAIN : v1::ROUTER_SERVER_STATE_READY;
}

}  // namespace

std::vector<v1::Group> RouterManager::GroupsOf(const std::string& application) const {
  std::vector<v1::Group> groups;
  for (v1::Group& group : groups_()) {
    if (ApplicationOf(group) == application) groups.push_back(std::move(group));
  }
  std::sort(groups.begin(), groups.end(),
            [](const v1::Group& a, const v1::Group& b) { return a.name() < b.name(); });
  return groups;
}

std::shared_ptr<RouterManager::Router> RouterManager::RouterOf(
    const std::string& application) const {
  absl::MutexLock lock(&mu_);
  auto it = routers_.find(application);
  return it == routers_.end() ? nullptr : it->second;
}

absl::Status RouterManager::Load() {
  ASSIGN_OR_RETURN(std::vector<StoredRouter> stored, store_->LoadRouters());
  absl::MutexLock lock(&mu_);
  for (StoredRouter& r : stored) {
    auto router = std::make_shared<Router>();
    router->node_id = std::move(r.node_id);
    router->node_name = std::move(r.node_name);
    router->agent_address = std::move(r.agent_address);
    router->host = std::move(r.host);
    router->port = r.port;
    router->generation = r.generation;
    router->left_behind = std::move(r.left_behind);
    routers_[r.application] = std::move(router);
  }
  return absl::OkStatus();
}

void RouterManager::Persist(const std::string& application, const Router& router) {
  absl::Status st = store_->PutRouter({.application = application,
                                       .node_id = router.node_id,
                                       .node_name = router.node_name,
                                       .agent_address = router.agent_address,
                                       .host = router.host,
                                       .port = router.port,
                                       .generation = router.generation,
                                       .left_behind = router.left_behind});
  if (!st.ok()) {
    Log(LogLevel::kWarning, "router", "placement not stored",
        {{"application", application}, {"error", st.message()}});
  }
}

void RouterManager::Tick() {
  std::set<std::string> applications;
  for (const v1::Group& group : groups_()) {
    if (!group.endpoint().empty()) applications.insert(ApplicationOf(group));
  }
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  for (const auto& [name, router] : routers_) applications.insert(name);
  for (const std::string& application : applications) {
    std::shared_ptr<Router>& router = routers_[application];
    if (router == nullptr) router = std::make_shared<Router>();
    if (router->posted || router->rolling) continue;
    router->posted = true;
    executor_->Post([this, application, router] {
      absl::Status st = Reconcile(application);
      if (!st.ok()) {
        Log(LogLevel::kWarning, "router", "reconcile failed",
            {{"application", application}, {"error", st.message()}});
      }
      absl::MutexLock lock(&mu_);
      router->posted = false;
    });
  }
}

uint32_t RouterManager::ChoosePort(const v1::Group& first, const std::string& node_id) const {
  if (first.router_port() != 0) return first.router_port();
  std::set<uint32_t> used;
  for (const auto& [name, other] : routers_) {
    if (other->node_id == node_id && other->port != 0) used.insert(other->port);
  }
  for (uint32_t port = config_.first_port; port <= config_.last_port; ++port) {
    if (!used.contains(port)) return port;
  }
  return 0;
}

absl::Status RouterManager::Reconcile(const std::string& application) {
  std::shared_ptr<Router> router = RouterOf(application);
  if (router == nullptr) {
    absl::MutexLock lock(&mu_);
    router = routers_[application] = std::make_shared<Router>();
  }
  absl::MutexLock reconcile(&router->reconcile_mu);
  return ReconcileLocked(application, *router);
}

absl::Status RouterManager::StartRouter(const std::string& application, Router& router, int slots) {
  v1::StartShardRequest request;
  v1::ShardSpec& spec = *request.mutable_spec();
  std::string agent_address, node_id;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(
        std::string config,
        engine::RenderRouterConfig({.address = router.host, .port = router.port, .slots = slots}));
    // Generations must grow across controller restarts too (the agent refuses an older one):
    // the controller's clock in milliseconds does, and stays above any earlier order of ours.
    router.generation = std::max<uint64_t>(
        router.generation + 1, static_cast<uint64_t>(absl::ToUnixMillis(clock_->Now())));
    router.slots = slots;
    router.shown.clear();
    Persist(application, router);
    spec.set_group(engine::RouterGroupName(application));
    spec.set_generation(router.generation);
    spec.set_rank(0);
    spec.set_world_size(1);
    spec.set_runtime(v1::SHARD_RUNTIME_PROCESS);
    // -db: foreground, no fork, so the agent's pidfd is HAProxy itself.
    for (const char* arg : {config_.haproxy.c_str(), "-db", "-f", engine::kRouterConfigFile}) {
      spec.add_argv(arg);
    }
    v1::ShardFile& file = *spec.add_files();
    file.set_name(engine::kRouterConfigFile);
    file.set_content(config);
    spec.mutable_stop_grace()->set_seconds(1);
    agent_address = router.agent_address;
    node_id = router.node_id;
    router.message = absl::StrCat("router starting on ", router.node_name);
  }
  const std::string port = absl::StrCat(router.port);
  const std::string generation = absl::StrCat(spec.generation());
  Log(LogLevel::kInfo, "router", "start",
      {{"application", application},
       {"node", router.node_name},
       {"port", port},
       {"generation", generation}});
  absl::StatusOr<v1::StartShardResponse> started =
      agents_->StartShard(agent_address, node_id, request, config_.call_deadline);
  if (!started.ok()) {
    absl::MutexLock lock(&mu_);
    router.message = absl::StrCat("router cannot start: ", started.status().message());
    return started.status();
  }
  return absl::OkStatus();
}

void RouterManager::StopLeftBehind(const std::string& application, Router& router) {
  std::map<std::string, std::string> left;
  {
    absl::MutexLock lock(&mu_);
    left = router.left_behind;
  }
  const absl::flat_hash_set<std::string> lost = lost_nodes_();
  for (const auto& [address, node_id] : left) {
    if (lost.contains(node_id)) continue;
    v1::StopShardsRequest stop;
    stop.set_group(engine::RouterGroupName(application));
    absl::Status st = agents_->StopShards(address, node_id, stop, config_.call_deadline).status();
    if (!st.ok()) {
      Log(LogLevel::kWarning, "router", "old router not stopped yet",
          {{"application", application}, {"agent", address}, {"error", st.message()}});
      continue;
    }
    absl::MutexLock lock(&mu_);
    router.left_behind.erase(address);
    Persist(application, router);
  }
}

absl::Status RouterManager::ReconcileLocked(const std::string& application, Router& router) {
  const std::string router_group = engine::RouterGroupName(application);
  std::vector<v1::Group> groups = GroupsOf(application);
  const bool stopped = std::all_of(groups.begin(), groups.end(), [](const v1::Group& g) {
    return g.state() == v1::GROUP_STATE_STOPPED;
  });
  if (groups.empty() || stopped || groups[0].endpoint().empty()) {
    std::string agent_address, node_id;
    {
      absl::MutexLock lock(&mu_);
      agent_address = router.agent_address;
      node_id = router.node_id;
    }
    if (!agent_address.empty()) {
      v1::StopShardsRequest stop;
      stop.set_group(router_group);
      RETURN_IF_ERROR(
          agents_->StopShards(agent_address, node_id, stop, config_.call_deadline).status());
    }
    absl::MutexLock lock(&mu_);
    routers_.erase(application);
    if (absl::Status st = store_->DeleteRouter(application); !st.ok()) {
      Log(LogLevel::kWarning, "router", "placement not deleted",
          {{"application", application}, {"error", st.message()}});
    }
    return absl::OkStatus();
  }
  const absl::flat_hash_set<std::string> lost = lost_nodes_();
  StopLeftBehind(application, router);
  {
    absl::MutexLock lock(&mu_);
    if (!router.agent_address.empty() && lost.contains(router.node_id)) {
      Log(LogLevel::kWarning, "router", "node Lost, moving the router",
          {{"application", application}, {"node", router.node_name}});
      router.left_behind[router.agent_address] = router.node_id;
      router.agent_address.clear();
      router.port = 0;
      router.slots = 0;
      router.shown.clear();
      router.last_start.reset();
      Persist(application, router);
    }
    if (router.agent_address.empty()) {
      // On the first replica whose head is on a node that answers.
      auto first = std::find_if(groups.begin(), groups.end(), [&](const v1::Group& g) {
        return !g.ranks().empty() && !g.endpoint().empty() && !lost.contains(g.ranks(0).node_id());
      });
      if (first == groups.end()) {
        router.message = "no replica's head is on a node that answers; the router waits for one";
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(HostPort head, EndpointHostPort(first->endpoint()));
      router.node_id = first->ranks(0).node_id();
      router.node_name = first->ranks(0).node_name();
      router.agent_address = first->ranks(0).node_address();
      router.left_behind.erase(router.agent_address);  // the new router there supersedes it
      router.host = head.host;
      router.port = ChoosePort(*first, router.node_id);
      if (router.port == 0) {
        router.message =
            absl::StrCat("no free router port from ", config_.first_port, " to ", config_.last_port,
                         " on ", router.node_name, "; set router.port in the recipe");
        return absl::ResourceExhaustedError(router.message);
      }
    }
    router.draining.resize(groups.size(), false);
  }
  const int slots = static_cast<int>(groups.size());
  v1::RouterCommandRequest show;
  show.set_group(router_group);
  show.mutable_show();
  std::string agent_address, node_id;
  int configured_slots = 0;
  {
    absl::MutexLock lock(&mu_);
    agent_address = router.agent_address;
    node_id = router.node_id;
    configured_slots = router.slots;
  }
  absl::StatusOr<v1::RouterCommandResponse> shown =
      agents_->RouterCommand(agent_address, node_id, show, config_.call_deadline);
  // Not running (never started, exited, or the agent restarted without it), or started by a
  // controller before this one with another number of slots: start it (again).
  if (absl::IsFailedPrecondition(shown.status()) ||
      (shown.ok() && shown->servers_size() != slots && configured_slots != slots)) {
    // A router that cannot start (its port taken, haproxy missing) is not started again on
    // every tick: its shard's log says why, the service's message says it does not answer.
    absl::MutexLock lock(&mu_);
    if (router.last_start.has_value() &&
        clock_->Now() - *router.last_start < config_.restart_interval) {
      return absl::OkStatus();
    }
    router.last_start = clock_->Now();
  }
  if (absl::IsFailedPrecondition(shown.status()) ||
      (shown.ok() && shown->servers_size() != slots && configured_slots != slots)) {
    return StartRouter(application, router, slots);
  }
  if (!shown.ok()) {
    absl::MutexLock lock(&mu_);
    router.message = absl::StrCat("router not answering yet: ", shown.status().message());
    return absl::OkStatus();  // starting: the next tick asks again
  }
  v1::RouterCommandRequest set;
  set.set_group(router_group);
  {
    absl::MutexLock lock(&mu_);
    router.slots = slots;
    for (int i = 0; i < slots; ++i) {
      const v1::Group& group = groups[static_cast<size_t>(i)];
      v1::RouterServer want;
      want.set_slot(static_cast<uint32_t>(i + 1));
      want.set_state(DesiredState(group, router.draining[static_cast<size_t>(i)]));
      absl::StatusOr<HostPort> head = EndpointHostPort(group.endpoint());
      if (!head.ok()) want.set_state(v1::ROUTER_SERVER_STATE_MAINT);
      const v1::RouterServer* have = nullptr;
      for (const v1::RouterServer& s : shown->servers()) {
        if (s.slot() == want.slot()) have = &s;
      }
      v1::RouterServer change;
      change.set_slot(want.slot());
      bool changed = false;
      // The address first: a slot is never READY at a stale address.
      if (head.ok() &&
          (have == nullptr || have->host() != head->host || have->port() != head->port)) {
        change.set_host(head->host);
        change.set_port(head->port);
        changed = true;
      }
      if (have == nullptr || have->state() != want.state()) {
        change.set_state(want.state());
        changed = true;
      }
      if (changed) *set.mutable_set_servers()->add_servers() = std::move(change);
    }
  }
  if (set.set_servers().servers_size() > 0) {
    RETURN_IF_ERROR(
        agents_->RouterCommand(agent_address, node_id, set, config_.call_deadline).status());
    ASSIGN_OR_RETURN(shown,
                     agents_->RouterCommand(agent_address, node_id, show, config_.call_deadline));
  }
  absl::MutexLock lock(&mu_);
  router.shown.assign(shown->servers().begin(), shown->servers().end());
  router.message.clear();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Service>> RouterManager::List(const std::string& name) const {
  std::map<std::string, int> replicas;
  for (const v1::Group& group : groups_()) {
    if (group.state() != v1::GROUP_STATE_STOPPED && !group.endpoint().empty()) {
      ++replicas[ApplicationOf(group)];
    }
  }
  std::vector<v1::Service> services;
  absl::MutexLock lock(&mu_);
  for (const auto& [application, router] : routers_) {
    if (!name.empty() && application != name) continue;
    if (router->port == 0) continue;
    v1::Service& service = services.emplace_back();
    service.set_name(application);
    service.set_endpoint(absl::StrCat("http://", JoinHostPort(router->host, router->port)));
    service.set_node_name(router->node_name);
    service.set_replicas_total(static_cast<uint32_t>(replicas[application]));
    uint32_t ready = 0;
    for (const v1::RouterServer& s : router->shown) {
      if (s.state() == v1::ROUTER_SERVER_STATE_READY &&
          s.slot() <= static_cast<uint32_t>(replicas[application])) {
        ++ready;
      }
    }
    service.set_replicas_ready(ready);
    service.set_message(router->message);
  }
  if (!name.empty() && services.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no service named ", name, " (yet): `fleet apply` its recipe, then `fleet get services`"));
  }
  return services;
}

void RouterManager::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
}

void RouterManager::RollAsync(std::string name, Done<v1::RollGroupResponse> done) {
  executor_->Post([this, name = std::move(name), done = std::move(done)]() mutable {
    std::move(done)(Roll(name));
  });
}

absl::StatusOr<v1::RollGroupResponse> RouterManager::Roll(const std::string& name) {
  std::string application = name;
  for (const v1::Group& group : groups_()) {
    if (group.name() == name) application = ApplicationOf(group);
  }
  std::vector<v1::Group> groups = GroupsOf(application);
  if (groups.empty()) {
    return absl::NotFoundError(absl::StrCat("no group or application named ", name));
  }
  RETURN_IF_ERROR(Reconcile(application));
  std::shared_ptr<Router> router = RouterOf(application);
  if (router == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(application,
                     " has no router (its groups serve no endpoint or are stopped); "
                     "`fleet restart` restarts it instead"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (router->rolling) {
      return absl::FailedPreconditionError(absl::StrCat(application, " is rolling already"));
    }
    router->rolling = true;
  }
  RollSettings settings{
      .max_unavailable = static_cast<int>(std::max(groups[0].rollout_max_unavailable(), 1u)),
      .drain_timeout = groups[0].has_rollout_drain_timeout()
                           ? absl::Seconds(groups[0].rollout_drain_timeout().seconds()) +
                                 absl::Nanoseconds(groups[0].rollout_drain_timeout().nanos())
                           : absl::Seconds(60),
  };
  if (groups[0].has_start_timeout()) {
    settings.ready_timeout = absl::Seconds(groups[0].start_timeout().seconds());
  }
  ::fleet::controller::Roll roll(static_cast<int>(groups.size()), settings);
  v1::RollGroupResponse response;
  absl::Status result;
  while (true) {
    // Make the router follow the groups (and the drains) before each observation.
    absl::Status reconciled = Reconcile(application);
    groups = GroupsOf(application);
    std::vector<RollReplica> replicas;
    {
      absl::MutexLock lock(&mu_);
      for (size_t i = 0; i < groups.size(); ++i) {
        RollReplica& r = replicas.emplace_back();
        r.group = groups[i].name();
        r.generation = groups[i].generation();
        r.ready = groups[i].state() == v1::GROUP_STATE_READY;
        for (const v1::RouterServer& s : router->shown) {
          if (s.slot() != i + 1) continue;
          r.in_rotation = reconciled.ok() && s.state() == v1::ROUTER_SERVER_STATE_READY;
          r.requests_running = static_cast<int>(s.current_sessions());
        }
      }
    }
    for (size_t i = 0; i < groups.size(); ++i) {
      absl::StatusOr<int> running = metrics_->RequestsRunning(groups[i].endpoint());
      if (running.ok()) {
        replicas[i].requests_running = std::max(replicas[i].requests_running.value_or(0), *running);
      }
    }
    RollActions actions = roll.Step(clock_->Now(), replicas);
    for (std::string& step : actions.steps) {
      Log(LogLevel::kInfo, "router", "roll", {{"application", application}, {"step", step}});
      response.add_steps(std::move(step));
    }
    {
      absl::MutexLock lock(&mu_);
      router->draining.resize(groups.size(), false);
      for (int i : actions.drain) router->draining[static_cast<size_t>(i)] = true;
      for (int i : actions.put_back) router->draining[static_cast<size_t>(i)] = false;
    }
    if (!actions.drain.empty() || !actions.put_back.empty()) {
      absl::Status st = Reconcile(application);
      if (!st.ok()) {
        Log(LogLevel::kWarning, "router", "reconcile failed",
            {{"application", application}, {"error", st.message()}});
      }
    }
    for (int i : actions.restart) {
      absl::Status st = restart_(groups[static_cast<size_t>(i)].name());
      if (!st.ok()) roll.RestartFailed(i, st);
    }
    if (!actions.failed.ok()) {
      result = actions.failed;
      break;
    }
    if (actions.done) break;
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) {
        result = absl::AbortedError("the controller is shutting down; the roll stopped");
        break;
      }
    }
    sleep_(config_.roll_period);
  }
  {
    absl::MutexLock lock(&mu_);
    router->rolling = false;
    std::fill(router->draining.begin(), router->draining.end(), false);
  }
  RETURN_IF_ERROR(result);
  for (v1::Group& group : GroupsOf(application)) *response.add_groups() = std::move(group);
  return response;
}

}  // namespace fleet::controller
