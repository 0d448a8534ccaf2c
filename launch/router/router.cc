// HAProxy configuration and runtime-API commands (router.h).
#include "launch/router/router.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fleet::engine {
namespace {

// A host HAProxy's `set server addr` takes: an IPv4/IPv6 literal or a DNS name. Anything else
// (a space, ';') could smuggle a second command onto the line.
bool ValidHost(absl::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':') {
      return false;
    }
  }
  return true;
}

absl::string_view StateWord(v1::RouterServerState state) {
  switch (state) {
    case v1::ROUTER_SERVER_STATE_READY:
      return "ready";
    case v1::ROUTER_SERVER_STATE_DRAIN:
      return "drain";
    case v1::ROUTER_SERVER_STATE_MAINT:
      return "maint";
    default:
      return "";
  }
}

}  // namespace

std::string RouterGroupName(absl::string_view application) {
  return absl::StrCat(application, ".router");
}

absl::StatusOr<std::string> RenderRouterConfig(const RouterConfig& config) {
  if (config.port == 0 || config.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("router port must be 1 to 65535, found ", config.port));
  }
  if (!ValidHost(config.address)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router address must be an IP address or name, found \"",
                     absl::CHexEscape(config.address), "\""));
  }
  if (config.slots < 1 || config.slots > kRouterMaxSlots) {
    return absl::InvalidArgumentError(absl::StrCat("a router serves 1 to ", kRouterMaxSlots,
                                                   " replicas, found ", config.slots,
                                                   "; lower `replicas`"));
  }
  // Timeouts: a streamed answer of a long generation may pause between tokens (a prefill of a
  // 100k-token prompt takes minutes on a Spark), so client and server wait an hour; connect is
  // short so a dead replica's request is retried elsewhere at once.
  return absl::StrCat(
      "# Rendered by SparkFleet for one application; driven through admin.sock, never reloaded.\n"
      "global\n"
      "  stats socket unix@",
      kRouterAdminSocket,
      " mode 600 level admin\n"
      "  maxconn 4096\n"
      "defaults\n"
      "  mode http\n"
      "  timeout connect 2s\n"
      "  timeout client 1h\n"
      "  timeout server 1h\n"
      "  timeout queue 30s\n"
      "  timeout http-request 30s\n"
      "  timeout http-keep-alive 60s\n"
      "  retries 3\n"
      "  retry-on conn-failure empty-response response-timeout\n"
      "  option redispatch 1\n"
      "frontend api\n"
      "  bind ",
      absl::StrContains(config.address, ':') ? absl::StrCat("[", config.address, "]")
                                             : config.address,
      ":", config.port,
      "\n"
      "  option http-no-delay\n"
      "  http-request use-service prometheus-exporter if { path ",
      kRouterMetricsPath,
      " }\n"
      "  default_backend ",
      kRouterBackend,
      "\n"
      "backend ",
      kRouterBackend,
      "\n"
      "  balance leastconn\n"
      "  option http-no-delay\n"
      "  server-template r 1-",
      config.slots, " 127.0.0.1:9 disabled\n");
}

absl::StatusOr<std::vector<std::string>> RouterCommandLines(
    const v1::RouterCommandRequest& request) {
  std::vector<std::string> lines;
  switch (request.command_case()) {
    case v1::RouterCommandRequest::kShow:
      lines.push_back(RouterShowLine());
      return lines;
    case v1::RouterCommandRequest::kSetServers:
      break;
    default:
      return absl::InvalidArgumentError("router command must be set_servers or show");
  }
  for (const v1::RouterServer& server : request.set_servers().servers()) {
    if (server.slot() < 1 || server.slot() > kRouterMaxSlots) {
      return absl::InvalidArgumentError(
          absl::StrCat("router slot must be 1 to ", kRouterMaxSlots, ", found ", server.slot()));
    }
    const std::string name = absl::StrCat(kRouterBackend, "/r", server.slot());
    if (!server.host().empty() || server.port() != 0) {
      if (!ValidHost(server.host()) || server.port() == 0 || server.port() > 65535) {
        return absl::InvalidArgumentError(
            absl::StrCat("router slot ", server.slot(),
                         " needs a host (letters, digits, '.', '-', ':') and a "
                         "port from 1 to 65535, found \"",
                         absl::CHexEscape(server.host()), "\" port ", server.port()));
      }
      lines.push_back(
          absl::StrCat("set server ", name, " addr ", server.host(), " port ", server.port()));
    }
    if (server.weight() != 0) {
      if (server.weight() > 256) {
        return absl::InvalidArgumentError(
            absl::StrCat("router weight must be 1 to 256, found ", server.weight()));
      }
      lines.push_back(absl::StrCat("set weight ", name, " ", server.weight()));
    }
    if (server.state() != v1::ROUTER_SERVER_STATE_UNSPECIFIED) {
      absl::string_view word = StateWord(server.state());
      if (word.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("router slot ", server.slot(),
                                                       " has an unknown state ",
                                                       static_cast<int>(server.state())));
      }
      lines.push_back(absl::StrCat("set server ", name, " state ", word));
    }
  }
  return lines;
}

