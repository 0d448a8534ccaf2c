// Starts, kills and queries the `fleet` daemons of a TestCluster.

#include "tests/integration/cluster_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/files.h"

namespace fleet::testing {
namespace {

// How often WaitFor() asks again.
constexpr absl::Duration kPollInterval = absl::Milliseconds(100);
// A controller opens SQLite and binds its port in milliseconds; the bound is for a loaded CI
// machine.
constexpr absl::Duration kControllerStartTimeout = absl::Seconds(10);
// SIGKILL takes effect at once; SIGTERM lets a daemon shut its gRPC server down, which waits at
// most 2 s for calls in flight.
constexpr absl::Duration kExitTimeout = absl::Seconds(10);
constexpr absl::Duration kNodesTimeout = absl::Seconds(10);

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

absl::Status ErrnoError(int err, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// A port nothing listens on at `ip` right now: the kernel's choice for a bind to port 0. Another
// process could take it before the daemon binds it, which the daemon then reports clearly.
absl::StatusOr<int> PickFreePort(const std::string& ip) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError(errno, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", ip));
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, absl::StrCat("bind ", ip, ":0"));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, "getsockname");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string Tail(const std::string& text, int lines) {
  std::vector<absl::string_view> all = absl::StrSplit(text, '\n', absl::SkipEmpty());
  size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = from; i < all.size(); ++i) absl::StrAppend(&out, "    ", all[i], "\n");
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestCluster>> TestCluster::Create(const TestNetwork& network,
                                                                 std::string fleet_binary) {
  if (network.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a TestCluster needs a host for the controller and at least one for an agent; the "
        "network has ",
        network.size()));
  }
  if (::access(fleet_binary.c_str(), X_OK) != 0) {
    return ErrnoError(errno, absl::StrCat("the fleet binary ", fleet_binary));
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/fleet-cluster-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) {
    return ErrnoError(errno, absl::StrCat("mkdtemp ", pattern));
  }
  std::unique_ptr<TestCluster> cluster(
      new TestCluster(network, std::move(fleet_binary), std::move(pattern)));
  if (absl::Status s = MakeDirectories(absl::StrCat(cluster->temp_dir_, "/logs"), 0700); !s.ok()) {
    return s;
  }

  const std::string& controller_ip = network.host(0).ip;
  int controller_port = kControllerPort;
  cluster->agent_ports_.assign(static_cast<size_t>(network.size()), kAgentPort);
  if (!network.isolated()) {
    absl::StatusOr<int> port = PickFreePort(controller_ip);
    if (!port.ok()) return port.status();
    controller_port = *port;
    for (int i = 1; i < network.size(); ++i) {
      absl::StatusOr<int> agent_port = PickFreePort(network.host(i).ip);
      if (!agent_port.ok()) return agent_port.status();
      cluster->agent_ports_[static_cast<size_t>(i)] = *agent_port;
    }
  }
  cluster->controller_address_ = absl::StrCat(controller_ip, ":", controller_port);
  cluster->agents_.resize(static_cast<size_t>(network.size()));
  return cluster;
}

TestCluster::TestCluster(const TestNetwork& network, std::string fleet_binary, std::string temp_dir)
    : network_(network), fleet_binary_(std::move(fleet_binary)), temp_dir_(std::move(temp_dir)) {}

TestCluster::~TestCluster() {
  // Process's destructor sends SIGKILL and reaps. Agents first, so none of them logs a lost
  // controller while the cluster is torn down.
  for (std::optional<Process>& agent : agents_) agent.reset();
  controller_.reset();
  std::error_code error;
  std::filesystem::remove_all(temp_dir_, error);
  if (error) {
    std::fprintf(stderr, "TestCluster: could not remove %s: %s\n", temp_dir_.c_str(),
                 error.message().c_str());
  }
}

std::string TestCluster::AgentName(int i) { return absl::StrCat("node-", i); }

std::string TestCluster::agent_address(int i) const {
  return absl::StrCat(network_.host(i).ip, ":", agent_ports_.at(static_cast<size_t>(i)));
}

std::string TestCluster::controller_state_dir() const {
  return absl::StrCat(temp_dir_, "/controller");
}

std::string TestCluster::agent_state_dir(int i) const {
  return absl::StrCat(temp_dir_, "/", AgentName(i));
}

