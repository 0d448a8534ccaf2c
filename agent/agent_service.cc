// The Agent gRPC service.
#include "agent/agent_service.h"

#include "absl/strings/str_cat.h"
#include "agent/probes/node_facts.h"
#include "common/grpc_status.h"
#include "common/peer.h"
#include "common/version.h"

namespace fleet::agent {

grpc::ServerUnaryReactor* AgentService::Describe(grpc::CallbackServerContext* context,
                                                 const v1::DescribeRequest* request,
                                                 v1::DescribeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Only the controller may ask anything of an agent.
  if (absl::Status st =
          RequireRole(PeerFromAuthContext(*context->auth_context()), Peer::Role::kController);
      !st.ok()) {
    reactor->Finish(ToGrpc(st));
    return reactor;
  }
  if (!request->node_id().empty() && request->node_id() != identity_.node_id()) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("this address is node ", identity_.name(), " (", identity_.node_id(),
                     "), not ", request->node_id(), "; check the agents' --advertise addresses")));
    return reactor;
  }
  *response->mutable_identity() = identity_;
  response->set_agent_version(kVersion);
  *response->mutable_facts() = ReadNodeFacts(root_);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace fleet::agent
