// AgentServer: wiring of the agent's components.
#include "agent/agent_server.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "agent/agent_service.h"
#include "agent/controller_client_impl.h"
#include "agent/controller_session.h"
#include "agent/identity.h"
#include "agent/probes/node_facts.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/version.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace fleet::agent {
namespace {

// Splits "HOST:PORT" (or "[V6]:PORT") into host and port text; port is empty when absent.
std::pair<std::string, std::string> SplitHostPort(const std::string& address) {
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close != std::string::npos && close + 1 < address.size() && address[close + 1] == ':') {
      return {address.substr(0, close + 1), address.substr(close + 2)};
    }
    return {address, ""};
  }
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || address.find(':') != colon) return {address, ""};
  return {address.substr(0, colon), address.substr(colon + 1)};
}

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::";
}

}  // namespace

AgentServer::AgentServer(AgentOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<AgentServer>> AgentServer::Start(AgentOptions options) {
  if (options.transport == nullptr) return absl::InvalidArgumentError("no transport credentials");
  if (options.controller.empty()) {
    return absl::InvalidArgumentError("no controller address; pass --controller HOST:PORT");
  }
  std::unique_ptr<AgentServer> server(new AgentServer(std::move(options)));
  RETURN_IF_ERROR(server->Init());
  return server;
}

absl::Status AgentServer::Init() {
  auto [listen_host, listen_port] = SplitHostPort(options_.listen);
  auto [adv_host, adv_port] = SplitHostPort(options_.advertise);
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
  ASSIGN_OR_RETURN(identity_, LoadOrCreateIdentity(options_.state_dir, options_.name));

  service_ = std::make_unique<AgentService>(identity_, options_.root);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options_.listen, options_.transport->ForServer(), &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen,
                     ": address in use or not on this node; pass a free --listen HOST:PORT"));
  }
  advertise_ = absl::StrCat(adv_host, ":", adv_port.empty() ? absl::StrCat(port) : adv_port);

  v1::RegisterRequest registration;
  *registration.mutable_identity() = identity_;
  registration.set_advertise_address(advertise_);
  registration.set_agent_version(kVersion);
  *registration.mutable_facts() = ReadNodeFacts(options_.root);
  for (const std::string& missing : registration.facts().unavailable()) {
    Log(LogLevel::kInfo, "agent", "fact unavailable", {{"detail", missing}});
  }
  controller_ = std::make_unique<GrpcControllerClient>(options_.controller, *options_.transport,
                                                       absl::Seconds(2));
  Log(LogLevel::kInfo, "agent", "started",
      {{"node", identity_.name()},
       {"id", identity_.node_id()},
       {"advertise", advertise_},
       {"controller", options_.controller},
       {"transport", options_.transport->Describe()}});
  session_ = std::thread([this, registration = std::move(registration)]() mutable {
    ControllerSession session(controller_.get(), std::move(registration), options_.backoff,
                              std::random_device{}());
    absl::Duration wait = absl::ZeroDuration();
    while (!stop_.WaitForNotificationWithTimeout(wait)) wait = session.Step();
  });
  return absl::OkStatus();
}

void AgentServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (session_.joinable()) session_.join();
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  Log(LogLevel::kInfo, "agent", "stopped", {{"node", identity_.name()}});
}

AgentServer::~AgentServer() { Shutdown(); }

}  // namespace fleet::agent
