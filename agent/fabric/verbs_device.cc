// The one place a failed verbs call becomes a Status, for the real device and the fake alike.
#include "agent/fabric/verbs_device.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fleet::agent {

absl::Status VerbsCallError(absl::string_view device, absl::string_view call, int err) {
  std::string message = absl::StrCat(device, ": ", call, ": ", std::strerror(err));
  if (err == ENOMEM &&
      (absl::StartsWith(call, "ibv_reg_mr") || absl::StartsWith(call, "ibv_create"))) {
    absl::StrAppend(&message,
                    ": pinning the test's memory exceeded the locked-memory limit (ulimit -l); "
                    "run fleet-agent with LimitMEMLOCK=infinity (systemd) or raise memlock in "
                    "/etc/security/limits.conf, then restart it");
  }
  return absl::FailedPreconditionError(message);
}

}  // namespace fleet::agent
