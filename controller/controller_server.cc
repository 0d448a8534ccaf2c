// ControllerServer: wiring of the controller's components.
#include "controller/controller_server.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/agent_client_impl.h"
#include "controller/controller_service.h"
#include "controller/sqlite_store.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace fleet::controller {
namespace {

// How often silent nodes are re-judged: a fifth of a heartbeat period keeps the Lost verdict
// within 200 ms of `lost_after` at the default 1 s period.
absl::Duration TickPeriod(const RegistryConfig& config) { return config.heartbeat_period / 5; }

// Splits "HOST:PORT" at the last colon ("[::1]:7100" keeps its brackets in HOST).
std::string HostOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

ControllerServer::ControllerServer(ControllerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    ControllerOptions options) {
  RETURN_IF_ERROR(ValidateRegistryConfig(options.registry));
  if (options.transport == nullptr) return absl::InvalidArgumentError("no transport credentials");
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
  registry_ = std::make_unique<NodeRegistry>(options_.registry, options_.clock, store_.get());
  RETURN_IF_ERROR(registry_->Load());
  agents_ = std::make_unique<GrpcAgentClient>(options_.transport, absl::Seconds(2));
  service_ = std::make_unique<ControllerService>(options_.clock, registry_.get(), agents_.get(),
                                                 controller_id);

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options_.listen, options_.transport->ForServer(), &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options_.listen,
        ": address in use or not local; pass a free --listen HOST:PORT (port 0 picks one)"));
  }
  address_ = absl::StrCat(HostOf(options_.listen), ":", port);
  RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(dir, "/controller.addr"), address_ + "\n"));

  ticker_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(TickPeriod(options_.registry))) {
      registry_->Tick();
    }
  });
  Log(LogLevel::kInfo, "controller", "serving",
      {{"address", address_},
       {"state_dir", dir},
       {"controller_id", controller_id},
       {"transport", options_.transport->Describe()}});
  return absl::OkStatus();
}

void ControllerServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (ticker_.joinable()) ticker_.join();
  if (service_) service_->WaitForAgentCalls();
  if (!address_.empty()) Log(LogLevel::kInfo, "controller", "stopped", {{"address", address_}});
}

ControllerServer::~ControllerServer() {
  Shutdown();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

}  // namespace fleet::controller
