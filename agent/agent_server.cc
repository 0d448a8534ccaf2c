// AgentServer: wiring of the agent's components.
#include "agent/agent_server.h"

#include <filesystem>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/discovery/discovery_responder.h"
#include "agent/fabric/rdma_endpoints.h"
#include "agent/fabric/verbs_device_impl.h"
#include "agent/grpc/agent_service.h"
#include "agent/health/gpu_errors.h"
#include "agent/health/health_collector.h"
#include "agent/health/port_counters.h"
#include "agent/metrics/agent_metrics.h"
#include "agent/probes/gpu.h"
#include "agent/probes/limits.h"
#include "agent/probes/node_facts.h"
#include "agent/probes/probe_all.h"
#include "agent/probes/rdma.h"
#include "agent/router/router_admin.h"
#include "agent/session/controller_client_impl.h"
#include "agent/session/controller_session.h"
#include "agent/session/identity.h"
#include "agent/session/joiner.h"
#include "agent/session/node_credentials.h"
#include "agent/stage/image_stager.h"
#include "agent/stage/stage_endpoints.h"
#include "common/files.h"
#include "common/host_port.h"
#include "common/identity_names.h"
#include "common/log.h"
#include "common/metrics/metrics_server.h"
#include "common/pki.h"
#include "common/status_macros.h"
#include "common/version.h"
#include "common/wire/discovery_wire.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "launch/docker_run.h"

namespace fleet::agent {
namespace {

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::";
}

// Errors a later attempt may not see: the controller is away or slow.
bool Retryable(const absl::Status& st) {
  return absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st) || absl::IsInternal(st);
}

}  // namespace

