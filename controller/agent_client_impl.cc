// AgentClient over gRPC.
#include "controller/agent_client_impl.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"

namespace fleet::controller {

v1::Agent::Stub* GrpcAgentClient::StubFor(const std::string& address, const std::string& node_id) {
  absl::MutexLock lock(&mu_);
  // Keyed by both: the channel verifies that the agent at `address` holds `node_id`'s
  // certificate, so a node that moves to a reused address gets a channel of its own.
  auto& stub = stubs_[absl::StrCat(node_id, "@", address)];
  if (!stub) {
    stub = v1::Agent::NewStub(
        MakeChannel(address, *transport_, {.server_name = NodeServerName(node_id)}));
  }
  return stub.get();
}

void GrpcAgentClient::Describe(const std::string& address, const std::string& node_id,
                               DescribeCallback done) {
  // Owns everything the call touches until gRPC calls back.
  struct Call {
    grpc::ClientContext context;
    v1::DescribeRequest request;
    v1::DescribeResponse response;
    DescribeCallback done;
  };
  auto* call = new Call;
  call->done = std::move(done);
  call->request.set_node_id(node_id);
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
  StubFor(address, node_id)
      ->async()
      ->Describe(
          &call->context, &call->request, &call->response, [call, address](grpc::Status status) {
            std::unique_ptr<Call> owned(call);
            if (!status.ok()) {
              absl::Status st = FromGrpc(status);
              std::move(owned->done)(absl::Status(
                  st.code(), absl::StrCat("calling the agent at ", address, ": ", st.message())));
              return;
            }
            std::move(owned->done)(std::move(owned->response));
          });
}

}  // namespace fleet::controller
