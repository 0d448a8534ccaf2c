// The node facts an agent reports at registration: hostname, CPUs, memory, OS, kernel,
// network interfaces. Read from a root directory (default "/") so tests can point the same
// code at a recorded tree; a fact that cannot be read is named in `unavailable`, never guessed.
#pragma once

#include <string>

#include "fleet/v1/types.pb.h"

namespace fleet::agent {

// Example: v1::NodeFacts facts = ReadNodeFacts("/");
// Interface addresses come from getifaddrs(3) and so only for root "/" (a recorded tree has
// none to offer); under another root they are listed as unavailable.
v1::NodeFacts ReadNodeFacts(const std::string& root);

}  // namespace fleet::agent