AgentServer::AgentServer(AgentOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<AgentServer>> AgentServer::Start(AgentOptions options) {
  std::unique_ptr<AgentServer> server(new AgentServer(std::move(options)));
  RETURN_IF_ERROR(server->Init());
  return server;
}

absl::Status AgentServer::Init() {
  absl::StatusOr<HostPort> listen = ParseHostOptionalPort(options_.listen);
  if (!listen.ok())
    return absl::InvalidArgumentError(absl::StrCat("--listen ", listen.status().message()));
  absl::StatusOr<HostPort> advertise = ParseHostOptionalPort(options_.advertise);
  if (!advertise.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--advertise ", advertise.status().message()));
  }
  std::string listen_host = listen->host;
  std::string adv_host = advertise->host;
  if (adv_host.empty()) {
    if (IsWildcard(listen_host)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot tell the controller where to reach this agent: --listen ", options_.listen,
          " is a wildcard; pass --advertise with this node's fabric address"));
    }
    adv_host = listen_host;
  }
  if (IsWildcard(adv_host)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--advertise ", options_.advertise,
                     " is a wildcard; pass an address the controller can reach"));
  }
  advertise_host_ = adv_host;
  advertise_port_ = advertise->port;
  if (!options_.join_token.empty()) {
    ASSIGN_OR_RETURN(token_, ParseJoinToken(options_.join_token));
  }
  ASSIGN_OR_RETURN(identity_, LoadOrCreateIdentity(options_.state_dir, options_.name));
  metrics_ = std::make_unique<AgentMetrics>();
  // Shards first: the ones a previous agent started are re-adopted before anything else, so
  // they are reported at registration and never started twice.
  paths_ = engine::AgentPathsFor(HomeDirectory(), options_.state_dir);
  ASSIGN_OR_RETURN(supervisor_, Supervisor::Create({.state_dir = options_.state_dir,
                                                    .node_name = identity_.name(),
                                                    .home = paths_.home()}));
  supervisor_->SetOnChange([this] {
    absl::MutexLock lock(&wake_mu_);
    shards_changed_ = true;
  });
  if (!HaveCredentials(options_.state_dir) && !token_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", identity_.name(), " has not joined a cluster yet (no certificate in ",
                     options_.state_dir,
                     "/pki): give it a join token with --join-file FILE or "
                     "FLEET_JOIN_TOKEN; `fleet token create` on the controller makes one"));
  }
  if (options_.controller.empty()) {
    absl::StatusOr<std::string> remembered =
        ReadFileToString(absl::StrCat(options_.state_dir, "/controller"));
    if (remembered.ok()) options_.controller = std::string(absl::StripAsciiWhitespace(*remembered));
  }

  // Discovery: answered with an HMAC under the token's key, kept from the join so a restarted
  // agent still proves itself without the token.
  std::string key_path = absl::StrCat(options_.state_dir, "/discovery.key");
  std::string key;
  if (token_.has_value()) {
    key = discovery::DeriveKey(token_->secret);
    RETURN_IF_ERROR(WriteFileAtomically(key_path, key, 0600));
  } else if (absl::StatusOr<std::string> stored = ReadFileToString(key_path); stored.ok()) {
    key = *std::move(stored);
  }
  if (!options_.discovery_listen.empty() && !key.empty()) {
    absl::StatusOr<HostPort> udp = ParseHostPort(options_.discovery_listen);
    if (!udp.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--discovery-listen ", udp.status().message()));
    }
    const std::string& udp_host = udp->host;
    const uint16_t udp_port = udp->port;
    responder_ = std::make_unique<DiscoveryResponder>(DiscoveryResponderOptions{
        .key = key,
        .bind_ip = udp_host.empty() ? "0.0.0.0" : udp_host,
        .udp_port = static_cast<uint16_t>(udp_port),
        .join_multicast = IsWildcard(udp_host),
        .answer =
            [this] {
              v1::NodeFacts facts = ReadNodeFacts(options_.root);
              discovery::Answer answer;
              answer.node_id = identity_.node_id();
              answer.hostname = facts.hostname();
              absl::MutexLock lock(&mu_);
              answer.agent_port = agent_port_;
              answer.joined = joined_;
              // Fabric first: the answer drops interfaces from the end when it must.
              for (bool loopback : {false, true}) {
                for (const v1::NetworkInterface& itf : facts.interfaces()) {
                  if (itf.loopback() != loopback) continue;
                  answer.interfaces.push_back(
                      {.name = itf.name(),
                       .mtu = itf.mtu(),
                       .addresses = {itf.addresses().begin(), itf.addresses().end()}});
                }
              }
              answer.rdma_devices = {facts.rdma_devices().begin(), facts.rdma_devices().end()};
              return answer;
            },
        .on_adopt =
            [this](const std::string& controller) {
              absl::MutexLock lock(&mu_);
              if (!joined_) adopted_controller_ = controller;
            }});
    RETURN_IF_ERROR(responder_->Start());
  }
  // NVML's XID events reach only an event set registered before they happen: from the start,
  // for `fleet health` and the metrics alike.
  gpu_errors_ = options_.root == "/" ? OpenNvmlGpuErrors() : nullptr;
  if (!options_.metrics_listen.empty()) RETURN_IF_ERROR(ServeMetrics());
  main_ = std::thread([this] { Main(); });
  return absl::OkStatus();
}

v1::NodeProbe AgentServer::RunningFigures(const v1::ProbeRequest& request) const {
  ProbeContext ctx{.root = options_.root,
                   .live = options_.root == "/",
                   .node_name = identity_.name(),
                   .request = request};
  v1::NodeProbe probe;
  ProbeRdma(ctx, &probe);
  ProbeLimits(ctx, &probe);
  ProbeGpu(ctx, &probe);
  return probe;
}

