// GroupManager: apply, report, stop and logs of serving groups.
#include "controller/groups/group_manager.h"

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/proto_time.h"
#include "common/status_macros.h"
#include "controller/preflight/preflight.h"
#include "google/protobuf/util/time_util.h"
#include "launch/placement.h"
#include "launch/plan.h"
#include "launch/recipe.h"

namespace fleet::controller {
namespace {

using google::protobuf::util::TimeUtil;

// Groups whose ranks hold their nodes (one group per node: a Spark has one GPU).
// A stale shard's stop that finds its agent unreachable is tried again this often.
constexpr int kStaleStopRetries = 10;
constexpr absl::Duration kStaleStopRetryPause = absl::Milliseconds(500);

bool Active(v1::GroupState state) {
  return state == v1::GROUP_STATE_STARTING || state == v1::GROUP_STATE_READY ||
         state == v1::GROUP_STATE_DEGRADED || state == v1::GROUP_STATE_PENDING;
}

// The group name an apply uses: the one given, else the recipe file's name without its
// directory and extension, lower-cased, with anything but [a-z0-9-] turned into '-'.
absl::StatusOr<std::string> ApplicationName(const v1::ApplyRequest& request) {
  std::string name = request.name();
  if (name.empty()) {
    std::string base = request.recipe_path().substr(request.recipe_path().rfind('/') + 1);
    name = base.substr(0, base.find('.'));
    name = absl::AsciiStrToLower(name);
    for (char& c : name) {
      if (!absl::ascii_isalnum(c) && c != '-') c = '-';
    }
  }
  bool valid = !name.empty() && name.size() <= 48 && absl::ascii_isalnum(name.front()) &&
               std::all_of(name.begin(), name.end(), [](char c) {
                 return (absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-');
               });
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group name \"", name,
        "\" is not usable: use 1 to 48 lower-case letters, digits and '-', starting with a "
        "letter or digit (pass --name NAME)"));
  }
  return name;
}

}  // namespace

absl::string_view GroupStateName(v1::GroupState state) {
  switch (state) {
    case v1::GROUP_STATE_PENDING:
      return "Pending";
    case v1::GROUP_STATE_STARTING:
      return "Starting";
    case v1::GROUP_STATE_READY:
      return "Ready";
    case v1::GROUP_STATE_DEGRADED:
      return "Degraded";
    case v1::GROUP_STATE_FAILED:
      return "Failed";
    case v1::GROUP_STATE_STOPPED:
      return "Stopped";
    default:
      return "Unknown";
  }
}

absl::string_view ShardStateName(v1::ShardState state) {
  switch (state) {
    case v1::SHARD_STATE_STARTING:
      return "Starting";
    case v1::SHARD_STATE_RUNNING:
      return "Running";
    case v1::SHARD_STATE_READY:
      return "Ready";
    case v1::SHARD_STATE_STOPPING:
      return "Stopping";
    case v1::SHARD_STATE_EXITED:
      return "Exited";
    case v1::SHARD_STATE_FAILED:
      return "Failed";
    default:
      return "-";
  }
}

absl::Status GroupManager::Load() {
  ASSIGN_OR_RETURN(std::vector<v1::StoredGroup> stored, store_->LoadGroups());
  absl::MutexLock lock(&mu_);
  for (v1::StoredGroup& g : stored) {
    std::string name = g.group().name();
    SyncRendezvous(g);
    groups_[name] = std::move(g);
  }
  return absl::OkStatus();
}

std::vector<std::string> GroupManager::NamesOf(absl::string_view name) const {
  std::vector<std::string> names;
  for (const auto& [group_name, stored] : groups_) {
    if (group_name == name || stored.group().application() == name) names.push_back(group_name);
  }
  return names;
}

void GroupManager::Event(absl::string_view group, absl::string_view kind,
                         absl::string_view message) {
  Log(LogLevel::kInfo, "groups", kind, {{"group", group}, {"message", message}});
  if (listener_ != nullptr) listener_->OnGroupEvent(group, kind);
  if (absl::Status st = store_->AppendEvent(clock_->Now(), kind, group, message); !st.ok()) {
    Log(LogLevel::kWarning, "groups", "event not stored", {{"error", st.ToString()}});
  }
}

void GroupManager::Persist(const v1::StoredGroup& stored) {
  // Every change of a group's state is persisted: the rendezvous scope follows it from here.
  SyncRendezvous(stored);
  if (absl::Status st = store_->PutGroup(stored); !st.ok()) {
    Log(LogLevel::kError, "groups", "group not stored",
        {{"group", stored.group().name()}, {"error", st.ToString()}});
  }
}

void GroupManager::SyncRendezvous(const v1::StoredGroup& stored) {
  if (stored.rendezvous_token().empty()) return;
  const v1::Group& group = stored.group();
  if (Active(group.state())) {
    rendezvous_->Open(group.name(), group.generation(), stored.rendezvous_token());
  } else {
    rendezvous_->Close(group.name(), group.generation());
  }
}

int GroupManager::ChooseMasterPort(const std::string& head_node_id,
                                   absl::string_view except_application) {
  std::set<int> used;
  for (const auto& [name, stored] : groups_) {
    const v1::Group& g = stored.group();
    if (!Active(g.state()) || g.application() == except_application || g.ranks().empty()) {
      continue;
    }
    if (g.ranks(0).node_id() != head_node_id) continue;
    for (const v1::EnvVar& e : g.ranks(0).spec().env()) {
      if (e.name() == "MASTER_PORT") used.insert(std::atoi(e.value().c_str()));
    }
  }
  for (int port = config_.master_port_first; port <= config_.master_port_last; ++port) {
    if (!used.count(port)) return port;
  }
  return 0;
}

std::string RecipeFingerprint(absl::string_view app, absl::string_view recipe_yaml,
                              const google::protobuf::RepeatedPtrField<std::string>& overrides) {
  return pki::Sha256Hex(absl::StrCat(app, std::string(1, '\0'), recipe_yaml, std::string(1, '\0'),
                                     absl::StrJoin(overrides, "\n")));
}

