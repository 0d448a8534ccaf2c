// `fleet get services`, `fleet roll` (service_commands.h).
#include "cli/service_commands.h"

#include <iostream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cli/output.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

using Json = nlohmann::ordered_json;

// How often an apply asks whether the router serves yet.
constexpr absl::Duration kServicePoll = absl::Milliseconds(200);

std::string Ready(const v1::Service& s) {
  return absl::StrCat(s.replicas_ready(), "/", s.replicas_total());
}

}  // namespace

void PrintService(AdminClient& client, const std::string& application, absl::Time deadline,
                  std::ostream& out) {
  std::string why = "the controller has not placed its router yet";
  while (true) {
    absl::StatusOr<v1::ListServicesResponse> r = client.ListServices(application);
    if (r.ok() && r->services_size() == 1) {
      const v1::Service& s = r->services(0);
      if (s.replicas_ready() > 0) {
        out << "service " << s.name() << ": " << s.endpoint() << " (" << Ready(s)
            << " replicas ready)" << std::endl;
        return;
      }
      why = s.message().empty() ? absl::StrCat("no replica in rotation at ", s.endpoint())
                                : s.message();
    } else if (!r.ok()) {
      why = std::string(r.status().message());
    }
    if (absl::Now() >= deadline) break;
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(kServicePoll));
  }
  out << "warning: the router of " << application << " does not serve yet: " << why
      << " (`fleet get services` shows it; is haproxy installed on the node?)" << std::endl;
}

int GetServices(const Globals& g) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::ListServicesResponse> r = client->ListServices("");
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (*format == OutputFormat::kJson || *format == OutputFormat::kYaml) {
    Json doc = Json::object();
    doc["apiVersion"] = "fleet/v1";
    doc["kind"] = "ServiceList";
    Json& items = doc["items"] = Json::array();
    for (const v1::Service& s : r->services()) {
      // The documented names first; the rest as the proto spells them.
      Json item = Json::object();
      item["name"] = s.name();
      item["endpoint"] = s.endpoint();
      item["replicas"] = {{"ready", s.replicas_ready()}, {"total", s.replicas_total()}};
      item["node"] = s.node_name();
      item["message"] = s.message();
      items.push_back(std::move(item));
    }
    std::cout << PrintDocument(doc, *format == OutputFormat::kJson ? "json" : "yaml");
    return 0;
  }
  Table table({"NAME", "ENDPOINT", "READY", "NODE", "MESSAGE"});
  for (const v1::Service& s : r->services()) {
    table.AddRow(
        {s.name(), s.endpoint(), Ready(s), s.node_name(), s.message().empty() ? "-" : s.message()});
  }
  std::cout << table.Render();
  return 0;
}

int RollGroup(const Globals& g, const std::string& name) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  // Every replica drains (rollout.drain_timeout), restarts and loads again: allow an hour.
  absl::StatusOr<v1::RollGroupResponse> r = client->RollGroup(name, absl::Hours(1));
  if (!r.ok()) return Fail(std::string(r.status().message()));
  for (const std::string& step : r->steps()) std::cout << "  " << step << "\n";
  for (const v1::Group& group : r->groups()) {
    std::cout << "group " << group.name() << " rolled: generation " << group.generation()
              << ", in rotation" << std::endl;
  }
  return 0;
}

}  // namespace fleet::cli