absl::Status AgentServer::ServeMetrics() {
  // A scrape reads the running figures at most every 15 s.
  figures_ = std::make_unique<CachedProbe>(RealClock::Get(), absl::Seconds(15),
                                           [this] { return RunningFigures({}); });
  auto node = ScrapeTimeCollectable([this] {
    std::vector<prometheus::MetricFamily> out = NodeFigures(figures_->Get());
    std::vector<prometheus::MetricFamily> shards = ShardFigures(supervisor_->List());
    out.insert(out.end(), shards.begin(), shards.end());
    std::vector<prometheus::MetricFamily> ports = PortErrorFigures(ReadPortCounters(options_.root));
    out.insert(out.end(), ports.begin(), ports.end());
    if (gpu_errors_ != nullptr) {
      std::vector<prometheus::MetricFamily> gpus = GpuErrorFigures(gpu_errors_->Totals());
      out.insert(out.end(), gpus.begin(), gpus.end());
    }
    return out;
  });
  ASSIGN_OR_RETURN(metrics_server_,
                   MetricsServer::Start(options_.metrics_listen, {metrics_->registry(), node}));
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(options_.state_dir, "/metrics.addr"),
                                      metrics_server_->address() + "\n"));
  Log(LogLevel::kInfo, "agent", "serving metrics",
      {{"address", metrics_server_->address()}, {"path", "/metrics"}});
  return absl::OkStatus();
}

std::string AgentServer::metrics_address() const {
  return metrics_server_ ? metrics_server_->address() : "";
}

std::string AgentServer::AwaitController() {
  if (!options_.controller.empty()) return options_.controller;
  Log(LogLevel::kInfo, "agent", "no controller address; waiting to be adopted through discovery",
      {{"node", identity_.name()}});
  absl::MutexLock lock(&mu_);
  while (adopted_controller_.empty()) {
    mu_.Unlock();
    bool stopping = stop_.WaitForNotificationWithTimeout(absl::Milliseconds(100));
    mu_.Lock();
    if (stopping) return "";
  }
  return adopted_controller_;
}

absl::Status AgentServer::JoinWithRetries(const std::string& controller) {
  Backoff backoff(options_.backoff, std::random_device{}());
  std::string last;
  while (!stop_.HasBeenNotified()) {
    absl::Status st =
        JoinCluster(controller, *token_, identity_, options_.state_dir, absl::Seconds(5));
    if (st.ok()) {
      Log(LogLevel::kInfo, "agent", "joined the cluster",
          {{"node", identity_.name()}, {"controller", controller}});
      return absl::OkStatus();
    }
    if (!Retryable(st)) return st;
    if (st.ToString() != last) {
      Log(LogLevel::kWarning, "agent", "join failed; retrying with backoff",
          {{"error", st.ToString()}});
      last = st.ToString();
    }
    stop_.WaitForNotificationWithTimeout(backoff.Next());
  }
  return absl::CancelledError("stopping");
}

void AgentServer::Main() {
  std::string controller = AwaitController();
  if (controller.empty()) return;
  if (!HaveCredentials(options_.state_dir)) {
    if (absl::Status st = JoinWithRetries(controller); !st.ok()) {
      if (!absl::IsCancelled(st)) Fail(st);
      return;
    }
  }
  if (absl::Status st = CheckCredentials(options_.state_dir, identity_.node_id(), absl::Now());
      !st.ok()) {
    Fail(st);
    return;
  }
  if (absl::Status st = WriteFileAtomically(absl::StrCat(options_.state_dir, "/controller"),
                                            controller + "\n", 0600);
      !st.ok()) {
    Fail(st);
    return;
  }
  if (absl::Status st = Serve(controller); !st.ok()) Fail(st);
}

