// Caller identity from certificates.
#include "common/peer.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/identity_names.h"
#include "grpcpp/security/auth_context.h"

namespace fleet {
namespace {

absl::string_view RoleName(Peer::Role role) {
  switch (role) {
    case Peer::Role::kController:
      return "the controller";
    case Peer::Role::kAdmin:
      return "an admin";
    case Peer::Role::kNode:
      return "a node";
    case Peer::Role::kNone:
      break;
  }
  return "anonymous";
}

}  // namespace

Peer PeerFromCommonName(absl::string_view cn) {
  Peer peer;
  if (cn == kControllerCommonName) {
    peer.role = Peer::Role::kController;
  } else if (absl::StartsWith(cn, kAdminCommonNamePrefix) &&
             cn.size() > sizeof(kAdminCommonNamePrefix) - 1) {
    peer.role = Peer::Role::kAdmin;
    peer.name = std::string(cn.substr(sizeof(kAdminCommonNamePrefix) - 1));
  } else if (absl::StartsWith(cn, kNodeCommonNamePrefix) &&
             cn.size() > sizeof(kNodeCommonNamePrefix) - 1) {
    peer.role = Peer::Role::kNode;
    peer.name = std::string(cn.substr(sizeof(kNodeCommonNamePrefix) - 1));
  }
  return peer;
}

Peer PeerFromAuthContext(const grpc::AuthContext& context) {
  if (!context.IsPeerAuthenticated()) return Peer{};
  std::vector<grpc::string_ref> cns = context.FindPropertyValues("x509_common_name");
  if (cns.size() != 1) return Peer{};
  return PeerFromCommonName(absl::string_view(cns[0].data(), cns[0].size()));
}

absl::Status RequireRole(const Peer& peer, Peer::Role want, absl::string_view node_id) {
  if (peer.role == Peer::Role::kNone) {
    return absl::UnauthenticatedError(absl::StrCat(
        "this call needs a client certificate of ", RoleName(want),
        " issued by the cluster CA; for the CLI, point FLEET_CONFIG at the admin config"));
  }
  if (peer.role != want) {
    return absl::PermissionDeniedError(absl::StrCat("this call is for ", RoleName(want),
                                                    ", and the caller is ", RoleName(peer.role)));
  }
  if (want == Peer::Role::kNode && !node_id.empty() && peer.name != node_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the certificate is node ", peer.name, "'s, but the request speaks for node ", node_id));
  }
  return absl::OkStatus();
}

}  // namespace fleet
