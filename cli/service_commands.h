// `fleet get services` and `fleet roll NAME`: each applied recipe's one endpoint (its router),
// and a rolling restart of an application's replicas behind it.
#pragma once

#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/controller_api.h"

namespace fleet::cli {

// How long an apply (or `fleet up`) waits for the router to put a Ready replica in rotation: it
// starts HAProxy (milliseconds) and sets the slots on the controller's next tick.
inline constexpr absl::Duration kServiceWait = absl::Seconds(30);

// NAME ENDPOINT READY NODE MESSAGE per application (or -o json|yaml: a ServiceList).
int GetServices(const Globals& g);
// Drains, restarts and returns every replica in turn; prints each step and the result.
int RollGroup(const Globals& g, const std::string& name);
// After an apply: waits (until `deadline`) for the application's router to send requests to a
// replica and prints "service NAME: ENDPOINT (R/T replicas ready)"; if it does not, prints why
// as a warning (the groups themselves are Ready) and the last message.
void PrintService(AdminClient& client, const std::string& application, absl::Time deadline,
                  std::ostream& out);

}  // namespace fleet::cli
