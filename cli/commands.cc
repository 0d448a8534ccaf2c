// The `fleet` commands that talk to a controller.
#include "cli/commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/config.h"
#include "cli/controller_api.h"
#include "cli/output.h"
#include "common/table.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::cli {
namespace {

using google::protobuf::util::TimeUtil;
using Json = nlohmann::ordered_json;

Json TokenJson(const v1::TokenInfo& t) {
  return {{"id", t.id()},
          {"status", t.status()},
          {"createdAt", TimeUtil::ToString(t.created_at())},
          {"expiresAt", t.has_expires_at() ? Json(TimeUtil::ToString(t.expires_at())) : Json()},
          {"usesAllowed", t.uses_allowed()},
          {"uses", t.uses()},
          {"description", t.description()}};
}

}  // namespace

absl::StatusOr<AdminClient> Connect(const Globals& g, absl::Duration deadline) {
  absl::StatusOr<CliConfig> config = ResolveConfig(g.controller);
  if (!config.ok()) return config.status();
  return AdminClient::Create(*config, deadline);
}

int Fail(const std::string& message) {
  std::cerr << "fleet: error: " << message << std::endl;
  return 1;
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& name, const std::string& text,
                                                 bool allow_never) {
  if (allow_never && (text == "0" || text == "never")) return absl::InfiniteDuration();
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " \"", text,
                                                   "\" is not a positive duration; write it "
                                                   "like 500ms, 30s, 2m or 24h",
                                                   allow_never ? " (or never)" : ""));
  }
  return d;
}

int GetNodes(const Globals& g) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::ListNodesResponse> nodes = client->ListNodes();
  if (!nodes.ok()) return Fail(std::string(nodes.status().message()));
  std::cout << RenderNodes(*nodes, *format);
  return 0;
}

int CreateToken(const Globals& g, const std::string& ttl, int64_t uses,
                const std::string& description) {
  absl::StatusOr<absl::Duration> d = ParseDurationFlag("ttl", ttl, /*allow_never=*/true);
  if (!d.ok()) return Fail(std::string(d.status().message()));
  if (uses < 0) return Fail("--uses must be 0 (unlimited) or more");
  v1::CreateTokenRequest request;
  if (*d != absl::InfiniteDuration()) {
    *request.mutable_ttl() = TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(*d));
  }
  request.set_uses(uses);
  request.set_description(description);
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::CreateTokenResponse> created = client->CreateToken(request);
  if (!created.ok()) return Fail(std::string(created.status().message()));
  // The token alone on stdout, so `fleet token create > join-token` makes a join file.
  std::cout << created->token() << std::endl;
  std::cerr << "token " << created->info().id() << " "
            << (created->info().has_expires_at()
                    ? "expires " + TimeUtil::ToString(created->info().expires_at())
                    : std::string("never expires"))
            << ", " << (uses == 0 ? std::string("unlimited uses") : absl::StrCat(uses, " uses"))
            << "; give it to agents with --join-file FILE or FLEET_JOIN_TOKEN, never on the "
               "command line"
            << std::endl;
  return 0;
}

int ListTokens(const Globals& g) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::ListTokensResponse> tokens = client->ListTokens();
  if (!tokens.ok()) return Fail(std::string(tokens.status().message()));
  if (*format == OutputFormat::kJson || *format == OutputFormat::kYaml) {
    Json items = Json::array();
    for (const v1::TokenInfo& t : tokens->tokens()) items.push_back(TokenJson(t));
    Json doc = {{"apiVersion", "fleet/v1"}, {"kind", "TokenList"}, {"items", std::move(items)}};
    std::cout << (*format == OutputFormat::kJson ? DumpJson(doc) : JsonToYaml(doc));
    return 0;
  }
  Table table({"ID", "STATUS", "EXPIRES", "USES", "DESCRIPTION"});
  for (const v1::TokenInfo& t : tokens->tokens()) {
    table.AddRow({t.id(), t.status(),
                  t.has_expires_at() ? TimeUtil::ToString(t.expires_at()) : "never",
                  t.uses_allowed() == 0 ? absl::StrCat(t.uses(), "/unlimited")
                                        : absl::StrCat(t.uses(), "/", t.uses_allowed()),
                  t.description()});
  }
  std::cout << table.Render();
  return 0;
}

int RevokeToken(const Globals& g, const std::string& id) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  if (absl::Status st = client->RevokeToken(id); !st.ok()) return Fail(std::string(st.message()));
  std::cout << "token " << id << " revoked" << std::endl;
  return 0;
}

int RemoveNode(const Globals& g, const std::string& name) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::RemoveNodeResponse> removed = client->RemoveNode(name);
  if (!removed.ok()) return Fail(std::string(removed.status().message()));
  std::cout << "node " << name << " (" << removed->node_id()
            << ") removed; its certificate is revoked and it cannot reconnect" << std::endl;
  return 0;
}

int Discover(const Globals& g, const std::vector<std::string>& interfaces,
             const std::vector<std::string>& targets, const std::string& timeout, bool adopt) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<absl::Duration> listen = ParseDurationFlag("timeout", timeout);
  if (!listen.ok()) return Fail(std::string(listen.status().message()));
  v1::DiscoverRequest request;
  for (const std::string& i : interfaces) request.add_interfaces(i);
  for (const std::string& t : targets) request.add_targets(t);
  *request.mutable_listen_for() =
      TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(*listen));
  request.set_adopt(adopt);
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::DiscoverResponse> found = client->Discover(request);
  if (!found.ok()) return Fail(std::string(found.status().message()));
  if (*format == OutputFormat::kJson || *format == OutputFormat::kYaml) {
    Json items = Json::array();
    for (const v1::DiscoveredNode& n : found->nodes()) {
      Json itfs = Json::array();
      for (const v1::NetworkInterface& i : n.interfaces()) {
        itfs.push_back(
            {{"name", i.name()},
             {"mtu", i.mtu()},
             {"addresses", std::vector<std::string>(i.addresses().begin(), i.addresses().end())}});
      }
      items.push_back({{"nodeId", n.node_id()},
                       {"hostname", n.hostname()},
                       {"address", n.address()},
                       {"agentPort", n.agent_port()},
                       {"joined", n.joined()},
                       {"proven", n.proven()},
                       {"adopted", n.adopted()},
                       {"adoptError", n.adopt_error()},
                       {"interfaces", std::move(itfs)},
                       {"rdmaDevices", std::vector<std::string>(n.rdma_devices().begin(),
                                                                n.rdma_devices().end())}});
    }
    Json doc = {{"apiVersion", "fleet/v1"}, {"kind", "DiscoveredNodeList"}, {"items", items}};
    std::cout << (*format == OutputFormat::kJson ? DumpJson(doc) : JsonToYaml(doc));
    return 0;
  }
  Table table({"NODE-ID", "HOSTNAME", "ADDRESS", "PROOF", "JOINED", "ADOPTED"});
  for (const v1::DiscoveredNode& n : found->nodes()) {
    table.AddRow({n.node_id(), n.hostname(), n.address(), n.proven() ? "ok" : "UNPROVEN",
                  n.joined() ? "yes" : "no",
                  n.adopted() ? "yes" : (n.adopt_error().empty() ? "-" : n.adopt_error())});
  }
  std::cout << table.Render();
  return 0;
}

}  // namespace fleet::cli
