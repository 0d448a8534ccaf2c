// Finding engine processes in integration tests: the test runs as root in the root pid
// namespace, so /proc shows the processes of every host's network namespace.

#ifndef FLEET_TESTS_INTEGRATION_ENGINE_PIDS_H_
#define FLEET_TESTS_INTEGRATION_ENGINE_PIDS_H_

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/files.h"

namespace fleet::testing {

// Pids of the processes whose name (/proc/PID/comm, at most 15 characters) starts with
// `comm_prefix` and whose environment has FLEET_GROUP=`group`.
inline std::vector<pid_t> EnginePids(absl::string_view comm_prefix, const std::string& group) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    absl::StatusOr<std::string> comm = ReadFileToString(absl::StrCat("/proc/", pid, "/comm"));
    if (!comm.ok() || !absl::StartsWith(*comm, comm_prefix)) continue;
    absl::StatusOr<std::string> environ = ReadFileToString(absl::StrCat("/proc/", pid, "/environ"));
    if (!environ.ok()) continue;
    for (absl::string_view var : absl::StrSplit(*environ, '\0')) {
      if (var == absl::StrCat("FLEET_GROUP=", group)) pids.push_back(pid);
    }
  }
  return pids;
}

}  // namespace fleet::testing

#endif  // FLEET_TESTS_INTEGRATION_ENGINE_PIDS_H_
