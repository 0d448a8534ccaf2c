// Who is calling: the verified certificate's common name, turned into a role. Every handler
// that acts on a request checks the caller's role first (controller/authz in the services).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class AuthContext;
}

namespace fleet {

struct Peer {
  enum class Role { kNone, kController, kAdmin, kNode };
  Role role = Role::kNone;
  std::string name;  // admin name or node id; empty for the controller and kNone
};

// Reads the verified client certificate's common name from a call's auth context. kNone when
// the caller presented no certificate (only the join bootstrap calls allow that).
Peer PeerFromAuthContext(const grpc::AuthContext& context);

// Parses a common name as issued by the cluster CA: "controller", "admin:NAME", "node:ID".
Peer PeerFromCommonName(absl::string_view common_name);

// Unauthenticated when the caller has no certificate, PermissionDenied when its role is not
// `want` (and, for nodes, when `node_id` is given and differs from the certificate's).
absl::Status RequireRole(const Peer& peer, Peer::Role want, absl::string_view node_id = "");

}  // namespace fleet