void SetRecipeFields(const engine::Recipe& recipe, const std::string& fingerprint,
                     const engine::GroupPlan& plan, v1::Group& group) {
  group.set_recipe_name(recipe.name);
  group.set_engine(recipe.engine);
  group.set_endpoint(plan.endpoint);
  group.set_router_port(recipe.router.port.value_or(0));
  group.set_rollout_max_unavailable(static_cast<uint32_t>(recipe.rollout.max_unavailable));
  *group.mutable_rollout_drain_timeout() =
      TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(recipe.rollout.drain_timeout));
  group.set_fingerprint(fingerprint);
  group.set_launch_order(std::string(engine::LaunchOrderName(plan.launch_order)));
  *group.mutable_start_timeout() =
      TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(recipe.health.start_timeout));
  group.clear_notes();
  for (const std::string& note : plan.notes) group.add_notes(note);
}

absl::StatusOr<GroupManager::Prepared> GroupManager::Prepare(const v1::ApplyRequest& request) {
  Prepared p;
  ASSIGN_OR_RETURN(p.recipe, engine::ParseRecipe(request.recipe_path(), request.recipe_yaml()));
  for (const std::string& text : request.overrides()) {
    ASSIGN_OR_RETURN(engine::Override o, engine::ParseOverride(text));
    p.overrides.push_back(std::move(o));
  }
  ASSIGN_OR_RETURN(auto values, engine::EffectiveValues(p.recipe, p.overrides));
  ASSIGN_OR_RETURN(int size, engine::GroupSize(p.recipe, values));
  ASSIGN_OR_RETURN(p.app, ApplicationName(request));
  if (!p.recipe.mods.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        Where(p.recipe, "mods"), "the recipe applies mods (", absl::StrJoin(p.recipe.mods, ", "),
        ") to the container at launch, which SparkFleet does not do: build an image with them "
        "applied, set `container` to it and remove `mods`"));
  }
  p.fingerprint = RecipeFingerprint(p.app, request.recipe_yaml(), request.overrides());
  for (int r = 0; r < p.recipe.replicas; ++r) {
    p.names.push_back(p.recipe.replicas == 1 ? p.app : absl::StrCat(p.app, "-", r));
  }

  // Candidates: Ready, reachable nodes that no other application's active group holds (the
  // nodes of this application's own groups are candidates: a replacement frees them).
  std::vector<engine::NodeView> candidates;
  std::vector<std::string> busy;
  std::vector<std::string> preferred;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const std::string& name : NamesOf(p.app)) p.previous.push_back(groups_.at(name));
    for (const std::string& name : p.names) {
      auto it = groups_.find(name);
      std::string other = it != groups_.end() ? it->second.group().application() : "";
      if (auto r = reserved_names_.find(name); r != reserved_names_.end()) other = r->second;
      if (!other.empty() && other != p.app) {
        return absl::AlreadyExistsError(absl::StrCat("a group named ", name,
                                                     " already exists from another apply (", other,
                                                     "); choose another name with --name"));
      }
    }
    std::map<std::string, std::string> holder;  // node id → group
    for (const auto& [name, stored] : groups_) {
      if (stored.group().application() == p.app) continue;
      // Ranks not confirmed gone may still hold the GPU: vLLM's workers hang when their head
      // dies.
      for (const std::string& node_id : stored.unconfirmed_node_ids()) {
        holder[node_id] = absl::StrCat(name, ", ranks not confirmed gone");
      }
      if (!Active(stored.group().state())) continue;
      for (const v1::GroupRank& rank : stored.group().ranks()) holder[rank.node_id()] = name;
    }
    for (const auto& [node_id, app] : reserved_nodes_) {
      if (app != p.app) holder[node_id] = absl::StrCat(app, ", being applied");
    }
    for (const v1::StoredGroup& g : p.previous) {
      for (const v1::GroupRank& rank : g.group().ranks()) preferred.push_back(rank.node_name());
    }
    for (const v1::Node& node : registry_->List()) {
      if (node.state() != v1::NODE_STATE_READY || !node.reachable()) continue;
      auto h = holder.find(node.identity().node_id());
      if (h != holder.end()) {
        busy.push_back(absl::StrCat(node.identity().name(), " (", h->second, ")"));
        continue;
      }
      p.addresses[node.identity().node_id()] = node.address();
      candidates.push_back(ToNodeView(node));
    }
  }
  ASSIGN_OR_RETURN(auto placed, PlaceReplicas(p.recipe, size, candidates, preferred, busy));
  for (size_t r = 0; r < p.names.size(); ++r) {
    const std::vector<engine::NodeView>& nodes = placed[r];
    engine::GroupContext context;
    uint64_t generation = 0;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = groups_.find(p.names[r]);
      if (it != groups_.end()) generation = it->second.group().generation();
      context.master_port = ChooseMasterPort(nodes[0].node_id, p.app);
    }
    if (context.master_port == 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("no free master port in ", config_.master_port_first, "-",
                       config_.master_port_last, " on ", nodes[0].name, "; stop a group there"));
    }
    context.group = p.names[r];
    context.generation = generation + 1;
    context.master_addr = nodes[0].fabric_address;
    context.nodes = nodes;
    ASSIGN_OR_RETURN(engine::GroupPlan plan, engine::PlanGroup(p.recipe, p.overrides, context));
    p.nodes.push_back(nodes);
    p.plans.push_back(std::move(plan));
  }
  return p;
}