absl::Status AgentServer::Serve(const std::string& controller_address) {
  NodeCredentialPaths paths = CredentialPaths(options_.state_dir);
  // Re-read every second, so a renewed certificate is used without a restart.
  std::shared_ptr<TransportCredentials> transport = MutualTlsFromFiles(
      paths.ca, paths.key, paths.cert, ClientCertificates::kRequired, absl::Seconds(1));
  // Shard orders of up to four groups at once; two probes (each may hash a model); two file
  // reads (facts, logs), so a slow disk never delays a shard order.
  shard_executor_ = std::make_unique<ThreadPool>(4);
  probe_executor_ = std::make_unique<ThreadPool>(2);
  read_executor_ = std::make_unique<ThreadPool>(2);
  // A fabric test's receiver and sender at once (the controller gives a node one test at a
  // time), or the RDMA runs of a port's two devices with room for their prepare and finish calls.
  fabric_executor_ = std::make_unique<ThreadPool>(4);
  verbs_devices_ = std::make_unique<VerbsDevicesImpl>();
  rdma_ = std::make_unique<RdmaEndpoints>(verbs_devices_.get(), RealClock::Get());
  // A transfer holds up to two threads here (a send, or a finish waiting for its end) and a
  // scan or prepare may run beside it.
  stage_executor_ = std::make_unique<ThreadPool>(4);
  stage_ = std::make_unique<StageEndpoints>(
      StageOptions{.node_name = identity_.name(),
                   .prefix = options_.stage_prefix,
                   .cache_dir = absl::StrCat(options_.state_dir, "/stage-cache"),
                   .corrupt_chunks = options_.stage_test_corrupt_chunks,
                   .scan_chunk_delay = absl::Milliseconds(options_.stage_test_scan_chunk_ms)});
  // The docker CLI from PATH, so the engine is whatever DOCKER_HOST names, as for shards.
  images_ = std::make_unique<ImageStager>(
      ImageStagerOptions{.node_name = identity_.name(),
                         .fifo_dir = absl::StrCat(options_.state_dir, "/stage-images")});
  // Shards reach the controller as this agent does, and trust the same CA (by absolute path:
  // a container mounts it at that path, a process may run elsewhere).
  std::error_code ec;
  std::filesystem::path ca_path = std::filesystem::absolute(paths.ca, ec);
  router_admin_ = std::make_unique<RouterAdmin>(options_.state_dir, supervisor_.get());
  // `fleet health`: the running figures, fresh at each look, with the disk paths the controller
  // asks about.
  health_ = std::make_unique<HealthCollector>(HealthCollectorDeps{
      .clock = RealClock::Get(),
      .probe = [this](const v1::ProbeRequest& request) { return RunningFigures(request); },
      .read_ports = [this] { return ReadPortCounters(options_.root); },
      .gpus = gpu_errors_.get(),
      .shards = [this] { return supervisor_->List(); }});
  service_ = std::make_unique<AgentService>(
      identity_, options_.root, supervisor_.get(),
      AgentExecutors{.shards = shard_executor_.get(),
                     .probes = probe_executor_.get(),
                     .reads = read_executor_.get(),
                     .fabric = fabric_executor_.get(),
                     .stage = stage_executor_.get()},
      // Model hashes come from the staging manifests' cache, so a staged model is not re-read.
      absl::StrCat(options_.state_dir, "/stage-cache"), paths_,
      ControllerAccess{.address = controller_address,
                       .ca_path = ec ? paths.ca : ca_path.lexically_normal().string()},
      router_admin_.get(), stage_.get(), images_.get(), rdma_.get(), health_.get());
  grpc::ServerBuilder builder;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(metrics_->rpc().InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  int port = 0;
  builder.AddListeningPort(options_.listen, transport->ForServer(), &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen,
                     ": address in use or not on this node; pass a free --listen HOST:PORT"));
  }
  std::string advertise = JoinHostPort(
      advertise_host_, advertise_port_ == 0 ? static_cast<uint16_t>(port) : advertise_port_);
  {
    absl::MutexLock lock(&mu_);
    joined_ = true;
    agent_port_ = static_cast<uint16_t>(port);
  }
  v1::RegisterRequest registration;
  *registration.mutable_identity() = identity_;
  registration.set_advertise_address(advertise);
  registration.set_agent_version(kVersion);
  *registration.mutable_facts() = ReadNodeFacts(options_.root);
  *registration.mutable_probe() = RunProbes({.root = options_.root,
                                             .live = options_.root == "/",
                                             .node_name = identity_.name(),
                                             .agent = paths_});
  for (const std::string& missing : registration.facts().unavailable()) {
    Log(LogLevel::kInfo, "agent", "fact unavailable", {{"detail", missing}});
  }
  GrpcControllerClient grpc_controller(controller_address, *transport, absl::Seconds(2));
  MeasuredControllerClient controller(&grpc_controller, metrics_.get(), RealClock::Get());
  Log(LogLevel::kInfo, "agent", "serving",
      {{"node", identity_.name()},
       {"id", identity_.node_id()},
       {"advertise", advertise},
       {"controller", controller_address},
       {"transport", transport->Describe()}});
  ControllerSession session(&controller, std::move(registration), options_.backoff,
                            std::random_device{}(), [this] { return supervisor_->List(); });
  absl::Duration wait = absl::ZeroDuration();
  while (WaitForWork(wait, session.connected())) {
    wait = session.Step();
    if (session.connected()) RenewIfDue(controller);
  }
  return absl::OkStatus();
}

