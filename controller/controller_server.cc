// ControllerServer: wiring of the controller's components.
#include "controller/controller_server.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/host_port.h"
#include "common/log.h"
#include "common/metrics/metrics_server.h"
#include "common/status_macros.h"
#include "controller/discovery/discovery_prober.h"
#include "controller/fabric/fabric_runner.h"
#include "controller/groups/nccl_bench_group.h"
#include "controller/grpc/agent_client_impl.h"
#include "controller/grpc/controller_service.h"
#include "controller/grpc/fabric_agent_client_impl.h"
#include "controller/grpc/rendezvous_service.h"
#include "controller/grpc/stage_agent_client_impl.h"
#include "controller/metrics/controller_metrics.h"
#include "controller/stage/stage_runner.h"
#include "controller/store/sqlite_store.h"
#include "controller/trust/cluster_ca.h"
#include "controller/trust/tokens.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace fleet::controller {
namespace {

// How often silent nodes are re-judged: a fifth of a heartbeat period keeps the Lost verdict
// within 200 ms of `lost_after` at the default 1 s period.
absl::Duration TickPeriod(const RegistryConfig& config) { return config.heartbeat_period / 5; }

bool IsWildcardHost(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::";
}

// The heartbeat socket: on every interface for a wildcard listen host, else on the host's IPv4
// address (a name such as "localhost" resolved as the agents resolve theirs).
absl::StatusOr<UdpSocket> BindHeartbeatSocket(const std::string& host, int port) {
  std::string ip = "0.0.0.0";
  if (!IsWildcardHost(host)) {
    ASSIGN_OR_RETURN(ip, ResolveIpv4(host));
  }
  return UdpSocket::Bind(ip, static_cast<uint16_t>(port));
}

}  // namespace

ControllerServer::ControllerServer(ControllerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    ControllerOptions options) {
  RETURN_IF_ERROR(ValidateRegistryConfig(options.registry));
  std::unique_ptr<ControllerServer> server(new ControllerServer(std::move(options)));
  RETURN_IF_ERROR(server->Init());
  return server;
}

