// NodeRegistry: node records and heartbeat liveness.
#include "controller/registry/node_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/proto_time.h"

namespace fleet::controller {

absl::Status ValidateRegistryConfig(const RegistryConfig& c) {
  if (c.heartbeat_period <= absl::ZeroDuration() || c.suspect_after <= c.heartbeat_period ||
      c.lost_after <= c.suspect_after) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heartbeat timing must satisfy 0 < period < suspect-after < lost-after; got period ",
        absl::FormatDuration(c.heartbeat_period), ", suspect-after ",
        absl::FormatDuration(c.suspect_after), ", lost-after ",
        absl::FormatDuration(c.lost_after)));
  }
  return absl::OkStatus();
}

absl::string_view NodeStateName(v1::NodeState state) {
  switch (state) {
    case v1::NODE_STATE_READY:
      return "Ready";
    case v1::NODE_STATE_SUSPECT:
      return "Suspect";
    case v1::NODE_STATE_LOST:
      return "Lost";
    default:
      return "Unknown";
  }
}

absl::Status NodeRegistry::Load() {
  absl::StatusOr<std::vector<v1::Node>> stored = store_->LoadNodes();
  if (!stored.ok()) return stored.status();
  absl::StatusOr<std::vector<v1::RevokedNode>> revoked = store_->LoadRevokedNodes();
  if (!revoked.ok()) return revoked.status();
  absl::MutexLock lock(&mu_);
  for (const v1::RevokedNode& r : *revoked) revoked_.insert(r.node_id());
  absl::Time now = clock_->Now();
  for (v1::Node& node : *stored) {
    std::string id = node.identity().node_id();
    nodes_[id] = Entry{std::move(node), now};
  }
  Log(LogLevel::kInfo, "registry", "loaded nodes from store",
      {{"count", absl::StrCat(nodes_.size())}});
  return absl::OkStatus();
}

absl::Status NodeRegistry::Register(const v1::RegisterRequest& request) {
  const v1::NodeIdentity& id = request.identity();
  if (id.node_id().empty() || id.name().empty() || request.advertise_address().empty()) {
    return absl::InvalidArgumentError(
        "registration needs a node id, a name and an advertise address; upgrade the agent");
  }
  absl::MutexLock lock(&mu_);
  if (revoked_.contains(id.node_id())) {
    return absl::PermissionDeniedError(
        absl::StrCat("node ", id.node_id(),
                     " was removed from this cluster; to join again, delete the "
                     "agent's state directory and give it a new join token"));
  }
  absl::Time now = clock_->Now();
  for (auto& [other_id, other] : nodes_) {
    if (other_id == id.node_id() || other.node.identity().name() != id.name()) continue;
    if (other.node.state() != v1::NODE_STATE_LOST) {
      return absl::AlreadyExistsError(
          absl::StrCat("node name ", id.name(), " is already used by node ", other_id, " at ",
                       other.node.address(), "; start this agent with a distinct --name"));
    }
    // A Lost node of the same name is this machine with a reset state directory.
    Log(LogLevel::kInfo, "registry", "replacing lost node of the same name",
        {{"node", id.name()}, {"old_id", other_id}, {"new_id", id.node_id()}});
    if (absl::Status st = store_->DeleteNode(other_id); !st.ok()) return st;
    nodes_.erase(other_id);
    break;
  }
  auto [it, inserted] = nodes_.try_emplace(id.node_id());
  Entry& entry = it->second;
  v1::NodeState before = inserted ? v1::NODE_STATE_UNSPECIFIED : entry.node.state();
  *entry.node.mutable_identity() = id;
  entry.node.set_address(request.advertise_address());
  entry.node.set_agent_version(request.agent_version());
  *entry.node.mutable_facts() = request.facts();
  *entry.node.mutable_probe() = request.probe();
  *entry.node.mutable_registered_at() = ToProtoTime(now);
  *entry.node.mutable_last_heartbeat() = ToProtoTime(now);
  entry.node.set_state(v1::NODE_STATE_READY);
  entry.node.set_reachable(false);
  entry.node.set_reach_error("not checked yet");
  entry.last_seen = now;
  if (absl::Status st = store_->PutNode(entry.node); !st.ok()) {
    // The agent retries; the node stays in memory so its heartbeats still count meanwhile.
    return absl::UnavailableError(
        absl::StrCat("controller could not store the node: ", st.message(), "; the agent retries"));
  }
  std::string kind = inserted ? "node-registered" : "node-reregistered";
  Log(LogLevel::kInfo, "registry", kind,
      {{"node", id.name()},
       {"id", id.node_id()},
       {"address", request.advertise_address()},
       {"was", NodeStateName(before)}});
  if (absl::Status st = store_->AppendEvent(now, kind, id.node_id(), request.advertise_address());
      !st.ok()) {
    Log(LogLevel::kWarning, "registry", "event not stored", {{"error", st.message()}});
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::NodeState> NodeRegistry::Heartbeat(absl::string_view node_id) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat("node ", node_id, " is not registered"));
  }
  Entry& entry = it->second;
  absl::Time now = clock_->Now();
  entry.last_seen = now;
  *entry.node.mutable_last_heartbeat() = ToProtoTime(now);
  const v1::NodeState before = entry.node.state();
  if (before != v1::NODE_STATE_READY) Transition(entry, v1::NODE_STATE_READY, "heartbeat received");
  return before;
}

