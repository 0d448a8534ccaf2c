// Daemon logging: one line per event with time, level, component and key=value fields.
//
//   Log(LogLevel::kInfo, "registry", "node registered", {{"node", name}, {"address", addr}});
//   -> 2026-11-23T20:50:01.123Z INFO registry node registered node=spark-1 address=10.0.0.2:7101
//
// Values with spaces or quotes are quoted. Never pass a secret as a field.
#pragma once

#include <initializer_list>
#include <utility>

#include "absl/strings/string_view.h"

namespace fleet {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

using LogField = std::pair<absl::string_view, absl::string_view>;

// Writes one line to stderr (atomically with respect to other threads).
void Log(LogLevel level, absl::string_view component, absl::string_view message,
         std::initializer_list<LogField> fields = {});

// Lines below this level are dropped. Default kInfo.
void SetMinLogLevel(LogLevel level);

}  // namespace fleet