std::vector<CheckRow> GroupManager::Judge(const Prepared& p,
                                          std::vector<std::string>* nccl_by_rank) {
  std::vector<CheckRow> out;
  for (size_t r = 0; r < p.plans.size(); ++r) {
    const std::vector<engine::NodeView>& nodes = p.nodes[r];
    std::vector<PreflightNode> judged(nodes.size());
    // Every node at once: a first model hash can take minutes.
    std::vector<std::thread> threads;
    for (size_t k = 0; k < nodes.size(); ++k) {
      threads.emplace_back([&, k] {
        const v1::ShardSpec& spec = p.plans[r].ranks[k];
        v1::ProbeRequest request;
        for (const v1::EnvVar& e : spec.env()) {
          if (e.name() == "LD_PRELOAD" || e.name() == "LD_LIBRARY_PATH")
            *request.add_shard_env() = e;
        }
        request.set_runtime(spec.runtime());
        request.set_image(spec.image());
        if (!p.recipe.model.empty()) {
          request.add_model_paths(p.recipe.model);
          request.set_hash_models(true);
        }
        judged[k].view = nodes[k];
        judged[k].spec = spec;
        absl::StatusOr<v1::NodeProbe> probe = agents_->Probe(
            p.addresses.at(nodes[k].node_id), nodes[k].node_id, request, config_.probe_deadline);
        if (probe.ok()) {
          judged[k].probe = *std::move(probe);
        } else {
          judged[k].probe.add_unavailable(
              absl::StrCat("probe: the agent did not answer: ", probe.status().message()));
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (const PreflightNode& n : judged) {
      if (nccl_by_rank != nullptr) nccl_by_rank->push_back(n.probe.nccl().version());
    }
    std::vector<CheckRow> rows = RunPreflight(p.recipe, judged);
    out.insert(out.end(), rows.begin(), rows.end());
  }
  if (listener_ != nullptr) listener_->OnPreflight(out);
  return out;
}

namespace {

v1::PreflightRow ToRow(const CheckRow& row) {
  v1::PreflightRow o;
  o.set_node(row.node);
  o.set_check(row.check);
  o.set_verdict(std::string(VerdictName(row.verdict)));
  o.set_observed(row.observed);
  o.set_expected(row.expected);
  o.set_fix(row.fix);
  return o;
}

// "spark-2 mtu: 1500, expected 9000: set mtu: 9000 ..." for each failure.
std::string Failures(const std::vector<CheckRow>& rows) {
  std::vector<std::string> lines;
  for (const CheckRow& r : rows) {
    if (r.verdict != Verdict::kFail) continue;
    lines.push_back(absl::StrCat(r.node, " ", r.check, ": ", r.observed, ", expected ", r.expected,
                                 r.fix.empty() ? "" : ": ", r.fix));
  }
  return absl::StrJoin(lines, "; ");
}

}  // namespace

absl::StatusOr<v1::PreflightResponse> GroupManager::Preflight(const v1::ApplyRequest& request) {
  ASSIGN_OR_RETURN(Prepared p, Prepare(request));
  v1::PreflightResponse response;
  std::vector<CheckRow> rows = Judge(p, nullptr);
  if (request.force()) Downgrade(&rows);
  response.set_failed(AnyFailure(rows));
  for (const CheckRow& r : rows) *response.add_rows() = ToRow(r);
  return response;
}

std::string GroupManager::SerialKey(absl::string_view name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = groups_.find(name);
  return it == groups_.end() ? std::string(name) : it->second.group().application();
}

void GroupManager::ApplyAsync(v1::ApplyRequest request, Done<v1::ApplyResponse> done) {
  // A name that is not usable fails in Apply, under a key of its own.
  absl::StatusOr<std::string> app = ApplicationName(request);
  serial_.Post(app.ok() ? *app : request.name(),
               [this, request = std::move(request), done = std::move(done)]() mutable {
                 std::move(done)(Apply(request));
               });
}

void GroupManager::StopAsync(std::string name, Done<std::vector<v1::Group>> done) {
  std::string key = SerialKey(name);
  serial_.Post(key, [this, name = std::move(name), done = std::move(done)]() mutable {
    std::move(done)(Stop(name));
  });
}

absl::StatusOr<GroupManager::Prepared> GroupManager::PrepareAndReserve(
    const v1::ApplyRequest& request) {
  absl::MutexLock placing(&placement_mu_);
  ASSIGN_OR_RETURN(Prepared p, Prepare(request));
  absl::MutexLock lock(&mu_);
  for (const std::vector<engine::NodeView>& nodes : p.nodes) {
    for (const engine::NodeView& node : nodes) reserved_nodes_[node.node_id] = p.app;
  }
  for (const std::string& name : p.names) reserved_names_[name] = p.app;
  return p;
}

void GroupManager::Unreserve(const std::string& app) {
  absl::MutexLock lock(&mu_);
  std::erase_if(reserved_nodes_, [&](const auto& entry) { return entry.second == app; });
  std::erase_if(reserved_names_, [&](const auto& entry) { return entry.second == app; });
}

std::optional<std::string> GroupManager::WhyNotRolled(const Prepared& p) {
  if (p.previous.size() != p.names.size()) {
    return absl::StrCat("the replicas change from ", p.previous.size(), " to ", p.names.size());
  }
  for (size_t r = 0; r < p.names.size(); ++r) {
    auto it = std::find_if(p.previous.begin(), p.previous.end(), [&](const v1::StoredGroup& g) {
      return g.group().name() == p.names[r];
    });
    if (it == p.previous.end()) return absl::StrCat("no group ", p.names[r], " runs yet");
    const v1::Group& running = it->group();
    if (running.state() != v1::GROUP_STATE_READY) {
      return absl::StrCat(running.name(), " is ", GroupStateName(running.state()), ", not Ready");
    }
    if (running.endpoint().empty()) {
      return absl::StrCat(running.name(), " serves no endpoint, so it has no router to drain");
    }
    std::vector<std::string> now, next;
    for (const v1::GroupRank& rank : running.ranks()) now.push_back(rank.node_name());
    for (const engine::NodeView& node : p.nodes[r]) next.push_back(node.name);
    if (now != next) {
      return absl::StrCat(running.name(), " moves from ", absl::StrJoin(now, ","), " to ",
                          absl::StrJoin(next, ","));
    }
  }
  return std::nullopt;
}

absl::StatusOr<v1::ApplyResponse> GroupManager::Apply(const v1::ApplyRequest& request) {
  ASSIGN_OR_RETURN(Prepared p, PrepareAndReserve(request));
  // Once Apply returns, the groups it stored (or none) say which nodes the application holds.
  absl::Cleanup unreserve = [this, app = p.app] { Unreserve(app); };
  const bool same_recipe =
      !p.previous.empty() && p.previous.size() == p.names.size() &&
      std::all_of(p.previous.begin(), p.previous.end(), [&](const v1::StoredGroup& g) {
        return g.group().fingerprint() == p.fingerprint;
      });
  v1::ApplyResponse response;
  if (same_recipe &&
      std::all_of(p.previous.begin(), p.previous.end(),
                  [](const v1::StoredGroup& g) { return Active(g.group().state()); })) {
    response.set_action("unchanged");
    for (const v1::StoredGroup& g : p.previous) *response.add_groups() = g.group();
    return response;
  }
  response.set_action(p.previous.empty() ? "created" : same_recipe ? "restarted" : "replaced");

  // Preflight before anything changes: a failing check leaves the running generation alone.
  std::vector<std::string> nccl_by_rank;
  std::vector<CheckRow> rows = Judge(p, &nccl_by_rank);
  if (AnyFailure(rows)) {
    if (!request.force()) {
      return absl::FailedPreconditionError(
          absl::StrCat("preflight failed, nothing was started: ", Failures(rows),
                       ". `fleet preflight` lists every check; --force launches anyway"));
    }
    Downgrade(&rows);
  }
  for (const CheckRow& r : rows) *response.add_preflight() = ToRow(r);

  // A changed recipe over replicas that serve is rolled behind their router, one replica at a
  // time (controller_service.cc starts the roll once this returns): each waits in its stored
  // group until its restart, whose next generation runs it (StartNextGeneration).
  if (!same_recipe && !p.previous.empty()) {
    if (std::optional<std::string> why_not = WhyNotRolled(p); why_not) {
      response.add_notes(absl::StrCat("replaced, not rolled: ", *why_not));
    } else {
      absl::MutexLock lock(&mu_);
      for (const std::string& name : p.names) {
        v1::StoredGroup& stored = groups_.at(name);
        stored.set_recipe_yaml(request.recipe_yaml());
        *stored.mutable_overrides() = request.overrides();
        stored.mutable_group()->set_recipe_path(request.recipe_path());
        Persist(stored);
        *response.add_groups() = stored.group();
        Event(name, "group-applied",
              absl::StrCat("rolling: revision ", p.fingerprint.substr(0, 12), " replaces ",
                           stored.group().fingerprint().substr(0, 12), " at its turn"));
      }
      response.set_action("rolling");
      return response;
    }
  }

  // The old generation goes first, on every node, so two generations never mix.
  for (const v1::StoredGroup& g : p.previous) {
    if (g.group().state() == v1::GROUP_STATE_STOPPED) continue;
    if (absl::Status st = StopRanks(g.group()); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat("stopping the running generation of ",
                                                  g.group().name(), ": ", st.message()));
    }
    absl::MutexLock lock(&mu_);
    v1::StoredGroup& stored = groups_[g.group().name()];
    stored.mutable_group()->set_state(v1::GROUP_STATE_STOPPED);
    stored.mutable_group()->set_message("replaced by a new apply");
    stored.clear_unconfirmed_node_ids();
    pending_.erase(g.group().name());
    Persist(stored);
  }

  std::vector<v1::StoredGroup> planned;
  size_t rank_base = 0;
  for (size_t r = 0; r < p.names.size(); ++r) {
    const std::vector<engine::NodeView>& nodes = p.nodes[r];
    const engine::GroupPlan& plan = p.plans[r];
    v1::StoredGroup stored;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = groups_.find(p.names[r]);
      if (it != groups_.end()) stored = it->second;
    }
    v1::Group& group = *stored.mutable_group();
    const absl::Time now = clock_->Now();
    if (!group.has_created_at()) *group.mutable_created_at() = ToProtoTime(now);
    group.set_name(p.names[r]);
    group.set_application(p.app);
    group.set_recipe_path(request.recipe_path());
    group.set_generation(plan.generation);
    group.set_state(v1::GROUP_STATE_STARTING);
    group.set_message("ordering ranks to start");
    SetRecipeFields(p.recipe, p.fingerprint, plan, group);
    *group.mutable_started_at() = ToProtoTime(now);
    *group.mutable_updated_at() = ToProtoTime(now);
    group.clear_ready_at();
    group.clear_launch_checks();
    group.clear_expected_nccl();
    // fleet-engine ranks find each other in the controller's rendezvous store, in a scope of
    // this generation that only holders of its token may use: 32 bytes from OpenSSL's CSPRNG.
    stored.set_rendezvous_token(p.recipe.engine == "native" ? pki::HexEncode(pki::RandomBytes(32))
                                                            : std::string());
    group.clear_ranks();
    for (size_t k = 0; k < plan.ranks.size(); ++k) {
      v1::GroupRank& rank = *group.add_ranks();
      rank.set_rank(k);
      rank.set_node_name(nodes[k].name);
      rank.set_node_id(nodes[k].node_id);
      rank.set_node_address(p.addresses.at(nodes[k].node_id));
      *rank.mutable_spec() = plan.ranks[k];
      if (!stored.rendezvous_token().empty()) {
        // The view holds a stand-in; StartRanks puts the token into the orders it sends.
        v1::EnvVar& token = *rank.mutable_spec()->add_env();
        token.set_name(kRendezvousTokenEnv);
        token.set_value(kRendezvousTokenShown);
      }
      group.add_expected_nccl(rank_base + k < nccl_by_rank.size() ? nccl_by_rank[rank_base + k]
                                                                  : "");
    }
    rank_base += plan.ranks.size();
    stored.set_recipe_yaml(request.recipe_yaml());
    stored.mutable_overrides()->CopyFrom(request.overrides());
    {
      absl::MutexLock lock(&mu_);
      groups_[p.names[r]] = stored;
      pending_.erase(p.names[r]);
      Persist(stored);
    }
    Event(p.names[r], "group-applied",
          absl::StrCat(response.action(), ": generation ", plan.generation, " on ",
                       absl::StrJoin(nodes, ", ", [](std::string* out, const engine::NodeView& n) {
                         out->append(n.name);
                       })));
    for (const std::string& note : plan.notes) response.add_notes(note);
    planned.push_back(std::move(stored));
  }

  for (const v1::StoredGroup& stored : planned) {
    if (absl::Status st = StartRanks(stored); !st.ok()) {
      absl::MutexLock lock(&mu_);
      v1::StoredGroup& g = groups_[stored.group().name()];
      g.mutable_group()->set_state(v1::GROUP_STATE_FAILED);
      g.mutable_group()->set_message(std::string(st.message()));
      Persist(g);
      return st;
    }
  }
  absl::ReaderMutexLock lock(&mu_);
  for (const v1::StoredGroup& stored : planned) {
    *response.add_groups() = groups_.at(stored.group().name()).group();
  }
  return response;
}

absl::StatusOr<v1::ProbeNodeResponse> GroupManager::ProbeNode(absl::string_view name,
                                                              const v1::ProbeRequest& request) {
  for (const v1::Node& node : registry_->List()) {
    if (node.identity().name() != name && node.identity().node_id() != name) continue;
    ASSIGN_OR_RETURN(v1::NodeProbe probe, agents_->Probe(node.address(), node.identity().node_id(),
                                                         request, config_.probe_deadline));
    v1::ProbeNodeResponse response;
    response.set_node_name(node.identity().name());
    *response.mutable_probe() = std::move(probe);
    return response;
  }
  return absl::NotFoundError(absl::StrCat("no node named ", name, "; `fleet nodes` lists them"));
}

void GroupManager::CheckLaunch(const v1::Group& group) {
  std::vector<v1::PreflightRow> rows;
  for (const v1::GroupRank& rank : group.ranks()) {
    v1::ReadShardLogRequest read;
    read.set_group(group.name());
    read.set_rank(rank.rank());
    read.set_tail_lines(5000);
    absl::StatusOr<v1::ReadShardLogResponse> log =
        agents_->ReadShardLog(rank.node_address(), rank.node_id(), read, config_.log_call_deadline);
    if (!log.ok()) continue;
    bool rdma = false;
    std::string debug_file;
    for (const v1::EnvVar& e : rank.spec().env()) {
      rdma |= e.name() == "NCCL_IB_HCA";
      if (e.name() == "NCCL_DEBUG_FILE") debug_file = e.value();
    }
    std::string expected = rank.rank() < static_cast<uint32_t>(group.expected_nccl_size())
                               ? group.expected_nccl(rank.rank())
                               : "";
    for (const CheckRow& row :
         CheckEngineLog(rank.node_name(), log->data(), expected, rdma, debug_file)) {
      rows.push_back(ToRow(row));
      if (row.verdict != Verdict::kPass) {
        Event(group.name(), absl::StrCat("launch-check-", VerdictName(row.verdict)),
              absl::StrCat(row.node, " ", row.check, ": ", row.observed, " (expected ",
                           row.expected, ")", row.fix.empty() ? "" : ": ", row.fix));
      }
    }
  }
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(group.name());
  if (it == groups_.end() || it->second.group().generation() != group.generation()) return;
  it->second.mutable_group()->clear_launch_checks();
  for (v1::PreflightRow& r : rows) *it->second.mutable_group()->add_launch_checks() = std::move(r);
  Persist(it->second);
}

absl::Status GroupManager::StartRanks(const v1::StoredGroup& stored) {
  const v1::Group& group = stored.group();
  // Rank 0 first. For head-first engines the workers' agents hold their process until the
  // head's master port accepts (ShardSpec.wait_for_tcp), so every order can go out at once
  // without a fixed sleep between head and workers.
  for (const v1::GroupRank& rank : group.ranks()) {
    v1::StartShardRequest request;
    *request.mutable_spec() = rank.spec();
    if (!stored.rendezvous_token().empty()) {
      for (v1::EnvVar& e : *request.mutable_spec()->mutable_env()) {
        if (e.name() == kRendezvousTokenEnv) e.set_value(stored.rendezvous_token());
      }
    }
    absl::StatusOr<v1::StartShardResponse> r = agents_->StartShard(
        rank.node_address(), rank.node_id(), request, config_.start_call_deadline);
    if (!r.ok()) {
      std::string why = absl::StrCat("rank ", rank.rank(), " on ", rank.node_name(),
                                     " did not start: ", r.status().message());
      Event(group.name(), "rank-refused", why);
      // No half group: the ranks already ordered are stopped again.
      if (absl::Status st = StopRanks(group); !st.ok()) {
        absl::StrAppend(&why, "; stopping the other ranks also failed: ", st.message());
      }
      return absl::Status(r.status().code() == absl::StatusCode::kDeadlineExceeded
                              ? absl::StatusCode::kUnavailable
                              : r.status().code(),
                          why);
    }
    absl::MutexLock lock(&mu_);
    auto it = groups_.find(group.name());
    if (it == groups_.end() || it->second.group().generation() != group.generation()) continue;
    v1::GroupRank& stored_rank = *it->second.mutable_group()->mutable_ranks(rank.rank());
    // A heartbeat may already have brought a newer state than the order's answer.
    if (stored_rank.status().state() == v1::SHARD_STATE_UNSPECIFIED) {
      *stored_rank.mutable_status() = r->status();
    }
  }
  return absl::OkStatus();
}

absl::Status GroupManager::StopRanks(const v1::Group& group, bool skip_lost) {
  std::set<std::string> lost;
  for (const v1::Node& node : registry_->List()) {
    if (node.state() == v1::NODE_STATE_LOST) lost.insert(node.identity().node_id());
  }
  std::vector<std::string> failures;
  std::set<std::string> done;  // one call per node stops every rank of the group there
  for (const v1::GroupRank& rank : group.ranks()) {
    if (!done.insert(rank.node_id()).second) continue;
    if (lost.count(rank.node_id())) {
      if (skip_lost) continue;
      failures.push_back(absl::StrCat("rank ", rank.rank(), " on ", rank.node_name(),
                                      ": the node is Lost, so its rank cannot be confirmed "
                                      "stopped (the controller stops it when the node returns)"));
      continue;
    }
    v1::StopShardsRequest request;
    request.set_group(group.name());
    absl::StatusOr<v1::StopShardsResponse> r = agents_->StopShards(
        rank.node_address(), rank.node_id(), request, config_.stop_call_deadline);
    if (!r.ok()) {
      failures.push_back(
          absl::StrCat("rank ", rank.rank(), " on ", rank.node_name(), ": ", r.status().message()));
    }
  }
  if (!failures.empty()) {
    return absl::UnavailableError(absl::StrCat(
        absl::StrJoin(failures, "; "), ". Run `fleet stop ", group.name(),
        "` again once the node answers, or `fleet node remove NODE` for a node that is gone"));
  }
  return absl::OkStatus();
}

void GroupManager::ReportShards(absl::string_view node_id,
                                const google::protobuf::RepeatedPtrField<v1::ShardStatus>& shards) {
  struct StaleShard {
    std::string group;
    uint64_t generation;
  };
  std::vector<StaleShard> stale;
  std::string address;
  {
    absl::MutexLock lock(&mu_);
    for (const v1::ShardStatus& status : shards) {
      auto it = groups_.find(status.group());
      if (it == groups_.end()) continue;  // not ours to judge: maybe another controller's
      v1::StoredGroup& stored = it->second;
      v1::Group& group = *stored.mutable_group();
      const bool ended =
          status.state() == v1::SHARD_STATE_EXITED || status.state() == v1::SHARD_STATE_FAILED;
      bool ours = status.generation() == group.generation() &&
                  status.rank() < static_cast<uint32_t>(group.ranks_size()) &&
                  group.ranks(status.rank()).node_id() == node_id;
      if (!ours || group.state() == v1::GROUP_STATE_STOPPED) {
        if (status.generation() <= group.generation() && !ended) {
          stale.push_back({status.group(), status.generation()});
        }
        continue;
      }
      v1::GroupRank& rank = *group.mutable_ranks(status.rank());
      address = rank.node_address();
      if (rank.status().SerializeAsString() == status.SerializeAsString()) continue;
      const v1::ShardState before = rank.status().state();
      *rank.mutable_status() = status;
      *group.mutable_updated_at() = ToProtoTime(clock_->Now());
      if (before != status.state()) {
        std::string message = absl::StrCat("rank ", status.rank(), " on ", rank.node_name(), " ",
                                           ShardStateName(status.state()));
        if (!status.message().empty()) absl::StrAppend(&message, ": ", status.message());
        if (!status.exit().empty()) absl::StrAppend(&message, " (", status.exit(), ")");
        Event(group.name(),
              absl::StrCat("rank-", absl::AsciiStrToLower(ShardStateName(status.state()))),
              message);
        if (status.state() == v1::SHARD_STATE_EXITED || status.state() == v1::SHARD_STATE_FAILED) {
          // What SparkFleet does about it follows as its own event (group_healing.cc).
          HealEvent(group, rank.node_name(), static_cast<int>(status.rank()), message, "-");
        }
        Refresh(stored);
      }
    }
    // A group that no longer holds this node learns here that none of its ranks runs there.
    for (auto& [name, stored] : groups_) {
      auto& ids = *stored.mutable_unconfirmed_node_ids();
      // (An active group keeps unconfirmed only nodes it left: a Lost node it was placed away
      // from, or every node while a restart stops the old generation.)
      if (std::find(ids.begin(), ids.end(), node_id) == ids.end()) continue;
      const bool runs = std::any_of(shards.begin(), shards.end(), [&](const v1::ShardStatus& s) {
        return s.group() == name && s.state() != v1::SHARD_STATE_EXITED &&
               s.state() != v1::SHARD_STATE_FAILED;
      });
      if (runs) continue;
      ids.erase(std::find(ids.begin(), ids.end(), node_id));
      Persist(stored);
    }
  }
  for (const StaleShard& s : stale) {
    if (address.empty()) {
      for (const v1::Node& node : registry_->List()) {
        if (node.identity().node_id() == node_id) address = node.address();
      }
    }
    Log(LogLevel::kInfo, "groups", "stopping a shard that should not run",
        {{"group", s.group}, {"generation", absl::StrCat(s.generation)}, {"node", node_id}});
    executor_->Post([this, address, node = std::string(node_id), s] {
      v1::StopShardsRequest request;
      request.set_group(s.group);
      request.set_up_to_generation(s.generation);
      // An agent that just came back registers the moment it serves, and the controller's
      // channel to it may still be backing off from while it was down: a few more tries.
      absl::StatusOr<v1::StopShardsResponse> r =
          agents_->StopShards(address, node, request, config_.stop_call_deadline);
      for (int retry = 0; retry < kStaleStopRetries && absl::IsUnavailable(r.status()); ++retry) {
        absl::SleepFor(kStaleStopRetryPause);
        r = agents_->StopShards(address, node, request, config_.stop_call_deadline);
      }
      if (!r.ok()) {
        Log(LogLevel::kWarning, "groups", "stale shard not stopped",
            {{"group", s.group}, {"node", node}, {"error", r.status().ToString()}});
      }
    });
  }
}

void GroupManager::Refresh(v1::StoredGroup& stored) {
  v1::Group& group = *stored.mutable_group();
  if (group.state() == v1::GROUP_STATE_STOPPED || group.state() == v1::GROUP_STATE_FAILED) {
    return;
  }
  // A restart is under way: Heal and StartNextGeneration say what the group is doing.
  if (auto p = pending_.find(group.name());
      p != pending_.end() && p->second.generation == group.generation()) {
    return;
  }
  v1::GroupState state = v1::GROUP_STATE_READY;
  std::string message;
  for (const v1::GroupRank& rank : group.ranks()) {
    const v1::ShardStatus& s = rank.status();
    if (s.state() == v1::SHARD_STATE_FAILED || s.state() == v1::SHARD_STATE_EXITED) {
      const std::string ended =
          absl::StrCat("rank ", rank.rank(), " on ", rank.node_name(), " ended",
                       s.exit().empty() ? "" : absl::StrCat(" (", s.exit(), ")"),
                       s.message().empty() ? "" : absl::StrCat(": ", s.message()));
      absl::StatusOr<engine::Recipe> recipe =
          engine::ParseRecipe(group.recipe_path(), stored.recipe_yaml());
      const bool restart = recipe.ok() && recipe->restart.always;
      state = restart ? v1::GROUP_STATE_STARTING : v1::GROUP_STATE_FAILED;
      message = restart ? absl::StrCat(ended, "; stopping every rank to restart the group")
                        : absl::StrCat(ended, "; see `fleet logs ", group.name(), " --rank ",
                                       rank.rank(), "`");
      // Stops the survivors, then restarts or keeps the group Failed (group_healing.cc).
      PostHeal(stored, HealCause{.reason = ended,
                                 .node = rank.node_name(),
                                 .rank = static_cast<int>(rank.rank()),
                                 .by_operator = false,
                                 .match = std::nullopt});
      break;
    }
    if (lost_nodes_.count(rank.node_id())) {
      if (state != v1::GROUP_STATE_DEGRADED) {
        message = absl::StrCat("node ", rank.node_name(), " (rank ", rank.rank(), ") is Lost");
      }
      state = v1::GROUP_STATE_DEGRADED;
      continue;
    }
    if (s.state() != v1::SHARD_STATE_READY && state == v1::GROUP_STATE_READY) {
      state = v1::GROUP_STATE_STARTING;
      message = absl::StrCat("rank ", rank.rank(), " on ", rank.node_name(), ": ",
                             s.state() == v1::SHARD_STATE_UNSPECIFIED
                                 ? "ordered, no report yet"
                                 : absl::StrCat(ShardStateName(s.state()),
                                                s.message().empty() ? "" : ": ", s.message()));
    }
  }
  if (state == group.state() && message == group.message()) return;
  const v1::GroupState before = group.state();
  group.set_state(state);
  group.set_message(message);
  const absl::Time now = clock_->Now();
  *group.mutable_updated_at() = ToProtoTime(now);
  const bool first_ready = state == v1::GROUP_STATE_READY && !group.has_ready_at();
  if (first_ready) *group.mutable_ready_at() = ToProtoTime(now);
  // The engine's own word on NCCL (its version banner, IB or socket transport) is in its log
  // once it runs; vLLM and fleet-engine print it, an exec command need not.
  if (first_ready && (group.engine() == "vllm" || group.engine() == "native")) {
    executor_->Post([this, snapshot = group] { CheckLaunch(snapshot); });
  }
  Persist(stored);
  if (state != before) {
    Event(group.name(), absl::StrCat("group-", absl::AsciiStrToLower(GroupStateName(state))),
          first_ready
              ? absl::StrCat("generation ", group.generation(), " Ready in ",
                             absl::FormatDuration(absl::Trunc(
                                 now - FromProtoTime(group.started_at()), absl::Milliseconds(1))),
                             group.endpoint().empty() ? "" : absl::StrCat(" at ", group.endpoint()))
          : state == v1::GROUP_STATE_READY ? "every rank Ready again"
                                           : message);
  }
}

absl::StatusOr<std::vector<engine::NodeView>> GroupManager::ReplacementNodes(
    const v1::StoredGroup& stored) {
  const v1::Group& group = stored.group();
  ASSIGN_OR_RETURN(engine::Recipe recipe,
                   engine::ParseRecipe(group.recipe_path(), stored.recipe_yaml()));
  recipe.replicas = 1;  // this one group
  // As Apply's candidates: Ready, reachable, not Lost, not held by another group (replicas of
  // the same application included) and not reserved by an apply in progress.
  std::map<std::string, std::string> holder;
  for (const auto& [name, other] : groups_) {
    if (name == group.name()) continue;
    for (const std::string& node_id : other.unconfirmed_node_ids()) {
      holder[node_id] = absl::StrCat(name, ", ranks not confirmed gone");
    }
    if (!Active(other.group().state())) continue;
    for (const v1::GroupRank& rank : other.group().ranks()) holder[rank.node_id()] = name;
  }
  for (const auto& [node_id, app] : reserved_nodes_) {
    if (app != group.application()) holder[node_id] = absl::StrCat(app, ", being applied");
  }
  std::vector<std::string> preferred;
  for (const v1::GroupRank& rank : group.ranks()) {
    if (!lost_nodes_.contains(rank.node_id())) preferred.push_back(rank.node_name());
  }
  std::vector<engine::NodeView> candidates;
  std::vector<std::string> busy;
  for (const v1::Node& node : registry_->List()) {
    if (node.state() != v1::NODE_STATE_READY || !node.reachable() ||
        lost_nodes_.contains(node.identity().node_id())) {
      continue;
    }
    auto h = holder.find(node.identity().node_id());
    if (h != holder.end()) {
      busy.push_back(absl::StrCat(node.identity().name(), " (", h->second, ")"));
      continue;
    }
    candidates.push_back(ToNodeView(node));
  }
  ASSIGN_OR_RETURN(auto placed,
                   PlaceReplicas(recipe, group.ranks_size(), candidates, preferred, busy));
  return placed.front();
}

void GroupManager::Tick() {
  absl::flat_hash_set<std::string> lost = registry_->LostNodeIds();
  absl::MutexLock lock(&mu_);
  lost_nodes_ = std::move(lost);
  const absl::Time now = clock_->Now();
  TickHealing(now);
  for (auto& [name, stored] : groups_) {
    v1::Group& group = *stored.mutable_group();
    if (!Active(group.state()) || pending_.count(name)) continue;
    if (std::optional<HealCause> cause = LostNodeCause(stored)) {
      PostHeal(stored, *std::move(cause));
      continue;
    }
    absl::Duration timeout =
        absl::Nanoseconds(TimeUtil::DurationToNanoseconds(group.start_timeout()));
    if (group.state() == v1::GROUP_STATE_STARTING && timeout > absl::ZeroDuration() &&
        now - FromProtoTime(group.started_at()) > timeout) {
      group.set_state(v1::GROUP_STATE_FAILED);
      group.set_message(
          absl::StrCat("not Ready ", absl::FormatDuration(timeout),
                       " after the start orders (health.start_timeout); last: ", group.message()));
      *group.mutable_updated_at() = ToProtoTime(now);
      // The ranks that did start are stopped (group_healing.cc); the group stays Failed.
      PostHeal(stored, HealCause{.reason = "not Ready within health.start_timeout"});
      Persist(stored);
      Event(name, "group-failed", group.message());
      continue;
    }
    Refresh(stored);
  }
}

std::vector<v1::Group> GroupManager::List() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<v1::Group> out;
  for (const auto& [name, stored] : groups_) out.push_back(stored.group());
  return out;
}

absl::StatusOr<v1::GetGroupResponse> GroupManager::Get(absl::string_view name) const {
  v1::GetGroupResponse response;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = groups_.find(name);
    if (it == groups_.end()) {
      std::vector<std::string> names;
      for (const auto& [n, g] : groups_) names.push_back(n);
      return absl::NotFoundError(absl::StrCat("no group named ", name, "; groups: ",
                                              names.empty() ? "none" : absl::StrJoin(names, ", "),
                                              " (`fleet get groups`)"));
    }
    *response.mutable_group() = it->second.group();
  }
  ASSIGN_OR_RETURN(std::vector<StoredEvent> events,
                   store_->LoadEvents(name, config_.events_kept_in_describe));
  for (const StoredEvent& e : events) {
    v1::GroupEvent& out = *response.add_events();
    *out.mutable_at() = ToProtoTime(e.at);
    out.set_kind(e.kind);
    out.set_message(e.message);
  }
  *response.mutable_now() = ToProtoTime(clock_->Now());
  return response;
}

