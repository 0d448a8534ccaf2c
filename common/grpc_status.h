// Conversion between gRPC and Abseil status; the codes share numbering by design.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace fleet {

inline absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

inline grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace fleet