absl::Status ControllerServer::Init() {
  const std::string& dir = options_.state_dir;
  RETURN_IF_ERROR(MakeDirectories(dir, 0700));
  std::string lock_path = absl::StrCat(dir, "/controller.lock");
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return ErrnoStatus(absl::StrCat("open ", lock_path));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    absl::StatusOr<std::string> holder = ReadFileToString(lock_path);
    return absl::FailedPreconditionError(absl::StrCat(
        "state dir ", dir, " is in use by another controller (pid ",
        holder.ok() ? *holder : "unknown", "); stop it first or pass another --state-dir"));
  }
  std::string pid = absl::StrCat(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::write(lock_fd_, pid.data(), pid.size()) < 0) {
    return ErrnoStatus(absl::StrCat("write ", lock_path));
  }

  ASSIGN_OR_RETURN(store_, SqliteStore::Open(absl::StrCat(dir, "/fleet.db")));
  ASSIGN_OR_RETURN(std::string controller_id, store_->ControllerId());
  ASSIGN_OR_RETURN(ca_,
                   ClusterCa::LoadOrCreate(absl::StrCat(dir, "/pki"), options_.node_cert_validity));
  transport_ = MutualTls(ca_->ca_pem(), ca_->controller_credential().key_pem,
                         ca_->controller_credential().cert_pem, ClientCertificates::kOptional);
  registry_ = std::make_unique<NodeRegistry>(options_.registry, options_.clock, store_.get());
  RETURN_IF_ERROR(registry_->Load());
  heartbeats_ = std::make_unique<HeartbeatSessions>(options_.clock, registry_.get(),
                                                    options_.refresh_shards_after);
  tokens_ = std::make_unique<TokenManager>(options_.clock, store_.get(), ca_->ca_sha256());
  RETURN_IF_ERROR(tokens_->Load());
  agents_ = options_.agent_client_factory
                ? options_.agent_client_factory(transport_)
                : std::make_unique<GrpcAgentClient>(transport_, absl::Seconds(2));
  rpc_pool_ = std::make_unique<ThreadPool>(options_.threads.rpc);
  probe_pool_ = std::make_unique<ThreadPool>(options_.threads.probes);
  group_pool_ = std::make_unique<ThreadPool>(options_.threads.groups);
  rendezvous_ = std::make_unique<RendezvousStore>(options_.clock);
  metrics_ = std::make_unique<ControllerMetrics>();
  groups_ = std::make_unique<GroupManager>(GroupManagerConfig{}, options_.clock, store_.get(),
                                           registry_.get(), agents_.get(), rendezvous_.get(),
                                           group_pool_.get());
  groups_->SetListener(metrics_.get());
  RETURN_IF_ERROR(groups_->Load());
  router_pool_ = std::make_unique<ThreadPool>(options_.threads.routers);
  engine_metrics_ = std::make_unique<HttpEngineMetrics>();
  routers_ = std::make_unique<RouterManager>(
      RouterManagerConfig{}, options_.clock, store_.get(), agents_.get(), engine_metrics_.get(),
      router_pool_.get(), [this] { return groups_->List(); },
      [this] { return registry_->LostNodeIds(); },
      [this](const std::string& group) {
        absl::Notification done;
        absl::Status result;
        groups_->RestartAsync(group, [&](absl::StatusOr<std::vector<v1::Group>> restarted) {
          result = restarted.status();
          done.Notify();
        });
        done.WaitForNotification();
        return result;
      },
      [](absl::Duration d) { absl::SleepFor(d); });
  RETURN_IF_ERROR(routers_->Load());
  fabric_agents_ = std::make_unique<GrpcFabricAgentClient>(transport_);
  fabric_ = std::make_unique<FabricRunner>(
      options_.clock, store_.get(), fabric_agents_.get(),
      [this](const v1::FabricResult& r) { metrics_->OnFabricResult(r.test(), r.verdict()); },
      // A sweep of 1 MiB to 256 MiB takes seconds; minutes leave room for a first NCCL init.
      [this](const std::vector<std::string>& nodes) {
        return RunNcclBenchGroup(*groups_, nodes, absl::Minutes(5));
      });
  bench_ = std::make_unique<BenchRecords>(options_.clock, store_.get());
  stage_pool_ = std::make_unique<ThreadPool>(1);
  stage_agents_ = std::make_unique<GrpcStageAgentClient>(transport_);
  stage_ = std::make_unique<StageRunner>(
      options_.clock, stage_agents_.get(), store_.get(),
      StageRunEvents{.started = [this](const std::string&) { metrics_->OnStageStarted(); },
                     .ended = [this](const v1::StageRun& run) { metrics_->OnStageEnded(run); }});
  RETURN_IF_ERROR(stage_->Load());

  grpc::ServerBuilder builder;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(metrics_->rpc().InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  int port = 0;
  builder.AddListeningPort(options_.listen, transport_->ForServer(), &port);
  std::string host = HostOf(options_.listen);
  prober_ = std::make_unique<DiscoveryProber>(
      ProberOptions{.controller_id = controller_id,
                    .advertise = options_.advertise,
                    .udp_port = options_.discovery_port,
                    .static_targets = options_.static_nodes,
                    .auto_adopt_fabric = options_.auto_adopt_fabric},
      tokens_.get());
  service_ = std::make_unique<ControllerService>(
      ControllerService::Deps{.clock = options_.clock,
                              .registry = registry_.get(),
                              .heartbeats = heartbeats_.get(),
                              .tokens = tokens_.get(),
                              .ca = ca_.get(),
                              .agents = agents_.get(),
                              .prober = prober_.get(),
                              .rpc_executor = rpc_pool_.get(),
                              .probe_executor = probe_pool_.get(),
                              .groups = groups_.get(),
                              .controller_id = controller_id,
                              .fabric = fabric_.get(),
                              .bench = bench_.get(),
                              .stage = stage_.get(),
                              .stage_executor = stage_pool_.get(),
                              .routers = routers_.get()});
  builder.RegisterService(service_.get());
  // fleet-engine ranks call it without a client certificate (the TLS port accepts optional
  // ones); the generation's token is their credential.
  rendezvous_service_ = std::make_unique<RendezvousService>(rendezvous_.get(), options_.clock,
                                                            RendezvousService::Options{});
  builder.RegisterService(rendezvous_service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options_.listen,
        ": address in use or not local; pass a free --listen HOST:PORT (port 0 picks one)"));
  }
  address_ = JoinHostPort(host, static_cast<uint16_t>(port));
  RETURN_IF_ERROR(ServeHeartbeats(host, port));
  // With port 0 the advertised address is known only now.
  if (options_.advertise.empty() && !IsWildcardHost(host)) prober_->SetAdvertise(address_);
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/controller.addr"), address_ + "\n"));
  if (!options_.admin_config.empty()) {
    std::string pki = absl::StrCat(dir, "/pki");
    std::string reach = IsWildcardHost(host) ? absl::StrCat("127.0.0.1:", port) : address_;
    std::string text = absl::StrCat(
        "# Admin config of the SparkFleet controller in ", dir,
        "; FLEET_CONFIG=", options_.admin_config, " selects it.\ncontroller: ", reach,
        "\nca: ", pki, "/ca.crt\ncert: ", pki, "/admin.crt\nkey: ", pki, "/admin.key\n");
    RETURN_IF_ERROR(WriteFileAtomically(options_.admin_config, text, 0600));
  }

  if (!options_.metrics_listen.empty()) RETURN_IF_ERROR(ServeMetrics());

  ticker_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(TickPeriod(options_.registry))) {
      registry_->Tick();
      groups_->Tick();
      routers_->Tick();
      rendezvous_->Tick();
    }
  });
  if (options_.auto_adopt_period > absl::ZeroDuration()) {
    adopter_ = std::thread([this] {
      // Each round listens for a second; the rest of the period it waits.
      absl::Duration listen = std::min(absl::Seconds(1), options_.auto_adopt_period);
      do {
        prober_->AutoAdoptOnce(listen);
      } while (!stop_.WaitForNotificationWithTimeout(options_.auto_adopt_period - listen));
    });
  }
  Log(LogLevel::kInfo, "controller", "serving",
      {{"address", address_},
       {"state_dir", dir},
       {"controller_id", controller_id},
       {"ca_sha256", ca_->ca_sha256()},
       {"transport", transport_->Describe()}});
  return absl::OkStatus();
}

