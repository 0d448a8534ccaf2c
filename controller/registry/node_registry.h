// NodeRegistry: every node the controller knows, and its liveness from heartbeats.
// Plain class (no gRPC): the Controller service translates RPCs into these calls.
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "controller/store/store.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::controller {

struct RegistryConfig {
  absl::Duration heartbeat_period = absl::Seconds(1);  // told to agents at registration
  absl::Duration suspect_after = absl::Seconds(3);
  absl::Duration lost_after = absl::Seconds(5);
};

// Checks the config: 0 < period < suspect_after < lost_after.
absl::Status ValidateRegistryConfig(const RegistryConfig& config);

// Example:
//   NodeRegistry registry(config, &clock, &store);
//   RETURN_IF_ERROR(registry.Load());
//   RETURN_IF_ERROR(registry.Register(request));
//   registry.Heartbeat(node_id);   // on every heartbeat
//   registry.Tick();               // a few times a second: Ready -> Suspect -> Lost
class NodeRegistry {
 public:
  NodeRegistry(RegistryConfig config, const Clock* clock, Store* store)
      : config_(config), clock_(clock), store_(store) {}

  // Reads the stored nodes and removed node ids. Each gets a fresh grace period of `lost_after`
  // from now: after a controller restart, agents that are alive keep their state by heartbeating,
  // and only the ones that stay silent become Suspect and Lost.
  absl::Status Load();

  // Adds or updates a node (Ready). Fails with InvalidArgument for a request missing its id,
  // name or address, AlreadyExists when another node that is not Lost holds the name, and
  // PermissionDenied for a removed node.
  absl::Status Register(const v1::RegisterRequest& request);

  // Records a heartbeat; a Suspect or Lost node becomes Ready again. Returns the node's state
  // before this beat (a Lost node that returns has to say what still runs there), or NotFound
  // for a node id the registry does not know (the agent must register again).
  absl::StatusOr<v1::NodeState> Heartbeat(absl::string_view node_id);

  // Moves silent nodes to Suspect and Lost; persists and logs every change.
  void Tick();

  // Forgets the node with this name (or node id) and refuses its certificate from then on
  // (`fleet node remove`). Returns the node id; NotFound when no such node.
  absl::StatusOr<std::string> Remove(absl::string_view name_or_id);
  bool IsRevoked(absl::string_view node_id) const;

  // The result of calling the agent back at its advertised address.
  void SetReachability(absl::string_view node_id, const absl::Status& result);

  std::vector<v1::Node> List() const;
  // The ids of the Lost nodes, without copying any record (the group manager asks a few times
  // a second).
  absl::flat_hash_set<std::string> LostNodeIds() const;
  const RegistryConfig& config() const { return config_; }

 private:
  struct Entry {
    v1::Node node;
    absl::Time last_seen;  // last heartbeat or registration, by the controller's clock
  };
  // Changes state, persists the record and appends an event. Requires mu_.
  void Transition(Entry& entry, v1::NodeState to, absl::string_view why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(const Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RegistryConfig config_;
  const Clock* const clock_;
  Store* const store_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> nodes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> revoked_ ABSL_GUARDED_BY(mu_);
};

// "Ready", "Suspect", "Lost", "Unknown".
absl::string_view NodeStateName(v1::NodeState state);

}  // namespace fleet::controller