void NodeRegistry::Tick() {
  absl::MutexLock lock(&mu_);
  absl::Time now = clock_->Now();
  for (auto& [id, entry] : nodes_) {
    absl::Duration silent = now - entry.last_seen;
    v1::NodeState want = entry.node.state();
    if (silent >= config_.lost_after) {
      want = v1::NODE_STATE_LOST;
    } else if (silent >= config_.suspect_after && want == v1::NODE_STATE_READY) {
      want = v1::NODE_STATE_SUSPECT;
    }
    if (want != entry.node.state()) {
      Transition(entry, want, absl::StrCat("no heartbeat for ", absl::FormatDuration(silent)));
    }
  }
}

absl::StatusOr<std::string> NodeRegistry::Remove(absl::string_view name_or_id) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(name_or_id);
  if (it == nodes_.end()) {
    it = std::find_if(nodes_.begin(), nodes_.end(), [&](const auto& kv) {
      return kv.second.node.identity().name() == name_or_id;
    });
  }
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat("no node named ", name_or_id, "; see `fleet nodes`"));
  }
  v1::RevokedNode record;
  record.set_node_id(it->first);
  record.set_name(it->second.node.identity().name());
  *record.mutable_revoked_at() = ToProtoTime(clock_->Now());
  // Revoke first: a crash between the two writes leaves a revoked node listed, never a removed
  // node that can still come back.
  if (absl::Status st = store_->PutRevokedNode(record); !st.ok()) return st;
  if (absl::Status st = store_->DeleteNode(it->first); !st.ok()) return st;
  revoked_.insert(it->first);
  std::string id = it->first;
  nodes_.erase(it);
  Log(LogLevel::kInfo, "registry", "node removed and its certificate revoked",
      {{"node", record.name()}, {"id", id}});
  if (absl::Status st = store_->AppendEvent(clock_->Now(), "node-removed", id, record.name());
      !st.ok()) {
    Log(LogLevel::kWarning, "registry", "event not stored", {{"error", st.message()}});
  }
  return id;
}

bool NodeRegistry::IsRevoked(absl::string_view node_id) const {
  absl::MutexLock lock(&mu_);
  return revoked_.contains(node_id);
}

void NodeRegistry::SetReachability(absl::string_view node_id, const absl::Status& result) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  Entry& entry = it->second;
  entry.node.set_reachable(result.ok());
  entry.node.set_reach_error(result.ok() ? "" : std::string(result.message()));
  if (!result.ok()) {
    Log(LogLevel::kWarning, "registry", "agent not reachable at its advertised address",
        {{"node", entry.node.identity().name()},
         {"address", entry.node.address()},
         {"error", result.message()}});
  }
  Persist(entry);
}

std::vector<v1::Node> NodeRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Node> out;
  out.reserve(nodes_.size());
  for (const auto& [id, entry] : nodes_) out.push_back(entry.node);
  return out;
}

absl::flat_hash_set<std::string> NodeRegistry::LostNodeIds() const {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_set<std::string> lost;
  for (const auto& [id, entry] : nodes_) {
    if (entry.node.state() == v1::NODE_STATE_LOST) lost.insert(id);
  }
  return lost;
}

void NodeRegistry::Transition(Entry& entry, v1::NodeState to, absl::string_view why) {
  v1::NodeState from = entry.node.state();
  entry.node.set_state(to);
  Persist(entry);
  LogLevel level = to == v1::NODE_STATE_READY ? LogLevel::kInfo : LogLevel::kWarning;
  Log(level, "registry", "node state changed",
      {{"node", entry.node.identity().name()},
       {"from", NodeStateName(from)},
       {"to", NodeStateName(to)},
       {"reason", why}});
  if (absl::Status st = store_->AppendEvent(clock_->Now(), absl::StrCat("node-", NodeStateName(to)),
                                            entry.node.identity().node_id(), why);
      !st.ok()) {
    Log(LogLevel::kWarning, "registry", "event not stored", {{"error", st.message()}});
  }
}

void NodeRegistry::Persist(const Entry& entry) {
  // A failed write leaves the in-memory view correct; the next change writes the record again.
  if (absl::Status st = store_->PutNode(entry.node); !st.ok()) {
    Log(LogLevel::kError, "registry", "node record not stored",
        {{"node", entry.node.identity().name()}, {"error", st.message()}});
  }
}

}  // namespace fleet::controller
