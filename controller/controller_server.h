// ControllerServer: the controller's composition root. It owns the store, the registry, the
// heartbeat sessions, the agent client, the thread pools, the rendezvous store, the group
// manager, the gRPC server (Controller and Rendezvous services), the UDP heartbeat socket on the
// gRPC port's number with the thread that serves it, and the liveness ticker, in that order of
// construction.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/thread_pool.h"
#include "common/transport.h"
#include "common/udp.h"
#include "controller/groups/group_manager.h"
#include "controller/registry/heartbeat_sessions.h"
#include "controller/registry/node_registry.h"
#include "controller/rendezvous/rendezvous_store.h"
#include "controller/router/engine_metrics.h"
#include "controller/router/router_manager.h"

namespace grpc {
class Server;
}

namespace fleet {
class MetricsServer;
}

namespace fleet::controller {

class ClusterCa;
class ControllerMetrics;
class FabricAgentClient;
class BenchRecords;
class FabricRunner;
class StageAgentClient;
class StageRunner;
class ControllerService;
class DiscoveryProber;
class RendezvousService;
class SqliteStore;
class TokenManager;

// Threads of the pools that keep blocking work off the gRPC reactors. Each kind of work has its
// own, so a slow kind never holds up another: a stuck apply never delays `fleet logs`.
struct ControllerThreads {
  // Store writes, certificate signing, events read back, logs fetched from agents.
  int rpc = 4;
  // Discovery, `fleet node probe` and `fleet preflight` (a first model hash takes minutes).
  int probes = 4;
  // Applies and stops (one application at a time each, several applications at once), stale
  // shards stopped, launch checks.
  int groups = 8;
  // Routers: their reconciles (agent calls) and `fleet roll`s (one thread each while it runs).
  int routers = 4;
};

// Makes the client the controller calls agents with; the gRPC one unless a test injects a fake.
using AgentClientFactory =
    std::function<std::unique_ptr<AgentClient>(std::shared_ptr<TransportCredentials>)>;

struct ControllerOptions {
  // Created if missing; holds fleet.db, controller.addr and pki/ (the cluster CA).
  std::string state_dir;
  std::string listen = "0.0.0.0:7100";  // port 0 picks a free port (see address())
  // "HOST:PORT" agents are told to connect to when adopted; empty: the listen address, unless
  // that is a wildcard (then adoption is refused with the fix).
  std::string advertise;
  // Where to write the CLI's admin config (controller address and admin credential); empty:
  // not written.
  std::string admin_config;
  RegistryConfig registry;
  // A node that reported its shards this long ago is asked to report them again.
  absl::Duration refresh_shards_after = absl::Seconds(60);
  absl::Duration node_cert_validity = absl::Hours(24 * 30);
  uint16_t discovery_port = 7109;
  // Probe every `auto_adopt_period` and adopt proven agents; off when zero. The static nodes
  // are probed by unicast; every interface too with `auto_adopt_fabric`.
  absl::Duration auto_adopt_period = absl::ZeroDuration();
  bool auto_adopt_fabric = false;
  std::vector<std::string> static_nodes;  // unicast discovery targets (IPv4)
  const Clock* clock = RealClock::Get();
  ControllerThreads threads;
  AgentClientFactory agent_client_factory;  // empty: GrpcAgentClient
  // "HOST:PORT" of the read-only Prometheus endpoint (port 0 picks one; the address is written
  // to STATE_DIR/metrics.addr); empty: none.
  std::string metrics_listen;
};

// Example:
//   ASSIGN_OR_RETURN(auto server, ControllerServer::Start(options));
//   ... wait for a signal ...
//   server->Shutdown();
class ControllerServer {
 public:
  // Fails with FailedPrecondition when the state dir is locked by another controller or its
  // database is unusable, and Unavailable when the listen address (TCP for gRPC, UDP of the
  // same port for heartbeats) cannot be bound.
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(ControllerOptions options);
  ~ControllerServer();

  // "HOST:PORT" actually listened on; also written to STATE_DIR/controller.addr.
  const std::string& address() const { return address_; }
  // "HOST:PORT" of the metrics endpoint; empty when it is off.
  std::string metrics_address() const;
  // Stops accepting calls and heartbeats, finishes in-flight calls, stops the ticker.
  // Idempotent.
  void Shutdown();

 private:
  explicit ControllerServer(ControllerOptions options);
  absl::Status Init();
  // Binds the heartbeat socket to the gRPC port's number and starts answering datagrams.
  absl::Status ServeHeartbeats(const std::string& host, int port);
  // Starts the read-only metrics endpoint on options_.metrics_listen.
  absl::Status ServeMetrics();

  ControllerOptions options_;
  int lock_fd_ = -1;
  std::unique_ptr<SqliteStore> store_;
  std::unique_ptr<ClusterCa> ca_;
  std::shared_ptr<TransportCredentials> transport_;
  std::unique_ptr<NodeRegistry> registry_;
  std::unique_ptr<HeartbeatSessions> heartbeats_;
  std::unique_ptr<TokenManager> tokens_;
  std::unique_ptr<AgentClient> agents_;
  std::unique_ptr<DiscoveryProber> prober_;
  std::unique_ptr<ThreadPool> rpc_pool_;
  std::unique_ptr<ThreadPool> probe_pool_;
  std::unique_ptr<ThreadPool> group_pool_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<ControllerMetrics> metrics_;  // the group manager reports to it
  std::unique_ptr<GroupManager> groups_;
  std::unique_ptr<ThreadPool> router_pool_;
  std::unique_ptr<EngineMetrics> engine_metrics_;
  std::unique_ptr<RouterManager> routers_;  // reads the groups
  std::unique_ptr<FabricAgentClient> fabric_agents_;
  std::unique_ptr<FabricRunner> fabric_;
  std::unique_ptr<BenchRecords> bench_;
  std::unique_ptr<ThreadPool> stage_pool_;
  std::unique_ptr<StageAgentClient> stage_agents_;
  std::unique_ptr<StageRunner> stage_;
  std::unique_ptr<MetricsServer> metrics_server_;  // reads the registry, sessions and groups
  std::unique_ptr<ControllerService> service_;
  std::unique_ptr<RendezvousService> rendezvous_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Notification stop_;
  std::optional<UdpSocket> heartbeat_socket_;
  std::thread heartbeat_thread_;
  std::thread ticker_;
  std::thread adopter_;
  bool shut_down_ = false;
};

}  // namespace fleet::controller