absl::StatusOr<std::vector<v1::Group>> GroupManager::Stop(absl::string_view name) {
  std::vector<v1::Group> groups;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const std::string& n : NamesOf(name)) groups.push_back(groups_.at(n).group());
  }
  if (groups.empty()) return Get(name).status();
  std::vector<std::string> failures;
  for (v1::Group& group : groups) {
    if (absl::Status st = StopRanks(group); !st.ok()) {
      failures.push_back(absl::StrCat(group.name(), ": ", st.message()));
      continue;
    }
    absl::MutexLock lock(&mu_);
    v1::StoredGroup& stored = groups_[group.name()];
    v1::Group& g = *stored.mutable_group();
    g.set_state(v1::GROUP_STATE_STOPPED);
    g.set_message("stopped by an operator");
    stored.clear_unconfirmed_node_ids();
    pending_.erase(group.name());
    watches_.erase(group.name());
    *g.mutable_updated_at() = ToProtoTime(clock_->Now());
    for (v1::GroupRank& rank : *g.mutable_ranks()) {
      rank.mutable_status()->set_state(v1::SHARD_STATE_EXITED);
      rank.mutable_status()->set_message("stopped");
    }
    Persist(stored);
    group = g;
    Event(group.name(), "group-stopped",
          absl::StrCat("generation ", group.generation(), ": every rank confirmed gone"));
  }
  if (!failures.empty()) return absl::UnavailableError(absl::StrJoin(failures, "; "));
  return groups;
}

