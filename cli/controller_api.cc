// The CLI's calls to the controller.
#include "cli/controller_api.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::cli {

absl::StatusOr<v1::ListNodesResponse> ListNodes(const CliConfig& config,
                                                const TransportCredentials& transport,
                                                absl::Duration deadline) {
  auto stub = v1::Controller::NewStub(MakeChannel(config.controller, transport));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  v1::ListNodesResponse response;
  grpc::Status st = stub->ListNodes(&context, v1::ListNodesRequest(), &response);
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::UnavailableError(absl::StrCat(
        "cannot reach the controller at ", config.controller, " (from ", config.source,
        "): ", st.error_message(),
        "; check that `fleet controller` runs there, or point --controller / FLEET_CONFIG at it"));
  }
  if (!st.ok()) {
    absl::Status status = FromGrpc(st);
    return absl::Status(status.code(), absl::StrCat("the controller at ", config.controller,
                                                    " answered: ", status.message()));
  }
  return response;
}

}  // namespace fleet::cli