std::string TestCluster::admin_config_path() const {
  return absl::StrCat(controller_state_dir(), "/admin.yaml");
}

std::string TestCluster::join_file(int i) const {
  return absl::StrCat(temp_dir_, "/join/", AgentName(i), ".token");
}

absl::StatusOr<std::string> TestCluster::AgentNodeId(int i) const {
  if (absl::Status s = CheckAgentIndex(i); !s.ok()) return s;
  absl::StatusOr<std::string> id = ReadFileToString(absl::StrCat(agent_state_dir(i), "/node_id"));
  if (!id.ok()) return id.status();
  return std::string(absl::StripAsciiWhitespace(*id));
}

std::string TestCluster::LogPath(const std::string& role) const {
  return absl::StrCat(temp_dir_, "/logs/", role, ".log");
}

absl::StatusOr<Process> TestCluster::StartDaemon(int host, const std::string& role,
                                                 std::vector<std::string> args,
                                                 std::vector<std::string> env) {
  args.insert(args.begin(), fleet_binary_);
  std::string log = LogPath(role);
  // A line between runs tells the restarts apart in the appended log.
  if (FILE* f = std::fopen(log.c_str(), "a"); f != nullptr) {
    std::fprintf(f, "==== TestCluster: %s\n", absl::StrJoin(args, " ").c_str());
    std::fclose(f);
  }
  // `ip netns exec` execs the command in place, so the pid is the daemon's own. The kernel
  // SIGTERMs the daemon if the test dies, and the network's destructor kills whatever is left in
  // its namespaces.
  absl::StatusOr<Process> process = Process::Start({.argv = network_.Wrap(host, std::move(args)),
                                                    .env = std::move(env),
                                                    .output_path = log,
                                                    .new_session = false,
                                                    .die_with_parent = true});
  if (!process.ok()) return process.status();
  StartedProcess started{role, process->pid(), 0};
  // A daemon that exited at once is a zombie until reaped and still has its /proc entry.
  if (absl::StatusOr<uint64_t> ticks = ProcessStartTicks(process->pid()); ticks.ok()) {
    started.start_ticks = *ticks;
  }
  started_.push_back(std::move(started));
  return process;
}

