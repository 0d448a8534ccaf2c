// Machine-readable and table output of the CLI, kept stable across versions: `-o json` and
// `-o yaml` print the same document, `-o wide` adds table columns.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "cli/document.h"
#include "fleet/v1/controller.pb.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {

enum class OutputFormat { kTable, kWide, kJson, kYaml };

// "" or "table", "wide", "json", "yaml"; anything else is InvalidArgument naming the choices.
absl::StatusOr<OutputFormat> ParseOutputFormat(const std::string& text);

// A protobuf message as JSON (lowerCamelCase field names, as protobuf's JSON mapping).
nlohmann::ordered_json ProtoToJson(const google::protobuf::Message& message);
// The word the tables print for an enum value of the wire: GROUP_STATE_READY → "Ready",
// SHARD_STATE_RUNNING → "Running"; an UNSPECIFIED value → "Unknown". ProtoToJson uses it for
// every enum field, so -o json|yaml and the tables say the same.
std::string EnumWord(const google::protobuf::EnumValueDescriptor& value);
// "0.4s", "12s", "3m", "5h", "2d": kubectl's age style, with a decimal below ten seconds.
std::string FormatAge(double seconds);

// `fleet nodes` in any format. Ages are taken against the controller's `now`.
std::string RenderNodes(const v1::ListNodesResponse& nodes, OutputFormat format);

}  // namespace fleet::cli
