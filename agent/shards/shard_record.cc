// Text form of shard records (shard_record.h).
#include "agent/shards/shard_record.h"

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/text_format.h"

namespace fleet::agent {
namespace {

constexpr absl::string_view kSeparator = "\n---\n";

}  // namespace

std::string SerializeShardRecord(const ShardRecord& record) {
  std::string spec_text;
  google::protobuf::TextFormat::PrintToString(record.spec, &spec_text);
  return absl::StrCat("pid ", record.pid, "\nstart_ticks ", record.start_ticks, "\ncontainer ",
                      record.container, "\nlog_base ", record.log_base, "\nstarted_at ",
                      absl::FormatTime(absl::RFC3339_full, record.started_at, absl::UTCTimeZone()),
                      "\nhelper_pid ", record.helper_pid, "\nhelper_start_ticks ",
                      record.helper_start_ticks, kSeparator, spec_text);
}

absl::StatusOr<ShardRecord> ParseShardRecord(absl::string_view text) {
  size_t split = text.find(kSeparator);
  if (split == absl::string_view::npos) {
    return absl::InvalidArgumentError("shard record has no '---' line before its spec");
  }
  ShardRecord record;
  for (absl::string_view line : absl::StrSplit(text.substr(0, split), '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> kv = absl::StrSplit(line, absl::MaxSplits(' ', 1));
    absl::string_view key = kv[0];
    absl::string_view value = kv.size() > 1 ? kv[1] : "";
    bool ok = true;
    if (key == "pid") {
      ok = absl::SimpleAtoi(value, &record.pid);
    } else if (key == "start_ticks") {
      ok = absl::SimpleAtoi(value, &record.start_ticks);
    } else if (key == "container") {
      record.container = std::string(value);
    } else if (key == "log_base") {
      ok = absl::SimpleAtoi(value, &record.log_base);
    } else if (key == "started_at") {
      std::string error;
      ok = absl::ParseTime(absl::RFC3339_full, value, &record.started_at, &error);
    } else if (key == "helper_pid") {
      ok = absl::SimpleAtoi(value, &record.helper_pid);
    } else if (key == "helper_start_ticks") {
      ok = absl::SimpleAtoi(value, &record.helper_start_ticks);
    }
    // Unknown keys are skipped so a newer agent's records still load in an older one.
    if (!ok)
      return absl::InvalidArgumentError(absl::StrCat("shard record: bad value in '", line, "'"));
  }
  std::string spec_text(text.substr(split + kSeparator.size()));
  if (!google::protobuf::TextFormat::ParseFromString(spec_text, &record.spec)) {
    return absl::InvalidArgumentError("shard record: the spec is not valid ShardSpec text");
  }
  return record;
}

std::string ShardRecordPath(absl::string_view state_dir, const v1::ShardSpec& spec) {
  return absl::StrCat(state_dir, "/shards/", spec.group(), ".r", spec.rank(), ".g",
                      spec.generation(), ".record");
}

}  // namespace fleet::agent
