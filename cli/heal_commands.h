// `fleet restart NAME` and `fleet events [NAME] [-f]`: a coordinated restart of a group, and
// what happened to the groups (rank exits, restarts, failures) with what SparkFleet did.
#pragma once

#include <string>

#include "cli/commands.h"

namespace fleet::cli {

// Every rank stopped and confirmed gone, then a new generation started; prints it.
int RestartGroup(const Globals& g, const std::string& name);
// The events of `name` (every group when empty) as a table (or -o json|yaml); with `follow`,
// keeps printing new ones, one table row or one JSON line each.
int Events(const Globals& g, const std::string& name, bool follow);

}  // namespace fleet::cli
