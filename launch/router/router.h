// The router in front of an application's replicas: HAProxy's configuration as SparkFleet
// renders it, and the fixed set of runtime-API commands the agent may send to it, built from
// typed requests (never from text a caller supplies). Pure code, shared by the controller (it
// renders the configuration) and the agent (it builds and sends the commands).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fleet/v1/agent.pb.h"

namespace fleet::engine {

// The router's shard runs in the agent's STATE_DIR/run/GROUP; these are relative to it.
inline constexpr char kRouterConfigFile[] = "haproxy.cfg";
inline constexpr char kRouterAdminSocket[] = "admin.sock";
// The backend and its servers: replica i is server "r<i+1>" of backend "replicas".
inline constexpr char kRouterBackend[] = "replicas";
// The router's own Prometheus metrics (HAProxy's built-in exporter), on its endpoint. Not
// /metrics: that path reaches the replicas' own (vLLM-named) metrics through the router.
inline constexpr char kRouterMetricsPath[] = "/router/metrics";
// Slots are declared up front (server-template) so replicas come and go without a reload.
inline constexpr int kRouterMaxSlots = 64;

// The router's shard group for an application: "ds4.router". Recipe names cannot hold '.', so
// it never names a serving group.
std::string RouterGroupName(absl::string_view application);

struct RouterConfig {
  // The endpoint's address and port. The address is the node's (the first replica head's), so
  // routers of nodes that share one network namespace (127.0.0.x test nodes) never collide.
  std::string address;
  uint32_t port = 0;
  int slots = 1;  // replicas it may route to (1 to kRouterMaxSlots)
};

// haproxy.cfg for `config`: HTTP mode, `balance leastconn` (fewest requests in flight),
// responses streamed as they come (no compression, no response buffering, so SSE tokens pass
// at once), a request that failed before any byte reached a replica retried on another one
// (`retry-on conn-failure empty-response response-timeout`, `option redispatch`), no health
// checks (SparkFleet drives every server's state through the admin socket), every slot in
// maintenance until the controller sets it. InvalidArgument for a bad port or slot count.
absl::StatusOr<std::string> RenderRouterConfig(const RouterConfig& config);

// The runtime-API lines a request stands for, in order, each sent on its own connection.
// InvalidArgument names a field out of range (slot, port, weight, host characters).
// Example: set_servers {slot: 2, state: DRAIN} →
//   {"set server replicas/r2 state drain"}
absl::StatusOr<std::vector<std::string>> RouterCommandLines(
    const v1::RouterCommandRequest& request);

// What an answer to one of those lines means: OK, or FailedPrecondition quoting HAProxy.
absl::Status CheckRouterReply(absl::string_view line, absl::string_view reply);

// The line that lists every slot (`show stat` of the backend's servers), and its answer parsed:
// state (from HAProxy's status column: MAINT…/DOWN → MAINT, DRAIN → DRAIN, else READY), address,
// weight and requests in flight (scur). InvalidArgument when the answer is not HAProxy's CSV.
std::string RouterShowLine();
absl::StatusOr<std::vector<v1::RouterServer>> ParseRouterShow(absl::string_view csv);

}  // namespace fleet::engine