absl::Status TestCluster::StartController(const std::vector<std::string>& extra_flags) {
  if (ControllerRunning()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the controller already runs (pid ", controller_->pid(), ")"));
  }
  // The controller rewrites these files once it listens, the admin config last; a stale one
  // would end the wait early.
  const std::string addr_file = absl::StrCat(controller_state_dir(), "/controller.addr");
  const std::string admin_config = admin_config_path();
  ::unlink(addr_file.c_str());
  ::unlink(admin_config.c_str());
  std::vector<std::string> args = {"controller", "--state-dir", controller_state_dir(), "--listen",
                                   controller_address_};
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  absl::StatusOr<Process> process = StartDaemon(0, "controller", std::move(args));
  if (!process.ok()) return process.status();
  controller_ = *std::move(process);

  const absl::Time deadline = absl::Now() + kControllerStartTimeout;
  while (true) {
    if (ReadFileToString(addr_file).ok() && ReadFileToString(admin_config).ok()) {
      return absl::OkStatus();
    }
    if (!controller_->Running()) {
      absl::StatusOr<int> status = controller_->Wait(absl::ZeroDuration());
      return absl::AbortedError(
          absl::StrCat("the controller ", status.ok() ? DescribeWaitStatus(*status) : "exited",
                       " before it served; its log ends with:\n", LogTails(20)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the controller did not write ", addr_file, " and ", admin_config, " within ",
          absl::FormatDuration(kControllerStartTimeout), "; logs:\n", LogTails(20)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

absl::Status TestCluster::SignalDaemon(std::optional<Process>& process, const std::string& role,
                                       int signo) {
  if (!process.has_value() || !process->Running()) {
    return absl::FailedPreconditionError(absl::StrCat("the ", role, " does not run"));
  }
  return process->Signal(signo);
}

absl::StatusOr<int> TestCluster::KillDaemon(std::optional<Process>& process,
                                            const std::string& role, int signo) {
  if (absl::Status s = SignalDaemon(process, role, signo); !s.ok()) return s;
  absl::StatusOr<int> status = process->Wait(kExitTimeout);
  if (!status.ok()) {
    return absl::DeadlineExceededError(
        absl::StrCat("the ", role, " (pid ", process->pid(), ") still runs ",
                     absl::FormatDuration(kExitTimeout), " after signal ", signo));
  }
  return status;
}

absl::StatusOr<int> TestCluster::KillController(int signo) {
  return KillDaemon(controller_, "controller", signo);
}

absl::Status TestCluster::SignalController(int signo) {
  return SignalDaemon(controller_, "controller", signo);
}

absl::Status TestCluster::RestartController() {
  if (absl::StatusOr<int> status = KillController(SIGKILL); !status.ok()) return status.status();
  return StartController();
}

bool TestCluster::ControllerRunning() { return controller_.has_value() && controller_->Running(); }

pid_t TestCluster::controller_pid() const {
  return controller_.has_value() ? controller_->pid() : -1;
}

absl::Status TestCluster::CheckAgentIndex(int i) const {
  if (i < 1 || i > agent_count()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no agent ", i, "; agents are numbered 1 to ", agent_count()));
  }
  return absl::OkStatus();
}

absl::Status TestCluster::StartAgent(int i, const AgentStartOptions& options) {
  if (absl::Status s = CheckAgentIndex(i); !s.ok()) return s;
  std::optional<Process>& agent = agents_[static_cast<size_t>(i)];
  if (agent.has_value() && agent->Running()) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent ", i, " already runs (pid ", agent->pid(), ")"));
  }
  std::vector<std::string> args = {"agent"};
  if (options.with_controller) {
    args.insert(args.end(), {"--controller", controller_address_});
  }
  args.insert(args.end(), {"--state-dir", agent_state_dir(i), "--name", AgentName(i), "--listen",
                           agent_address(i), "--advertise", network_.host(i).ip});
  // A node certificate means the agent has joined: it needs no token any more.
  const bool joined =
      ::access(absl::StrCat(agent_state_dir(i), "/pki/node.crt").c_str(), F_OK) == 0;
  if (!joined) {
    if (::access(join_file(i).c_str(), F_OK) != 0) {
      absl::StatusOr<std::string> token = ClusterToken();
      if (!token.ok()) return token.status();
      if (absl::Status s = SetJoinToken(i, *token); !s.ok()) return s;
    }
    args.insert(args.end(), {"--join-file", join_file(i)});
  }
  if (!network_.isolated()) args.insert(args.end(), {"--discovery-listen", ""});
  args.insert(args.end(), options.extra_flags.begin(), options.extra_flags.end());
  absl::StatusOr<Process> process = StartDaemon(i, AgentName(i), std::move(args), options.env);
  if (!process.ok()) return process.status();
  agent = *std::move(process);
  return absl::OkStatus();
}

absl::StatusOr<int> TestCluster::KillAgent(int i, int signo) {
  if (absl::Status s = CheckAgentIndex(i); !s.ok()) return s;
  return KillDaemon(agents_[static_cast<size_t>(i)], AgentName(i), signo);
}

absl::StatusOr<int> TestCluster::WaitForAgentExit(int i, absl::Duration timeout) {
  if (absl::Status s = CheckAgentIndex(i); !s.ok()) return s;
  std::optional<Process>& agent = agents_[static_cast<size_t>(i)];
  if (!agent.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat("agent ", i, " was never started"));
  }
  absl::StatusOr<int> status = agent->Wait(timeout);
  if (!status.ok()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "agent ", i, " (pid ", agent->pid(), ") still runs after ", absl::FormatDuration(timeout)));
  }
  return status;
}

absl::Status TestCluster::SignalAgent(int i, int signo) {
  if (absl::Status s = CheckAgentIndex(i); !s.ok()) return s;
  return SignalDaemon(agents_[static_cast<size_t>(i)], AgentName(i), signo);
}

bool TestCluster::AgentRunning(int i) {
  if (!CheckAgentIndex(i).ok()) return false;
  std::optional<Process>& agent = agents_[static_cast<size_t>(i)];
  return agent.has_value() && agent->Running();
}

pid_t TestCluster::agent_pid(int i) const {
  if (!CheckAgentIndex(i).ok()) return -1;
  const std::optional<Process>& agent = agents_[static_cast<size_t>(i)];
  return agent.has_value() ? agent->pid() : -1;
}

absl::StatusOr<CommandResult> TestCluster::RunCli(const std::vector<std::string>& args,
                                                  absl::Duration timeout) const {
  return RunFleet(0, args, timeout);
}

absl::StatusOr<CommandResult> TestCluster::RunFleet(int host, const std::vector<std::string>& args,
                                                    absl::Duration timeout,
                                                    const std::vector<std::string>& env) const {
  // env(1) sets the variables inside the host's namespace; `ip netns exec` passes them on.
  std::vector<std::string> argv = {"env", absl::StrCat("FLEET_CONFIG=", admin_config_path())};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.push_back(fleet_binary_);
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(network_.Wrap(host, std::move(argv)), ToChrono(timeout));
}

absl::StatusOr<std::string> TestCluster::CreateToken(int64_t uses, absl::Duration ttl) const {
  std::vector<std::string> args = {
      "token",  "create",
      "--uses", absl::StrCat(uses),
      "--ttl",  ttl == absl::InfiniteDuration() ? "never" : absl::FormatDuration(ttl)};
  absl::StatusOr<CommandResult> result = RunCli(args);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::UnavailableError(absl::StrCat(
        "`fleet ", absl::StrJoin(args, " "), "` exited with status ", result->exit_code, ": ",
        absl::StripTrailingAsciiWhitespace(result->stderr_text)));
  }
  return std::string(absl::StripAsciiWhitespace(result->stdout_text));
}

