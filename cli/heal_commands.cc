// `fleet restart` and `fleet events`.
#include "cli/heal_commands.h"

#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cli/output.h"
#include "common/proto_time.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

using Json = nlohmann::ordered_json;

// How often `fleet events -f` asks for new events.
constexpr absl::Duration kFollowPeriod = absl::Seconds(1);

const std::vector<std::string>& Headers() {
  static const auto* headers = new std::vector<std::string>{"TIME", "GROUP",  "GENERATION", "NODE",
                                                            "RANK", "REASON", "ACTION"};
  return *headers;
}

std::vector<std::string> Row(const v1::GroupEventRecord& e) {
  return {absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", FromProtoTime(e.at()), absl::UTCTimeZone()),
          e.group(),
          absl::StrCat(e.generation()),
          e.node().empty() ? "-" : e.node(),
          e.rank() < 0 ? "-" : absl::StrCat(e.rank()),
          e.reason(),
          e.action()};
}

}  // namespace

int RestartGroup(const Globals& g, const std::string& name) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::RestartGroupResponse> r = client->RestartGroup(name, absl::Minutes(2));
  if (!r.ok()) return Fail(std::string(r.status().message()));
  for (const v1::Group& group : r->groups()) {
    std::vector<std::string> nodes;
    for (const v1::GroupRank& rank : group.ranks()) nodes.push_back(rank.node_name());
    std::cout << "group " << group.name() << " restarted: every rank of generation "
              << group.generation() - 1 << " confirmed gone; generation " << group.generation()
              << " starting on " << absl::StrJoin(nodes, ", ") << " (`fleet get groups` shows "
              << "when it is Ready)" << std::endl;
  }
  return 0;
}

int Events(const Globals& g, const std::string& name, bool follow) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  const bool document = *format == OutputFormat::kJson || *format == OutputFormat::kYaml;
  if (follow && *format == OutputFormat::kYaml) {
    return Fail("-f prints one JSON object per line; use -o json (or the table) with -f");
  }
  v1::ListEventsRequest request;
  request.set_name(name);
  bool first = true;
  while (true) {
    absl::StatusOr<v1::ListEventsResponse> r = client->ListEvents(request);
    if (!r.ok()) return Fail(std::string(r.status().message()));
    if (!r->events().empty()) request.set_after_id(r->events().rbegin()->id());
    if (document && !follow) {
      Json doc = Json::object();
      doc["apiVersion"] = "fleet/v1";
      doc["kind"] = "EventList";
      Json& items = doc["items"] = Json::array();
      for (const v1::GroupEventRecord& e : r->events()) items.push_back(ProtoToJson(e));
      std::cout << PrintDocument(doc, *format == OutputFormat::kJson ? "json" : "yaml");
      return 0;
    }
    if (document) {
      for (const v1::GroupEventRecord& e : r->events()) {
        std::cout << ProtoToJson(e).dump() << "\n";
      }
    } else if (first || !r->events().empty()) {
      // The first answer sets the columns; later rows (with -f) are printed as they come.
      Table table(Headers());
      for (const v1::GroupEventRecord& e : r->events()) table.AddRow(Row(e));
      std::string text = table.Render();
      if (!first) text = text.substr(text.find('\n') + 1);
      std::cout << text;
    }
    std::cout << std::flush;
    first = false;
    if (!follow) return 0;
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(kFollowPeriod));
  }
}

}  // namespace fleet::cli
