// /proc/PID/stat (proc_stat.h).
#include "common/process/proc_stat.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet {

absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text) {
  auto malformed = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("expected /proc/PID/stat text (pid (comm) state ppid ...), found '",
                     text.substr(0, 80), "'"));
  };
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  size_t close = text.rfind(')');
  if (close == absl::string_view::npos || close + 2 > text.size()) return malformed();
  std::vector<absl::string_view> fields =
      absl::StrSplit(text.substr(close + 2), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state).
  ProcStat stat;
  int64_t parent = 0;
  if (fields.size() < 20 || fields[0].size() != 1 || !absl::SimpleAtoi(fields[1], &parent) ||
      !absl::SimpleAtoi(fields[11], &stat.user_ticks) ||
      !absl::SimpleAtoi(fields[12], &stat.system_ticks) ||
      !absl::SimpleAtoi(fields[19], &stat.start_ticks)) {
    return malformed();
  }
  stat.state = fields[0][0];
  stat.parent = static_cast<pid_t>(parent);
  return stat;
}

absl::StatusOr<ProcStat> ReadProcStat(pid_t pid) {
  std::string path = pid == 0 ? "/proc/self/stat" : absl::StrCat("/proc/", pid, "/stat");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone"));
  absl::StatusOr<ProcStat> stat = ParseProcStat(*text);
  if (!stat.ok()) return absl::InternalError(absl::StrCat(path, ": ", stat.status().message()));
  return stat;
}

absl::StatusOr<uint64_t> ProcessStartTicks(pid_t pid) {
  ASSIGN_OR_RETURN(ProcStat stat, ReadProcStat(pid));
  return stat.start_ticks;
}

}  // namespace fleet