absl::StatusOr<v1::GroupLogsResponse> GroupManager::Logs(const v1::GroupLogsRequest& request) {
  v1::GroupRank rank;
  uint64_t generation = 0;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = groups_.find(request.name());
    if (it == groups_.end()) return Get(request.name()).status();
    const v1::Group& group = it->second.group();
    if (request.rank() >= static_cast<uint32_t>(group.ranks_size())) {
      return absl::InvalidArgumentError(absl::StrCat("group ", group.name(), " has ranks 0 to ",
                                                     group.ranks_size() - 1, ", not ",
                                                     request.rank()));
    }
    rank = group.ranks(request.rank());
    generation = group.generation();
  }
  v1::ReadShardLogRequest read;
  read.set_group(request.name());
  read.set_rank(request.rank());
  if (request.has_offset()) read.set_offset(request.offset());
  read.set_tail_lines(request.tail_lines());
  read.set_max_bytes(request.max_bytes());
  ASSIGN_OR_RETURN(
      v1::ReadShardLogResponse r,
      agents_->ReadShardLog(rank.node_address(), rank.node_id(), read, config_.log_call_deadline));
  v1::GroupLogsResponse response;
  response.set_data(r.data());
  response.set_start_offset(r.start_offset());
  response.set_next_offset(r.next_offset());
  response.set_truncated(r.truncated());
  response.set_node_name(rank.node_name());
  response.set_generation(generation);
  return response;
}

}  // namespace fleet::controller