bool AgentServer::WaitForWork(absl::Duration wait, bool report_changes) {
  absl::MutexLock lock(&wake_mu_);
  auto ready = [&] {
    wake_mu_.AssertHeld();
    return stopping_ || (report_changes && shards_changed_);
  };
  wake_mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
  // A shard that changed state is reported now, not a heartbeat period later: apply waits on
  // it. While the controller is away the backoff stands.
  if (report_changes) shards_changed_ = false;
  return !stopping_;
}

void AgentServer::RenewIfDue(ControllerClient& controller) {
  absl::StatusOr<absl::Time> due = RenewalTime(options_.state_dir);
  if (!due.ok() || absl::Now() < *due) return;
  absl::StatusOr<std::string> key = pki::GeneratePrivateKey();
  if (!key.ok()) return;
  absl::StatusOr<std::string> csr = pki::CreateCsr(*key, NodeCommonName(identity_.node_id()));
  if (!csr.ok()) return;
  v1::RenewCertificateRequest request;
  request.set_csr_pem(*csr);
  absl::StatusOr<v1::RenewCertificateResponse> renewed = controller.RenewCertificate(request);
  absl::StatusOr<std::string> ca = ReadFileToString(CredentialPaths(options_.state_dir).ca);
  absl::Status st =
      !renewed.ok() ? renewed.status()
      : !ca.ok()    ? ca.status()
                    : InstallCredentials(options_.state_dir, *ca, *key, renewed->certificate_pem());
  if (st.ok()) {
    Log(LogLevel::kInfo, "agent", "certificate renewed", {{"node", identity_.name()}});
  } else {
    Log(LogLevel::kWarning, "agent", "certificate renewal failed; retrying",
        {{"error", st.ToString()}});
  }
}

void AgentServer::Fail(absl::Status status) {
  Log(LogLevel::kError, "agent", "cannot go on", {{"error", status.ToString()}});
  absl::MutexLock lock(&mu_);
  fatal_ = std::move(status);
}

std::optional<absl::Status> AgentServer::fatal_error() const {
  absl::MutexLock lock(&mu_);
  return fatal_;
}

void AgentServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  {
    absl::MutexLock lock(&wake_mu_);
    stopping_ = true;
  }
  if (main_.joinable()) main_.join();
  metrics_server_.reset();
  if (responder_) responder_->Stop();
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (shard_executor_) shard_executor_->Shutdown();
  if (probe_executor_) probe_executor_->Shutdown();
  if (read_executor_) read_executor_->Shutdown();
  if (fabric_executor_) fabric_executor_->Shutdown();
  if (stage_) stage_->Shutdown();
  if (images_) images_->Shutdown();
  if (stage_executor_) stage_executor_->Shutdown();
  // Shards keep running: the next agent re-adopts them.
  Log(LogLevel::kInfo, "agent", "stopped", {{"node", identity_.name()}});
}

AgentServer::~AgentServer() { Shutdown(); }

}  // namespace fleet::agent