absl::Status ControllerServer::ServeMetrics() {
  auto snapshot = ScrapeTimeCollectable([this] {
    return ControllerSnapshot(registry_->List(), groups_->List(), heartbeats_->counters(),
                              options_.clock->Now());
  });
  ASSIGN_OR_RETURN(metrics_server_,
                   MetricsServer::Start(options_.metrics_listen, {metrics_->registry(), snapshot}));
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(options_.state_dir, "/metrics.addr"),
                                      metrics_server_->address() + "\n"));
  Log(LogLevel::kInfo, "controller", "serving metrics",
      {{"address", metrics_server_->address()}, {"path", "/metrics"}});
  return absl::OkStatus();
}

std::string ControllerServer::metrics_address() const {
  return metrics_server_ ? metrics_server_->address() : "";
}

absl::Status ControllerServer::ServeHeartbeats(const std::string& host, int port) {
  absl::StatusOr<UdpSocket> socket = BindHeartbeatSocket(host, port);
  if (!socket.ok()) {
    return absl::Status(socket.status().code(),
                        absl::StrCat("heartbeats are UDP datagrams to the gRPC port's number, an "
                                     "IPv4 one: ",
                                     socket.status().message()));
  }
  heartbeat_socket_.emplace(*std::move(socket));
  heartbeat_thread_ = std::thread([this] {
    // Wakes at least every 200 ms to notice Shutdown.
    while (!stop_.HasBeenNotified()) {
      absl::StatusOr<std::optional<Datagram>> datagram =
          heartbeat_socket_->Receive(absl::Milliseconds(200));
      if (!datagram.ok()) {
        Log(LogLevel::kError, "heartbeats", "receive failed",
            {{"error", datagram.status().ToString()}});
        stop_.WaitForNotificationWithTimeout(absl::Seconds(1));
        continue;
      }
      if (!datagram->has_value()) continue;
      std::optional<std::string> ack = heartbeats_->Handle((*datagram)->bytes);
      if (!ack) continue;
      // A lost ack is a lost heartbeat: the agent sends again.
      (void)heartbeat_socket_->SendTo((*datagram)->source_ip, (*datagram)->source_port, *ack);
    }
  });
  service_->SetHeartbeatPort(static_cast<uint16_t>(port));
  return absl::OkStatus();
}

void ControllerServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // Waiting rendezvous Gets are answered (Unavailable: ask again) so the server need not wait
  // for them to time out.
  if (rendezvous_) rendezvous_->Shutdown();
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  metrics_server_.reset();
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (ticker_.joinable()) ticker_.join();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (adopter_.joinable()) adopter_.join();
  // The RPC pools first: their calls may still hand work to the group pool.
  if (rpc_pool_) rpc_pool_->Shutdown();
  if (probe_pool_) probe_pool_->Shutdown();
  // A roll waits on group restarts: it stops at its next step, before the group pool goes.
  if (routers_) routers_->Shutdown();
  if (router_pool_) router_pool_->Shutdown();
  if (group_pool_) group_pool_->Shutdown();
  if (stage_pool_) stage_pool_->Shutdown();
  if (service_) service_->WaitForAgentCalls();
  if (!address_.empty()) Log(LogLevel::kInfo, "controller", "stopped", {{"address", address_}});
}

ControllerServer::~ControllerServer() {
  Shutdown();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

}  // namespace fleet::controller