absl::Status CheckRouterReply(absl::string_view line, absl::string_view reply) {
  absl::string_view text = absl::StripAsciiWhitespace(reply);
  // `set server … addr` always answers; what it says when it worked: "IP changed from …" or
  // "no need to change the addr …". Every other set command answers nothing when it worked.
  if (text.empty() || absl::StrContains(text, "changed from") ||
      absl::StartsWith(text, "no need to change")) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("router refused \"", line, "\": ", absl::CHexEscape(text)));
}

std::string RouterShowLine() { return "show stat -1 4 -1"; }

absl::StatusOr<std::vector<v1::RouterServer>> ParseRouterShow(absl::string_view csv) {
  std::vector<absl::string_view> rows = absl::StrSplit(csv, '\n', absl::SkipWhitespace());
  if (rows.empty() || !absl::StartsWith(rows[0], "# pxname,")) {
    return absl::InvalidArgumentError(
        absl::StrCat("router's `show stat` answer does not start with HAProxy's CSV header: \"",
                     absl::CHexEscape(csv.substr(0, 80)), "\""));
  }
  std::map<absl::string_view, size_t> column;
  std::vector<absl::string_view> header = absl::StrSplit(rows[0].substr(2), ',');
  for (size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
  for (absl::string_view needed : {"pxname", "svname", "scur", "status", "weight", "addr"}) {
    if (!column.contains(needed)) {
      return absl::InvalidArgumentError(
          absl::StrCat("router's `show stat` answer has no \"", needed, "\" column"));
    }
  }
  std::vector<v1::RouterServer> servers;
  for (size_t r = 1; r < rows.size(); ++r) {
    std::vector<absl::string_view> cells = absl::StrSplit(rows[r], ',');
    if (cells.size() < header.size() - 1 || cells[column["pxname"]] != kRouterBackend) continue;
    absl::string_view name = cells[column["svname"]];
    uint32_t slot = 0;
    if (!absl::ConsumePrefix(&name, "r") || !absl::SimpleAtoi(name, &slot)) continue;
    v1::RouterServer server;
    server.set_slot(slot);
    absl::string_view status = cells[column["status"]];
    server.set_state(absl::StartsWith(status, "MAINT") || absl::StartsWith(status, "DOWN")
                         ? v1::ROUTER_SERVER_STATE_MAINT
                     : absl::StartsWith(status, "DRAIN") ? v1::ROUTER_SERVER_STATE_DRAIN
                                                         : v1::ROUTER_SERVER_STATE_READY);
    uint32_t number = 0;
    if (absl::SimpleAtoi(cells[column["scur"]], &number)) server.set_current_sessions(number);
    if (absl::SimpleAtoi(cells[column["weight"]], &number)) server.set_weight(number);
    absl::string_view addr = cells[column["addr"]];
    if (size_t colon = addr.rfind(':');
        colon != absl::string_view::npos && absl::SimpleAtoi(addr.substr(colon + 1), &number)) {
      server.set_host(std::string(addr.substr(0, colon)));
      server.set_port(number);
    }
    servers.push_back(std::move(server));
  }
  return servers;
}

}  // namespace fleet::engine
