// AgentServer: the agent's composition root. It owns the node identity, the discovery
// responder, and a main thread that joins the cluster (when the node has no certificate yet),
// then serves the Agent service over mutual TLS, registers, heartbeats and renews the node's
// certificate before it expires.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "agent/shards/supervisor.h"
#include "common/backoff.h"
#include "common/join_token.h"
#include "common/thread_pool.h"
#include "common/transport.h"
#include "fleet/v1/probe.pb.h"
#include "fleet/v1/types.pb.h"

namespace grpc {
class Server;
}

namespace fleet {
class MetricsServer;
}

namespace fleet::agent {

class AgentMetrics;
class AgentService;
class GpuErrorSource;
class HealthCollector;
class CachedProbe;
class ControllerClient;
class DiscoveryResponder;
class ImageStager;
class StageEndpoints;
class RdmaEndpoints;
class VerbsDevices;
class RouterAdmin;

struct AgentOptions {
  // "HOST:PORT" of the controller; empty: wait to be adopted through discovery (or use the
  // address remembered from the last join).
  std::string controller;
  std::string state_dir;                // holds node_id, pki/ and the controller's address
  std::string name;                     // node name; the hostname when empty
  std::string listen = "0.0.0.0:7101";  // the Agent service; port 0 picks a free port
  // "HOST" or "HOST:PORT" the controller reaches this agent at; without a port, the port
  // actually listened on. Empty: the listen host, which must then not be a wildcard.
  std::string advertise;
  std::string root = "/";  // where probes read /proc, /sys, /etc
  // The join token's text; needed only until the node holds a certificate.
  std::string join_token;
  // UDP "HOST:PORT" where discovery probes are answered; empty: no discovery.
  std::string discovery_listen = "0.0.0.0:7109";
  BackoffPolicy backoff;
  // "HOST:PORT" of the read-only Prometheus endpoint (port 0 picks one; the address is written
  // to STATE_DIR/metrics.addr); empty: none.
  std::string metrics_listen;
  // Staged files are written under this prefix + the destination ("" writes at the
  // destination): `fleet up` agents share one file system, so each gets its own.
  std::string stage_prefix;
  // Test hook --stage-test-corrupt-chunks (StageOptions::corrupt_chunks); 0 on a node.
  int stage_test_corrupt_chunks = 0;
  // Test hook --stage-test-scan-chunk-ms (StageOptions::scan_chunk_delay); 0 on a node.
  int stage_test_scan_chunk_ms = 0;
};

class AgentServer {
 public:
  // Fails at once for what no retry can fix: an unusable advertise address, a malformed join
  // token, a bad state dir, a node without a certificate and without a token. Everything that
  // needs the controller happens on the main thread; see fatal_error().
  static absl::StatusOr<std::unique_ptr<AgentServer>> Start(AgentOptions options);
  ~AgentServer();

  // Set when the agent cannot go on (the token was refused, the CA does not match the token's
  // pin, the listen address is taken): the daemon prints it and exits non-zero.
  std::optional<absl::Status> fatal_error() const;
  const v1::NodeIdentity& identity() const { return identity_; }
  // "HOST:PORT" of the metrics endpoint; empty when it is off.
  std::string metrics_address() const;
  void Shutdown();  // idempotent

 private:
  explicit AgentServer(AgentOptions options);
  absl::Status Init();
  void Main();
  // Waits for a controller address (flag, remembered, or adopted); empty when stopping.
  std::string AwaitController();
  absl::Status JoinWithRetries(const std::string& controller);
  absl::Status Serve(const std::string& controller);
  void RenewIfDue(ControllerClient& controller);
  void Fail(absl::Status status);
  // Starts the read-only metrics endpoint on options_.metrics_listen.
  absl::Status ServeMetrics();
  // Waits up to `wait`, less when stopping or (with `report_changes`) when a shard changed
  // state. False when stopping.
  bool WaitForWork(absl::Duration wait, bool report_changes);
  // The probes of registration that change while a node runs (RDMA ports, limits and disks at
  // `request`'s paths, GPUs; not the model hashes or NCCL's helper process): what /metrics and
  // `fleet health` read.
  v1::NodeProbe RunningFigures(const v1::ProbeRequest& request) const;

  AgentOptions options_;
  v1::NodeIdentity identity_;
  v1::AgentPaths paths_;         // home, state and cache directories, as docker shards use them
  std::string advertise_host_;   // without brackets
  uint16_t advertise_port_ = 0;  // 0: the port it listens on
  std::optional<JoinToken> token_;
  absl::Notification stop_;

  mutable absl::Mutex mu_;
  std::string adopted_controller_ ABSL_GUARDED_BY(mu_);
  bool joined_ ABSL_GUARDED_BY(mu_) = false;
  uint16_t agent_port_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<absl::Status> fatal_ ABSL_GUARDED_BY(mu_);

  absl::Mutex wake_mu_;
  bool stopping_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool shards_changed_ ABSL_GUARDED_BY(wake_mu_) = false;

  std::unique_ptr<AgentMetrics> metrics_;
  std::unique_ptr<Supervisor> supervisor_;
  std::unique_ptr<ThreadPool> shard_executor_;
  std::unique_ptr<ThreadPool> probe_executor_;
  std::unique_ptr<ThreadPool> read_executor_;
  std::unique_ptr<ThreadPool> fabric_executor_;
  std::unique_ptr<ThreadPool> stage_executor_;
  std::unique_ptr<StageEndpoints> stage_;
  std::unique_ptr<ImageStager> images_;
  std::unique_ptr<VerbsDevices> verbs_devices_;  // RDMA fabric tests: libibverbs, loaded at use
  std::unique_ptr<RdmaEndpoints> rdma_;
  std::unique_ptr<DiscoveryResponder> responder_;
  std::unique_ptr<RouterAdmin> router_admin_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<CachedProbe> figures_;
  std::unique_ptr<GpuErrorSource> gpu_errors_;  // keeps NVML's XID event set for the agent's life
  std::unique_ptr<HealthCollector> health_;
  std::unique_ptr<MetricsServer> metrics_server_;  // reads the supervisor and figures_
  std::thread main_;
  bool shut_down_ = false;
};

}  // namespace fleet::agent