absl::StatusOr<std::string> TestCluster::ClusterToken() {
  if (cluster_token_.empty()) {
    absl::StatusOr<std::string> token = CreateToken();
    if (!token.ok()) return token.status();
    cluster_token_ = *std::move(token);
  }
  return cluster_token_;
}

absl::Status TestCluster::SetJoinToken(int i, absl::string_view token) const {
  if (absl::Status s = CheckAgentIndex(i); !s.ok()) return s;
  if (absl::Status s = MakeDirectories(absl::StrCat(temp_dir_, "/join"), 0700); !s.ok()) return s;
  return WriteFileAtomically(join_file(i), absl::StrCat(token, "\n"), 0600);
}

absl::StatusOr<nlohmann::json> TestCluster::Nodes() const {
  absl::StatusOr<CommandResult> result = RunCli({"nodes", "-o", "json"}, kNodesTimeout);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::UnavailableError(
        absl::StrCat("`fleet nodes -o json` exited with status ", result->exit_code, ": ",
                     absl::StripTrailingAsciiWhitespace(result->stderr_text)));
  }
  nlohmann::json doc =
      nlohmann::json::parse(result->stdout_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("items") ||
      !doc["items"].is_array()) {
    return absl::DataLossError(
        absl::StrCat("`fleet nodes -o json` did not print an object with an \"items\" array: ",
                     result->stdout_text));
  }
  return doc;
}

bool TestCluster::WaitFor(const std::function<bool()>& predicate, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (predicate()) return true;
    absl::Time now = absl::Now();
    if (now >= deadline) return false;
    absl::SleepFor(std::min(kPollInterval, deadline - now));
  }
}

absl::StatusOr<std::string> TestCluster::ReadLog(const std::string& role) const {
  return ReadFileToString(LogPath(role));
}

std::string TestCluster::LogTails(int lines) const {
  std::vector<std::string> roles = {"controller"};
  for (int i = 1; i <= agent_count(); ++i) roles.push_back(AgentName(i));
  std::string out;
  for (const std::string& role : roles) {
    absl::StatusOr<std::string> text = ReadFileToString(LogPath(role));
    if (!text.ok()) continue;
    absl::StrAppend(&out, "--- ", LogPath(role), " (last ", lines, " lines):\n",
                    Tail(*text, lines));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TestNetwork>> CreateTestNetwork(int hosts) {
  TestNetworkOptions options;
  if (const char* fallback = std::getenv("FLEET_TEST_FALLBACK");
      fallback != nullptr && std::string(fallback) == "1") {
    options.use_namespaces = false;
  }
  absl::StatusOr<std::unique_ptr<TestNetwork>> network = TestNetwork::Create(hosts, options);
  if (network.ok() && !(*network)->isolated()) {
    std::printf("[ NOTE     ] no network namespaces (%s); hosts are 127.0.0.x addresses\n",
                (*network)->fallback_reason().c_str());
  }
  return network;
}

}  // namespace fleet::testing
