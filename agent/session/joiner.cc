// Joining a cluster with a join token.
#include "agent/session/joiner.h"

#include "absl/strings/str_cat.h"
#include "agent/session/node_credentials.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"
#include "common/pki.h"
#include "common/status_macros.h"
#include "common/transport.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::agent {
namespace {

absl::Status Wrap(const grpc::Status& st, absl::string_view step, const std::string& controller) {
  absl::Status s = FromGrpc(st);
  return absl::Status(s.code(), absl::StrCat(step, " at ", controller, ": ", s.message()));
}

}  // namespace

absl::Status JoinCluster(const std::string& controller, const JoinToken& token,
                         const v1::NodeIdentity& identity, const std::string& state_dir,
                         absl::Duration deadline) {
  // 1. The CA, unverified; nothing secret is sent on this connection.
  v1::GetClusterInfoResponse info;
  {
    // The server name is not verified here, but sending it spares the controller a failed
    // SNI lookup (and a log line) on every join.
    auto stub = v1::Controller::NewStub(
        MakeChannel(controller, *UnverifiedTls(), {.server_name = kControllerServerName}));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    grpc::Status st = stub->GetClusterInfo(&context, v1::GetClusterInfoRequest(), &info);
    if (!st.ok()) return Wrap(st, "fetching the cluster CA", controller);
  }
  ASSIGN_OR_RETURN(std::string fingerprint, pki::CertificateFingerprint(info.ca_pem()));
  if (fingerprint != absl::StrCat("sha256:", token.ca_sha256)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the controller at ", controller, " presents CA ", fingerprint,
        " but the join token pins sha256:", token.ca_sha256,
        "; the token is for another cluster, or something between us is impersonating the "
        "controller. Nothing was sent"));
  }
  // 2. The join, over TLS verified against the pinned CA.
  ASSIGN_OR_RETURN(std::string key_pem, pki::GeneratePrivateKey());
  ASSIGN_OR_RETURN(std::string csr_pem,
                   pki::CreateCsr(key_pem, NodeCommonName(identity.node_id())));
  v1::JoinRequest request;
  request.set_token_id(token.id);
  request.set_token_secret(token.secret);
  *request.mutable_identity() = identity;
  request.set_csr_pem(csr_pem);
  v1::JoinResponse response;
  {
    auto stub =
        v1::Controller::NewStub(MakeChannel(controller, *ServerAuthenticatedTls(info.ca_pem()),
                                            {.server_name = kControllerServerName}));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    grpc::Status st = stub->Join(&context, request, &response);
    if (!st.ok()) return Wrap(st, "joining", controller);
  }
  return InstallCredentials(state_dir, info.ca_pem(), key_pem, response.certificate_pem());
}

}  // namespace fleet::agent
