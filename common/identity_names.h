// The names SparkFleet writes into certificates and checks on every call. The certificate's
// common name says who the peer is; its DNS name is what a client verifies when it connects
// (gRPC's target-name override), so addresses may change without re-issuing certificates.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fleet {

inline constexpr char kControllerCommonName[] = "controller";
inline constexpr char kControllerServerName[] = "controller.fleet.internal";
inline constexpr char kAdminCommonNamePrefix[] = "admin:";
inline constexpr char kNodeCommonNamePrefix[] = "node:";

inline std::string NodeCommonName(absl::string_view node_id) {
  return absl::StrCat(kNodeCommonNamePrefix, node_id);
}
inline std::string NodeServerName(absl::string_view node_id) {
  return absl::StrCat(node_id, ".node.fleet.internal");
}
inline std::string AdminCommonName(absl::string_view name) {
  return absl::StrCat(kAdminCommonNamePrefix, name);
}

}  // namespace fleet
