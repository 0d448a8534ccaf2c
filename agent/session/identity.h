// The agent's stable node id, made once and kept in its state directory.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "fleet/v1/types.pb.h"

namespace fleet::agent {

// Reads STATE_DIR/node_id, or creates it with a new random id (32 hex digits). `name` is the
// operator-facing name (the hostname when empty). A node_id file that is not 32 hex digits is
// an error naming the file and the fix, never silently replaced: the controller knows the node
// by that id.
absl::StatusOr<v1::NodeIdentity> LoadOrCreateIdentity(const std::string& state_dir,
                                                      const std::string& name);

}  // namespace fleet::agent
