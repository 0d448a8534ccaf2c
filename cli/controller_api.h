// The CLI's calls to the controller, with deadlines and errors that say what to check.
#pragma once

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/config.h"
#include "common/transport.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::cli {

// Unavailable with "cannot reach the controller at ADDR (from SOURCE) ..." when nothing
// answers within `deadline`.
absl::StatusOr<v1::ListNodesResponse> ListNodes(const CliConfig& config,
                                                const TransportCredentials& transport,
                                                absl::Duration deadline);

}  // namespace fleet::cli
