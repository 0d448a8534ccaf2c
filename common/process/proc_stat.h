// The one reader of /proc/PID/stat: process state, parent, CPU time and start time.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

struct ProcStat {
  char state = '?';           // field 3: R, S, D, Z (zombie), ...
  pid_t parent = 0;           // field 4
  uint64_t user_ticks = 0;    // field 14, clock ticks
  uint64_t system_ticks = 0;  // field 15, clock ticks
  // Field 22, clock ticks since boot. A pid plus its start time names one process even after
  // the pid number is reused.
  uint64_t start_ticks = 0;
};

// Parses the text of a /proc/PID/stat file. InvalidArgument when it is not one.
absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text);

// Reads /proc/PID/stat ("self" for `pid` 0). NotFound when the process is gone.
absl::StatusOr<ProcStat> ReadProcStat(pid_t pid);

// ReadProcStat(pid)->start_ticks.
absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid);

}  // namespace fleet
