// Heartbeat benchmark: N simulated agents (the agent's own controller client: a gRPC channel and
// TCP connection each for joining, registering and shard reports, and signed UDP datagrams for
// heartbeats) heartbeat at 1 Hz against a real `fleet controller` process; reports its CPU, RSS,
// heartbeat latency and the time of `fleet nodes -o json`, each beside a reference measured in
// the same run. Run by hand (README.md); exits 0 only when every target is met and every
// correctness check passes.
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/session/controller_client_impl.h"
#include "common/files.h"
#include "common/host_port.h"
#include "common/identity_names.h"
#include "common/join_token.h"
#include "common/pki.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "common/table.h"
#include "common/transport.h"
#include "common/udp.h"
#include "common/wire/heartbeat_wire.h"
#include "fleet/v1/agent.grpc.pb.h"
#include "fleet/v1/controller.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

namespace fleet::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

// The issue's targets (controller CPU in fractions of one core).
constexpr double kCpuTarget = 0.10;
constexpr absl::Duration kP99Target = absl::Milliseconds(10);
constexpr absl::Duration kListTarget = absl::Milliseconds(200);

// Every RPC of the bench carries this deadline. A heartbeat's ack must come within the agent
// client's own 500 ms, else it counts as failed.
constexpr absl::Duration kRpcDeadline = absl::Seconds(5);
// How long a server process may take to write its controller.addr.
constexpr absl::Duration kStartTimeout = absl::Seconds(15);
constexpr std::chrono::nanoseconds kPeriod = std::chrono::seconds(1);
// Simulated nodes served by one echo Agent server (and named in its certificate).
constexpr size_t kNodesPerAgentServer = 25;

struct BenchFlags {
  int agents = 1000;
  // With the warm-up, long enough that every agent's periodic ReportShards call (a minute
  // after its registration) falls in the window.
  double seconds = 60;
  double warmup_seconds = 5;
  int driver_threads = 4;
  int list_runs = 5;
  std::string fleet = FLEET_BINARY;
  bool keep = false;
  std::string serve_raw;  // hidden: this process is the raw reference server
};

// ---------------------------------------------------------------------------------------------
// Servers that stand in for the parts the benchmark does not measure.

// The Agent service every simulated agent advertises. The controller calls Describe once per
// registration; the answer carries the expected node id, so every node becomes reachable.
class EchoAgentService final : public v1::Agent::CallbackService {
 public:
  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* context,
                                     const v1::DescribeRequest* request,
                                     v1::DescribeResponse* response) override {
    response->mutable_identity()->set_node_id(request->node_id());
    response->set_agent_version("heartbeat-bench");
    answered_->fetch_add(1, std::memory_order_relaxed);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  // Counts the answers in `answered`, which the services of several servers may share.
  explicit EchoAgentService(std::atomic<int>& answered) : answered_(&answered) {}

 private:
  std::atomic<int>* answered_;
};

// The cluster CA's files as the controller keeps them in STATE_DIR/pki.
struct PkiFiles {
  std::string ca_pem;
  pki::KeyAndCert ca;          // ca.key + ca.crt: the bench issues the echo agents' certificates
  pki::KeyAndCert controller;  // the controller's own credential: the reference serves it too
  pki::KeyAndCert admin;       // the CLI's admin credential: the bench's ListNodes calls
};

absl::StatusOr<pki::KeyAndCert> ReadPair(const std::string& dir, absl::string_view name) {
  ASSIGN_OR_RETURN(std::string key, ReadFileToString(absl::StrCat(dir, "/", name, ".key")));
  ASSIGN_OR_RETURN(std::string cert, ReadFileToString(absl::StrCat(dir, "/", name, ".crt")));
  return pki::KeyAndCert{std::move(key), std::move(cert)};
}

absl::StatusOr<PkiFiles> ReadPki(const std::string& dir) {
  PkiFiles files;
  ASSIGN_OR_RETURN(files.ca, ReadPair(dir, "ca"));
  files.ca_pem = files.ca.cert_pem;
  ASSIGN_OR_RETURN(files.controller, ReadPair(dir, "controller"));
  ASSIGN_OR_RETURN(files.admin, ReadPair(dir, "admin"));
  return files;
}

// `heartbeat_bench --serve-raw DIR`: the reference, a raw loop in its own process (as the
// controller runs in its own). One thread receives each heartbeat datagram on 127.0.0.1, parses
// it and answers an ack with verdict REGISTER (the one verdict that needs no session key), which
// is the least a server of this wire can do per beat: no registry, no key lookup, no signature
// check. Writes DIR/controller.addr like the controller does, and stops on SIGTERM.
int ServeRaw(const std::string& dir) {
  sigset_t stop;
  sigemptyset(&stop);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, s);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  absl::StatusOr<UdpSocket> socket = UdpSocket::Bind("127.0.0.1", 0);
  absl::Status st = socket.status();
  if (st.ok()) {
    st = WriteFileAtomically(absl::StrCat(dir, "/controller.addr"),
                             absl::StrCat("127.0.0.1:", socket->port(), "\n"));
  }
  if (!st.ok()) {
    std::cerr << "heartbeat_bench: raw server: " << st.message() << std::endl;
    return 1;
  }
  const timespec no_wait{};
  while (sigtimedwait(&stop, nullptr, &no_wait) < 0) {
    absl::StatusOr<std::optional<Datagram>> datagram = socket->Receive(absl::Milliseconds(200));
    if (!datagram.ok() || !datagram->has_value()) continue;
    absl::StatusOr<v1::HeartbeatDatagram> beat = heartbeat::ParseBeat((*datagram)->bytes);
    if (!beat.ok()) continue;
    v1::HeartbeatAck ack;
    ack.set_session(beat->session());
    ack.set_sequence(beat->sequence());
    ack.set_verdict(v1::HEARTBEAT_VERDICT_REGISTER);
    absl::StatusOr<std::string> reply = heartbeat::EncodeAck(ack, "");
    if (reply.ok()) (void)socket->SendTo((*datagram)->source_ip, (*datagram)->source_port, *reply);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// What the kernel says about a process.

// utime + stime of every thread of `pid`, in seconds.
absl::StatusOr<double> CpuSeconds(pid_t pid) {
  ASSIGN_OR_RETURN(ProcStat stat, ReadProcStat(pid));
  return static_cast<double>(stat.user_ticks + stat.system_ticks) /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The machine's CPU time from the first line of /proc/stat, in clock ticks summed over CPUs.
struct MachineTicks {
  uint64_t total = 0;
  uint64_t idle = 0;   // idle + iowait
  uint64_t steal = 0;  // taken by the hypervisor while this machine wanted to run
};

absl::StatusOr<MachineTicks> ReadMachineTicks() {
  ASSIGN_OR_RETURN(std::string stat, ReadFileToString("/proc/stat"));
  absl::string_view line = absl::string_view(stat).substr(0, stat.find('\n'));
  std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  // cpu user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
  if (fields.size() < 9 || fields[0] != "cpu") return absl::InternalError("malformed /proc/stat");
  MachineTicks t;
  for (size_t i = 1; i <= 8; ++i) {
    uint64_t v = 0;
    if (!absl::SimpleAtoi(fields[i], &v)) return absl::InternalError("malformed /proc/stat");
    t.total += v;
    if (i == 4 || i == 5) t.idle += v;
    if (i == 8) t.steal = v;
  }
  return t;
}

// VmRSS of /proc/PID/status, in bytes.
absl::StatusOr<uint64_t> RssBytes(pid_t pid) {
  ASSIGN_OR_RETURN(std::string status, ReadFileToString(absl::StrCat("/proc/", pid, "/status")));
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, "VmRSS:")) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    uint64_t kib = 0;
    if (parts.size() == 2 && parts[1] == "kB" && absl::SimpleAtoi(parts[0], &kib)) {
      return kib * 1024;
    }
  }
  return absl::InternalError(absl::StrCat("no VmRSS in /proc/", pid, "/status"));
}

// ---------------------------------------------------------------------------------------------
// Server processes and timed commands.

ProcessOptions ChildOptions(std::vector<std::string> argv, std::string output_path) {
  ProcessOptions options;
  options.argv = std::move(argv);
  options.output_path = std::move(output_path);
  options.die_with_parent = true;  // a killed bench leaves no server behind
  return options;
}

// A server process (the controller or the raw reference) and the address it listens on.
struct ServerProcess {
  Process process;
  std::string address;
};

// Starts `argv`, which must write STATE_DIR/controller.addr once it listens.
absl::StatusOr<ServerProcess> StartServer(std::vector<std::string> argv,
                                          const std::string& state_dir) {
  RETURN_IF_ERROR(MakeDirectories(state_dir, 0700));
  std::string log = absl::StrCat(state_dir, "/server.log");
  std::string addr_file = absl::StrCat(state_dir, "/controller.addr");
  ASSIGN_OR_RETURN(Process process, Process::Start(ChildOptions(argv, log)));
  for (absl::Time deadline = absl::Now() + kStartTimeout; absl::Now() < deadline;) {
    absl::StatusOr<std::string> addr = ReadFileToString(addr_file);
    if (addr.ok() && !addr->empty() && addr->back() == '\n') {
      addr->pop_back();
      return ServerProcess{std::move(process), *std::move(addr)};
    }
    if (!process.Running()) {
      return absl::FailedPreconditionError(
          absl::StrCat(argv[0], " exited before listening; see ", log));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat(argv[0], " wrote no ", addr_file, " within ",
                                                  absl::FormatDuration(kStartTimeout)));
}

// Runs `argv` to completion (stdout and stderr to `output_path`) and returns its wall time,
// from before fork to the moment the kernel reports the exit (Process::Wait polls the child's
// pidfd: no polling interval).
absl::StatusOr<absl::Duration> TimeCommand(const std::vector<std::string>& argv,
                                           const std::string& output_path,
                                           std::vector<std::string> env = {}) {
  std::error_code ignored;
  std::filesystem::remove(output_path, ignored);
  ProcessOptions options = ChildOptions(argv, output_path);
  options.env = std::move(env);
  absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(Process process, Process::Start(options));
  ASSIGN_OR_RETURN(int wait_status, process.Wait(kRpcDeadline * 2));
  absl::Time end = absl::Now();
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0) {
    absl::StatusOr<std::string> output = ReadFileToString(output_path);
    return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), " ",
                                            DescribeWaitStatus(wait_status), ": ",
                                            output.ok() ? output->substr(0, 500) : ""));
  }
  return end - start;
}

// ---------------------------------------------------------------------------------------------
// The simulated agents.

// What the agents saw while recording.
struct WindowStats {
  int64_t sent = 0;
  int64_t ok = 0;                   // answered with the phase's expected verdict
  int64_t failed = 0;               // no ack in time, or a send error
  int64_t unexpected = 0;           // answered with another verdict
  int64_t reports = 0;              // ReportShards calls the controller asked for (all succeeded)
  std::vector<int64_t> latency_ns;  // of every heartbeat answered as expected
  // Every answered heartbeat, in the order answered, for latencies.csv (--keep).
  struct Sample {
    int64_t sent_ns;  // since StartRecording
    int64_t latency_ns;
    int agent;
    bool ok;
  };
  std::vector<Sample> samples;
  std::string first_error;
  // How late the driver threads sent a heartbeat behind its schedule (the load generator's own
  // health: large values mean the 1 Hz pattern was not kept).
  SteadyClock::duration max_send_lateness{};
};

// A NodeFacts the size of a DGX Spark's, so the listing carries a realistic payload.
v1::NodeFacts SparkFacts(const std::string& name, int index) {
  v1::NodeFacts facts;
  facts.set_hostname(name);
  facts.set_cpu_count(20);
  facts.set_memory_total_bytes(128ull << 30);
  facts.set_memory_available_bytes(120ull << 30);
  facts.set_os("Ubuntu 24.04.2 LTS");
  facts.set_kernel("6.11.0-1016-nvidia");
  facts.set_arch("aarch64");
  const int a = index / 250;
  const int b = index % 250 + 1;
  struct Itf {
    const char* name;
    std::vector<std::string> addresses;
    uint32_t mtu;
  };
  for (const Itf& itf :
       std::vector<Itf>{{"lo", {"127.0.0.1/8", "::1/128"}, 65536},
                        {"enP7s7", {absl::StrFormat("10.0.%d.%d/16", a, b), "fe80::1/64"}, 1500},
                        {"enp1s0f0np0", {absl::StrFormat("192.168.%d.%d/24", 100 + a, b)}, 9000},
                        {"enp1s0f1np1", {absl::StrFormat("192.168.%d.%d/24", 200 + a, b)}, 9000},
                        {"wlP9s9", {}, 1500}}) {
    v1::NetworkInterface* out = facts.add_interfaces();
    out->set_name(itf.name);
    for (const std::string& address : itf.addresses) out->add_addresses(address);
    out->set_mtu(itf.mtu);
    out->set_operstate(itf.addresses.empty() ? "down" : "up");
    out->set_loopback(absl::string_view(itf.name) == "lo");
  }
  return facts;
}

// A simulated agent's identity and the node certificate it got by joining, as a real agent does.
struct AgentIdentity {
  std::string node_id;            // 32 hex digits
  std::string name;               // sim-0000, sim-0001, ...
  std::string advertise_address;  // its echo Agent server
  std::string key_pem;            // made here; only its CSR went to the controller
  std::string cert_pem;
};

// One Controller.Join, as agent/session/joiner.cc does it after the CA check: a new key, a CSR for
// it, and the token's id and secret. Checks that the certificate it gets is issued by the CA.
absl::Status JoinOne(v1::Controller::Stub& stub, const JoinToken& token, const std::string& ca_pem,
                     AgentIdentity& agent) {
  ASSIGN_OR_RETURN(agent.key_pem, pki::GeneratePrivateKey());
  ASSIGN_OR_RETURN(std::string csr, pki::CreateCsr(agent.key_pem, NodeCommonName(agent.node_id)));
  v1::JoinRequest request;
  request.set_token_id(token.id);
  request.set_token_secret(token.secret);
  request.mutable_identity()->set_node_id(agent.node_id);
  request.mutable_identity()->set_name(agent.name);
  request.set_csr_pem(csr);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
  v1::JoinResponse response;
  grpc::Status st = stub.Join(&context, request, &response);
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        absl::StrCat("join ", agent.name, ": ", st.error_message()));
  }
  agent.cert_pem = response.certificate_pem();
  return pki::VerifyIssuedBy(agent.cert_pem, ca_pem, absl::Now());
}

// Joins `agents` new nodes with distinct ids on `threads` threads, over TLS that verifies the
// controller against `ca_pem` (no client certificate yet); the first error.
absl::StatusOr<std::vector<AgentIdentity>> JoinAll(const std::string& controller_address,
                                                   const std::string& ca_pem,
                                                   const JoinToken& token, int agents,
                                                   int threads) {
  std::random_device rd;
  uint64_t salt = (static_cast<uint64_t>(rd()) << 32) | rd();
  std::vector<AgentIdentity> identities(static_cast<size_t>(agents));
  for (int i = 0; i < agents; ++i) {
    identities[static_cast<size_t>(i)].node_id = absl::StrFormat("%016x%016x", salt, i);
    identities[static_cast<size_t>(i)].name = absl::StrFormat("sim-%04d", i);
  }
  auto stub = v1::Controller::NewStub(MakeChannel(
      controller_address, *ServerAuthenticatedTls(ca_pem), {.server_name = kControllerServerName}));
  absl::Mutex mu;
  absl::Status first;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < identities.size();
           i += static_cast<size_t>(threads)) {
        absl::Status st = JoinOne(*stub, token, ca_pem, identities[i]);
        if (!st.ok()) {
          absl::MutexLock lock(&mu);
          if (first.ok()) first = st;
          return;
        }
      }
    });
  }
  for (std::thread& t : workers) t.join();
  if (!first.ok()) return first;
  return identities;
}

// N agents, each with the agent's own ControllerClient: its own channel, TCP connection and node
// certificate (mutual TLS) for Register and ReportShards, and its own UDP socket for heartbeat
// datagrams. They heartbeat at 1 Hz with phases spread evenly over the second, as a real agent's
// ControllerSession does: a beat answered REPORT_SHARDS is followed at once by a ReportShards
// call. A few driver threads send; each beat blocks its thread until its ack.
//
// Example:
//   SimulatedFleet fleet(controller_address, identities, ca_pem, 4, v1::HEARTBEAT_VERDICT_OK);
//   RETURN_IF_ERROR(fleet.RegisterAll());
//   fleet.StartHeartbeats();
//   fleet.StartRecording(); ... fleet.EndRecording(); WindowStats s = fleet.CollectRecording();
//   fleet.Stop();
class SimulatedFleet {
 public:
  // `expected`: the verdict a beat is answered with when all is well (OK from the controller,
  // REGISTER from the raw reference). Without RegisterAll, beats go to `port` with a made-up
  // session and key (the reference does not check them).
  SimulatedFleet(const std::string& controller_address,
                 const std::vector<AgentIdentity>& identities, const std::string& ca_pem,
                 int driver_threads, v1::HeartbeatVerdict expected, uint16_t port = 0)
      : driver_threads_(driver_threads), expected_(expected) {
    agents_.resize(identities.size());
    for (size_t i = 0; i < identities.size(); ++i) {
      Agent& agent = agents_[i];
      agent.node_id = identities[i].node_id;
      agent.name = identities[i].name;
      agent.advertise_address = identities[i].advertise_address;
      agent.port = port;
      agent.session = i + 1;
      agent.key = std::string(heartbeat::kKeySize, 'k');
      std::shared_ptr<TransportCredentials> transport = MutualTls(
          ca_pem, identities[i].key_pem, identities[i].cert_pem, ClientCertificates::kOptional);
      // One TCP connection per agent, as on a real cluster.
      agent.client = std::make_unique<agent::GrpcControllerClient>(
          controller_address, *transport, kRpcDeadline, /*own_connection=*/true);
    }
  }
  ~SimulatedFleet() { Stop(); }
  SimulatedFleet(const SimulatedFleet&) = delete;
  SimulatedFleet& operator=(const SimulatedFleet&) = delete;

  // Registers every agent (blocking calls, spread over the driver threads); the first error.
  absl::Status RegisterAll() {
    absl::Mutex mu;
    absl::Status first;
    std::vector<std::thread> threads;
    for (int t = 0; t < driver_threads_; ++t) {
      threads.emplace_back([&, t] {
        for (size_t i = static_cast<size_t>(t); i < agents_.size();
             i += static_cast<size_t>(driver_threads_)) {
          absl::Status st = Register(agents_[i], static_cast<int>(i));
          if (!st.ok()) {
            absl::MutexLock lock(&mu);
            if (first.ok()) first = st;
            return;
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    return first;
  }

  void StartHeartbeats() {
    SteadyClock::time_point epoch = SteadyClock::now() + std::chrono::milliseconds(50);
    for (int t = 0; t < driver_threads_; ++t) {
      drivers_.emplace_back([this, t, epoch] { Drive(t, epoch); });
    }
  }

  void StartRecording() {
    absl::MutexLock lock(&mu_);
    stats_ = WindowStats();
    recording_ = true;
    recording_start_ = SteadyClock::now();
  }
  // Heartbeats sent from now on are not recorded.
  void EndRecording() {
    absl::MutexLock lock(&mu_);
    recording_ = false;
  }
  WindowStats CollectRecording() {
    absl::MutexLock lock(&mu_);
    return std::move(stats_);
  }

  // Stops sending; a beat in progress ends within the client's 500 ms ack timeout.
  void Stop() {
    stopping_.store(true);
    for (std::thread& t : drivers_) t.join();
    drivers_.clear();
  }

 private:
  struct Agent {
    std::string node_id;
    std::string name;
    std::string advertise_address;
    std::unique_ptr<agent::GrpcControllerClient> client;
    // The heartbeat session of the registration. Touched only by the agent's driver thread.
    uint16_t port = 0;
    uint64_t session = 0;
    std::string key;
    uint64_t sequence = 0;
  };

  absl::Status Register(Agent& agent, int index) {
    v1::RegisterRequest request;
    request.mutable_identity()->set_node_id(agent.node_id);
    request.mutable_identity()->set_name(agent.name);
    request.set_advertise_address(agent.advertise_address);
    request.set_agent_version("heartbeat-bench");
    *request.mutable_facts() = SparkFacts(agent.name, index);
    absl::StatusOr<v1::RegisterResponse> response = agent.client->Register(request);
    if (!response.ok()) {
      return absl::Status(response.status().code(),
                          absl::StrCat("register ", agent.name, ": ", response.status().message()));
    }
    if (response->heartbeat_period_ms() != 1000) {
      return absl::FailedPreconditionError(
          absl::StrCat("the server asks for a heartbeat every ", response->heartbeat_period_ms(),
                       " ms; the benchmark simulates 1 Hz (start it with the default period)"));
    }
    agent.port = static_cast<uint16_t>(response->heartbeat_port());
    agent.session = response->heartbeat_session();
    agent.key = response->heartbeat_key();
    return absl::OkStatus();
  }

  // Driver thread `t` sends for agents t, t+T, t+2T, ...; agent i's phase is i/N of a second.
  void Drive(int t, SteadyClock::time_point epoch) {
    const size_t n = agents_.size();
    for (int64_t round = 0;; ++round) {
      for (size_t i = static_cast<size_t>(t); i < n; i += static_cast<size_t>(driver_threads_)) {
        SteadyClock::time_point due =
            epoch + round * kPeriod + kPeriod * static_cast<int64_t>(i) / static_cast<int64_t>(n);
        std::this_thread::sleep_until(due);
        if (stopping_.load()) return;
        Beat(agents_[i], SteadyClock::now() - due);
      }
    }
  }

  void Beat(Agent& agent, SteadyClock::duration lateness) {
    v1::HeartbeatDatagram beat;
    beat.set_node_id(agent.node_id);
    beat.set_session(agent.session);
    beat.set_sequence(++agent.sequence);
    const SteadyClock::time_point sent = SteadyClock::now();
    absl::StatusOr<v1::HeartbeatVerdict> verdict =
        agent.client->Heartbeat(beat, agent.key, agent.port);
    const SteadyClock::duration latency = SteadyClock::now() - sent;
    const bool ok = verdict.ok() &&
                    (*verdict == expected_ || (expected_ == v1::HEARTBEAT_VERDICT_OK &&
                                               *verdict == v1::HEARTBEAT_VERDICT_REPORT_SHARDS));
    absl::Status report;
    if (verdict.ok() && *verdict == v1::HEARTBEAT_VERDICT_REPORT_SHARDS) {
      // As the agent does: the (empty) shard list at once, over gRPC.
      v1::ReportShardsRequest request;
      request.set_node_id(agent.node_id);
      absl::StatusOr<v1::ReportShardsResponse> r = agent.client->ReportShards(request);
      report = !r.ok()           ? r.status()
               : r->reregister() ? absl::FailedPreconditionError("report answered reregister")
                                 : absl::OkStatus();
    }
    absl::MutexLock lock(&mu_);
    if (!recording_ || sent < recording_start_) return;
    ++stats_.sent;
    stats_.max_send_lateness = std::max(stats_.max_send_lateness, lateness);
    const int64_t latency_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count();
    if (!verdict.ok()) {
      ++stats_.failed;
      if (stats_.first_error.empty()) stats_.first_error = verdict.status().ToString();
    } else if (!ok) {
      ++stats_.unexpected;
      if (stats_.first_error.empty()) {
        stats_.first_error = absl::StrCat("verdict ", v1::HeartbeatVerdict_Name(*verdict));
      }
    } else {
      ++stats_.ok;
      stats_.latency_ns.push_back(latency_ns);
    }
    if (verdict.ok() && *verdict == v1::HEARTBEAT_VERDICT_REPORT_SHARDS) {
      ++stats_.reports;
      if (!report.ok()) {
        ++stats_.failed;
        if (stats_.first_error.empty()) stats_.first_error = report.ToString();
      }
    }
    stats_.samples.push_back(
        {std::chrono::duration_cast<std::chrono::nanoseconds>(sent - recording_start_).count(),
         latency_ns, static_cast<int>(&agent - agents_.data()), ok});
  }

  const int driver_threads_;
  const v1::HeartbeatVerdict expected_;
  std::vector<Agent> agents_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> drivers_;
  absl::Mutex mu_;
  bool recording_ ABSL_GUARDED_BY(mu_) = false;
  SteadyClock::time_point recording_start_ ABSL_GUARDED_BY(mu_);
  WindowStats stats_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------------------------
// One phase: the simulated fleet against one server process.

struct PhaseResult {
  absl::Duration join;  // Controller.Join of every agent (the controller phase only)
  absl::Duration registration;
  absl::Duration window;
  double server_cpu = 0;  // fraction of one core over the window
  double bench_cpu = 0;   // this process (the simulated agents), fraction of one core
  uint64_t server_rss = 0;
  double machine_busy = 0;  // all CPUs, fraction of their time (1.0: every CPU busy)
  double steal = 0;         // fraction of all CPUs' time taken by the hypervisor
  WindowStats stats;
};

// One line per answered heartbeat of the window: when it was sent, its latency, which agent.
absl::Status WriteSamples(const WindowStats& stats, const std::string& path) {
  std::string csv = "sent_ms,latency_ms,agent,ok\n";
  for (const WindowStats::Sample& s : stats.samples) {
    absl::StrAppendFormat(&csv, "%.3f,%.3f,%d,%d\n", s.sent_ns / 1e6, s.latency_ns / 1e6, s.agent,
                          s.ok ? 1 : 0);
  }
  return WriteFileAtomically(path, csv);
}

// With `expected` OK (the controller): registers the fleet and waits for a call-back to each
// echo agent. With REGISTER (the raw reference): beats go straight to the server's port. Then
// warms up, records one window, and runs `while_running` with the fleet still heartbeating.
absl::StatusOr<PhaseResult> RunPhase(const BenchFlags& flags, const ServerProcess& server,
                                     const std::vector<AgentIdentity>& identities,
                                     const std::string& ca_pem, const std::atomic<int>& describes,
                                     v1::HeartbeatVerdict expected, const std::string& samples_path,
                                     const std::function<absl::Status()>& while_running) {
  PhaseResult result;
  const bool controller = expected == v1::HEARTBEAT_VERDICT_OK;
  int port = 0;
  if (absl::StatusOr<HostPort> parsed = ParseHostPort(server.address); parsed.ok()) {
    port = parsed->port;
  } else {
    return absl::InternalError(absl::StrCat("no port in the server address ", server.address));
  }
  SimulatedFleet fleet(server.address, identities, ca_pem, flags.driver_threads, expected,
                       static_cast<uint16_t>(port));
  const int describes_before = describes.load();
  const int expected_describes = controller ? flags.agents : 0;
  absl::Time start = absl::Now();
  if (controller) RETURN_IF_ERROR(fleet.RegisterAll());
  result.registration = absl::Now() - start;
  for (absl::Time deadline = absl::Now() + kRpcDeadline * 2;
       describes.load() - describes_before < expected_describes;) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the server called back ", describes.load() - describes_before, " of ",
          expected_describes, " agents within ", absl::FormatDuration(kRpcDeadline * 2)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  fleet.StartHeartbeats();
  absl::SleepFor(absl::Seconds(flags.warmup_seconds));

  const pid_t pid = server.process.pid();
  ASSIGN_OR_RETURN(double server_cpu0, CpuSeconds(pid));
  ASSIGN_OR_RETURN(double bench_cpu0, CpuSeconds(::getpid()));
  ASSIGN_OR_RETURN(MachineTicks machine0, ReadMachineTicks());
  absl::Time t0 = absl::Now();
  fleet.StartRecording();
  absl::SleepFor(absl::Seconds(flags.seconds));
  fleet.EndRecording();
  absl::Time t1 = absl::Now();
  ASSIGN_OR_RETURN(double server_cpu1, CpuSeconds(pid));
  ASSIGN_OR_RETURN(double bench_cpu1, CpuSeconds(::getpid()));
  ASSIGN_OR_RETURN(MachineTicks machine1, ReadMachineTicks());
  ASSIGN_OR_RETURN(result.server_rss, RssBytes(pid));
  result.window = t1 - t0;
  const double wall = absl::ToDoubleSeconds(result.window);
  result.server_cpu = (server_cpu1 - server_cpu0) / wall;
  result.bench_cpu = (bench_cpu1 - bench_cpu0) / wall;
  const double ticks = static_cast<double>(std::max<uint64_t>(machine1.total - machine0.total, 1));
  result.machine_busy =
      static_cast<double>((machine1.total - machine0.total) - (machine1.idle - machine0.idle) -
                          (machine1.steal - machine0.steal)) /
      ticks;
  result.steal = static_cast<double>(machine1.steal - machine0.steal) / ticks;
  result.stats = fleet.CollectRecording();
  RETURN_IF_ERROR(WriteSamples(result.stats, samples_path));
  std::sort(result.stats.latency_ns.begin(), result.stats.latency_ns.end());
  RETURN_IF_ERROR(while_running());
  fleet.Stop();
  return result;
}

// ---------------------------------------------------------------------------------------------
// The listing.

struct ListingResult {
  std::vector<absl::Duration> cli;      // `fleet nodes -o json`
  std::vector<absl::Duration> version;  // `fleet version`: process start and exit, the reference
  std::vector<absl::Duration> rpc;      // ListNodes from this process: the controller's share
  int items = 0;
  int ready = 0;
  int reachable = 0;
  int names_expected = 0;  // items named sim-0000.. exactly once each
  std::string problem;     // why the JSON check failed, if it did
};

absl::Duration Median(std::vector<absl::Duration> v) {
  if (v.empty()) return absl::ZeroDuration();
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

absl::Duration Max(const std::vector<absl::Duration>& v) {
  return v.empty() ? absl::ZeroDuration() : *std::max_element(v.begin(), v.end());
}

// Checks the JSON of `fleet nodes -o json`: every simulated agent listed once, Ready, reachable.
void CheckNodeList(const std::string& text, int agents, ListingResult& out) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("items") ||
      !doc["items"].is_array()) {
    out.problem = absl::StrCat("output is not a NodeList: ", text.substr(0, 200));
    return;
  }
  std::set<std::string> names;
  for (const nlohmann::json& item : doc["items"]) {
    ++out.items;
    if (item.value("state", "") == "Ready") ++out.ready;
    if (item.value("reachable", false)) ++out.reachable;
    names.insert(item.value("name", ""));
  }
  for (int i = 0; i < agents; ++i) {
    if (names.count(absl::StrFormat("sim-%04d", i)) != 0) ++out.names_expected;
  }
  if (out.items != agents || out.ready != agents || out.reachable != agents ||
      out.names_expected != agents) {
    out.problem = absl::StrCat("expected ", agents, " nodes sim-0000.. Ready and reachable; got ",
                               out.items, " items, ", out.ready, " Ready, ", out.reachable,
                               " reachable, ", out.names_expected, " expected names");
  }
}

// Times the listing as the admin does it: the CLI with the admin config the controller wrote, and
// ListNodes from here with the admin's certificate.
absl::Status MeasureListing(const BenchFlags& flags, const std::string& address,
                            const std::string& admin_config, const PkiFiles& pki_files,
                            const std::string& dir, ListingResult& out) {
  std::string scratch = absl::StrCat(dir, "/cli-output");
  for (int i = 0; i < flags.list_runs; ++i) {
    ASSIGN_OR_RETURN(absl::Duration d, TimeCommand({flags.fleet, "version"}, scratch));
    out.version.push_back(d);
  }
  std::shared_ptr<TransportCredentials> admin =
      MutualTls(pki_files.ca_pem, pki_files.admin.key_pem, pki_files.admin.cert_pem,
                ClientCertificates::kOptional);
  auto stub =
      v1::Controller::NewStub(MakeChannel(address, *admin, {.server_name = kControllerServerName}));
  for (int i = 0; i < flags.list_runs; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
    v1::ListNodesResponse response;
    absl::Time start = absl::Now();
    grpc::Status st = stub->ListNodes(&context, v1::ListNodesRequest(), &response);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("ListNodes: ", st.error_message()));
    out.rpc.push_back(absl::Now() - start);
  }
  std::string json_path = absl::StrCat(dir, "/nodes.json");
  for (int i = 0; i < flags.list_runs; ++i) {
    ASSIGN_OR_RETURN(absl::Duration d, TimeCommand({flags.fleet, "nodes", "-o", "json"}, json_path,
                                                   {absl::StrCat("FLEET_CONFIG=", admin_config)}));
    out.cli.push_back(d);
  }
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(json_path));
  CheckNodeList(text, flags.agents, out);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// The report.

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::Duration Percentile(const std::vector<int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return absl::ZeroDuration();
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted_ns.size())));
  return absl::Nanoseconds(sorted_ns[std::max<size_t>(rank, 1) - 1]);
}

std::string FormatMs(absl::Duration d) { return absl::StrFormat("%.2f ms", Ms(d)); }
std::string FormatPct(double f) { return absl::StrFormat("%.1f%%", 100 * f); }
std::string FormatRatio(double a, double b) {
  return b > 0 ? absl::StrFormat("%.2fx", a / b) : "-";
}
std::string Verdict(bool pass) { return pass ? "PASS" : "FAIL"; }

bool AllAnswered(const WindowStats& s) {
  return s.sent > 0 && s.ok == s.sent && s.failed == 0 && s.unexpected == 0;
}

std::string Answered(const WindowStats& s) {
  std::string text = absl::StrCat(s.ok, "/", s.sent);
  if (s.failed > 0) absl::StrAppend(&text, " (", s.failed, " failed)");
  if (s.unexpected > 0) absl::StrAppend(&text, " (", s.unexpected, " unexpected verdicts)");
  return text;
}

// Prints the table; returns whether every target and check passed.
bool Report(const BenchFlags& flags, const PhaseResult& ctl, const PhaseResult& raw,
            const ListingResult& list) {
  const WindowStats& c = ctl.stats;
  const WindowStats& r = raw.stats;
  absl::Duration c50 = Percentile(c.latency_ns, 0.50), r50 = Percentile(r.latency_ns, 0.50);
  absl::Duration c99 = Percentile(c.latency_ns, 0.99), r99 = Percentile(r.latency_ns, 0.99);
  absl::Duration cmax = Percentile(c.latency_ns, 1.0), rmax = Percentile(r.latency_ns, 1.0);
  auto lateness = [](const WindowStats& s) { return absl::FromChrono(s.max_send_lateness); };

  const bool cpu_ok = ctl.server_cpu < kCpuTarget;
  const bool p99_ok = c99 < kP99Target && !c.latency_ns.empty();
  const bool answered_ok = AllAnswered(c) && AllAnswered(r);
  const bool list_ok = !list.cli.empty() && Max(list.cli) < kListTarget;
  const bool nodes_ok = list.problem.empty();

  std::cout << absl::StrFormat(
      "heartbeat_bench: %d agents x 1 Hz, %.0f s window after %.0f s warm-up, %u CPUs, gRPC %s\n\n",
      flags.agents, absl::ToDoubleSeconds(ctl.window), flags.warmup_seconds,
      std::thread::hardware_concurrency(), grpc::Version());
  Table table({"METRIC", "CONTROLLER", "REFERENCE", "RATIO", "TARGET", "RESULT"});
  table.AddRow({"server CPU (of one core)", FormatPct(ctl.server_cpu), FormatPct(raw.server_cpu),
                FormatRatio(ctl.server_cpu, raw.server_cpu), "< 10%", Verdict(cpu_ok)});
  table.AddRow({"heartbeat latency p50", FormatMs(c50), FormatMs(r50),
                FormatRatio(Ms(c50), Ms(r50)), "", ""});
  table.AddRow({"heartbeat latency p99", FormatMs(c99), FormatMs(r99),
                FormatRatio(Ms(c99), Ms(r99)), "< 10 ms", Verdict(p99_ok)});
  table.AddRow({"heartbeat latency max", FormatMs(cmax), FormatMs(rmax), "", "", ""});
  table.AddRow(
      {"heartbeats answered OK/sent", Answered(c), Answered(r), "", "all", Verdict(answered_ok)});
  table.AddRow({"shard reports asked for (gRPC)", absl::StrCat(c.reports), "", "", "", ""});
  table.AddRow(
      {"server RSS at end", absl::StrFormat("%.1f MiB", ctl.server_rss / 1048576.0),
       absl::StrFormat("%.1f MiB", raw.server_rss / 1048576.0),
       FormatRatio(static_cast<double>(ctl.server_rss), static_cast<double>(raw.server_rss)), "",
       ""});
  table.AddRow({"bench CPU (simulated agents)", FormatPct(ctl.bench_cpu), FormatPct(raw.bench_cpu),
                "", "", ""});
  // What else ran on the machine meanwhile (builds, other benchmarks): figures taken while it
  // was large are not comparable.
  auto others = [](const PhaseResult& p) {
    return std::max(
        0.0, p.machine_busy * std::thread::hardware_concurrency() - p.server_cpu - p.bench_cpu);
  };
  table.AddRow({"other processes (of one core)", FormatPct(others(ctl)), FormatPct(others(raw)), "",
                "", ""});
  table.AddRow(
      {"hypervisor steal (all cores)", FormatPct(ctl.steal), FormatPct(raw.steal), "", "", ""});
  table.AddRow(
      {"driver max send lateness", FormatMs(lateness(c)), FormatMs(lateness(r)), "", "", ""});
  table.AddRow({"join of all agents (certificates)", FormatMs(ctl.join), "", "", "", ""});
  table.AddRow({"registration of all agents", FormatMs(ctl.registration),
                FormatMs(raw.registration), "", "", ""});
  table.AddRow({"fleet nodes -o json, median", FormatMs(Median(list.cli)),
                FormatMs(Median(list.version)),
                FormatRatio(Ms(Median(list.cli)), Ms(Median(list.version))), "", ""});
  table.AddRow({"fleet nodes -o json, max", FormatMs(Max(list.cli)), FormatMs(Max(list.version)),
                "", "< 200 ms", Verdict(list_ok)});
  table.AddRow({"ListNodes RPC alone, median", FormatMs(Median(list.rpc)), "", "", "", ""});
  table.AddRow({"nodes listed Ready, reachable",
                absl::StrCat(list.ready, "/", list.items, ", ", list.reachable, " reachable"), "",
                "", absl::StrCat(flags.agents, "/", flags.agents), Verdict(nodes_ok)});
  std::cout << table.Render() << "\n";
  std::cout << absl::StrFormat(
      "REFERENCE: heartbeat rows: a raw UDP loop in its own process (receive, parse, answer an\n"
      "unsigned ack; no registry, no signature check), hit by the same %d clients on the same\n"
      "schedule. The controller phase is the real thing: every agent joined (its own node\n"
      "certificate), registered over mutual TLS on its own connection, signs each datagram with\n"
      "its session key, and answers a REPORT_SHARDS verdict with a ReportShards call. Listing\n"
      "rows: `fleet version` (start and exit of the same binary). Latency is measured in the\n"
      "simulated agents, send to verified ack; the bench and the servers share this machine's\n"
      "CPUs. Listing runs %d times while the agents keep heartbeating.\n",
      flags.agents, flags.list_runs);
  if (!c.first_error.empty())
    std::cout << "controller: first failed heartbeat: " << c.first_error << "\n";
  if (!r.first_error.empty())
    std::cout << "reference: first failed heartbeat: " << r.first_error << "\n";
  if (!nodes_ok) std::cout << "node list: " << list.problem << "\n";
  const bool pass = cpu_ok && p99_ok && answered_ok && list_ok && nodes_ok;
  std::cout << (pass ? "PASS" : "FAIL") << std::endl;
  return pass;
}

// ---------------------------------------------------------------------------------------------

std::string SelfExecutable() {
  std::error_code ec;
  std::filesystem::path path = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "heartbeat_bench" : path.string();
}

// Each simulated agent holds a TCP and a UDP socket here and the server one TCP socket per
// agent; the controller also holds one connection per node to the echo agents, which hold the
// other end here. With the echo servers' listeners and gRPC's own descriptors, 4N + 256 is
// enough for both processes (the child inherits it).
absl::Status RaiseFileLimit(int agents) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return ErrnoStatus("getrlimit");
  rlim_t want = static_cast<rlim_t>(4 * agents + 256);
  if (limit.rlim_cur >= want) return absl::OkStatus();
  if (limit.rlim_max < want) {
    return absl::FailedPreconditionError(
        absl::StrCat("open-file limit is ", limit.rlim_max, " but ", agents, " agents need ", want,
                     "; raise it (ulimit -Hn) or pass fewer --agents"));
  }
  limit.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return ErrnoStatus("setrlimit");
  return absl::OkStatus();
}

// Runs `fleet token create --uses 0` as the admin; the token it prints on stdout.
absl::StatusOr<JoinToken> CreateJoinToken(const BenchFlags& flags, const std::string& admin_config,
                                          const std::string& dir) {
  const std::string output = absl::StrCat(dir, "/token-create.out");
  RETURN_IF_ERROR(TimeCommand({flags.fleet, "token", "create", "--uses", "0"}, output,
                              {absl::StrCat("FLEET_CONFIG=", admin_config)})
                      .status());
  // stdout and stderr share the file; the token is the line that parses as one.
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(output));
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::StatusOr<JoinToken> token = ParseJoinToken(line);
    if (token.ok()) return token;
  }
  return absl::InternalError(
      absl::StrCat("`fleet token create` printed no join token; see ", output));
}

// Waits for a file the server writes atomically after it listens (the admin config).
absl::Status AwaitFile(const std::string& path) {
  for (absl::Time deadline = absl::Now() + kStartTimeout; absl::Now() < deadline;) {
    if (::access(path.c_str(), R_OK) == 0) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("no ", path, " within ", absl::FormatDuration(kStartTimeout)));
}

absl::StatusOr<bool> RunBench(const BenchFlags& flags, const std::string& dir) {
  RETURN_IF_ERROR(RaiseFileLimit(flags.agents));
  if (::access(flags.fleet.c_str(), X_OK) != 0) {
    return ErrnoStatus(absl::StrCat("fleet binary ", flags.fleet, " (pass --fleet PATH)"));
  }

  // The controller first: its CA issues every certificate of the run, the reference's included.
  std::cerr << "controller: fleet controller, " << flags.agents << " agents joining..."
            << std::endl;
  const std::string state_dir = absl::StrCat(dir, "/controller");
  const std::string admin_config = absl::StrCat(state_dir, "/admin.yaml");
  ASSIGN_OR_RETURN(ServerProcess controller, StartServer({flags.fleet, "controller", "--state-dir",
                                                          state_dir, "--listen", "127.0.0.1:0"},
                                                         state_dir));
  RETURN_IF_ERROR(AwaitFile(admin_config));
  const std::string pki_dir = absl::StrCat(state_dir, "/pki");
  ASSIGN_OR_RETURN(PkiFiles pki_files, ReadPki(pki_dir));
  ASSIGN_OR_RETURN(JoinToken token, CreateJoinToken(flags, admin_config, dir));
  absl::Time join_start = absl::Now();
  ASSIGN_OR_RETURN(
      std::vector<AgentIdentity> identities,
      JoinAll(controller.address, pki_files.ca_pem, token, flags.agents, flags.driver_threads));
  const absl::Duration join_time = absl::Now() - join_start;

  // The Agent services of the simulated nodes, kNodesPerAgentServer to a server. A server's
  // certificate names the server name of each of its nodes, which is what the controller checks
  // when it calls a node back. Not one server for all: the controller keeps the peer certificate
  // of each call-back connection, so one certificate with N names costs it O(N^2) memory.
  std::atomic<int> describes{0};
  std::vector<std::unique_ptr<EchoAgentService>> echo_services;
  std::vector<std::unique_ptr<grpc::Server>> agent_servers;
  for (size_t first = 0; first < identities.size(); first += kNodesPerAgentServer) {
    const size_t last = std::min(identities.size(), first + kNodesPerAgentServer);
    pki::CertSpec spec{.common_name = absl::StrCat("heartbeat-bench-agents-", first),
                       .validity = absl::Hours(24),
                       .server_auth = true,
                       .client_auth = true};
    for (size_t i = first; i < last; ++i) {
      spec.dns_names.push_back(NodeServerName(identities[i].node_id));
    }
    ASSIGN_OR_RETURN(pki::KeyAndCert credential, pki::IssueKeyAndCertificate(pki_files.ca, spec));
    std::shared_ptr<TransportCredentials> transport = MutualTls(
        pki_files.ca_pem, credential.key_pem, credential.cert_pem, ClientCertificates::kRequired);
    echo_services.push_back(std::make_unique<EchoAgentService>(describes));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", transport->ForServer(), &port);
    builder.RegisterService(echo_services.back().get());
    agent_servers.push_back(builder.BuildAndStart());
    if (agent_servers.back() == nullptr || port == 0) {
      return absl::UnavailableError("cannot listen on 127.0.0.1:0 for the simulated agents");
    }
    for (size_t i = first; i < last; ++i) {
      identities[i].advertise_address = absl::StrCat("127.0.0.1:", port);
    }
  }

  std::cerr << "controller: " << flags.agents << " agents heartbeating..." << std::endl;
  ListingResult listing;
  ASSIGN_OR_RETURN(PhaseResult ctl, RunPhase(flags, controller, identities, pki_files.ca_pem,
                                             describes, v1::HEARTBEAT_VERDICT_OK,
                                             absl::StrCat(state_dir, "/latencies.csv"), [&] {
                                               return MeasureListing(flags, controller.address,
                                                                     admin_config, pki_files, dir,
                                                                     listing);
                                             }));
  ctl.join = join_time;
  absl::StatusOr<int> stopped = controller.process.Stop(absl::Seconds(5));
  RETURN_IF_ERROR(stopped.status());
  if (!WIFEXITED(*stopped) || WEXITSTATUS(*stopped) != 0) {
    return absl::InternalError(absl::StrCat("the controller ", DescribeWaitStatus(*stopped),
                                            " on SIGTERM; see ", state_dir, "/server.log"));
  }

  std::cerr << "reference: raw UDP loop, " << flags.agents << " agents..." << std::endl;
  auto nothing = [] { return absl::OkStatus(); };
  ASSIGN_OR_RETURN(ServerProcess raw_server,
                   StartServer({SelfExecutable(), "--serve-raw", absl::StrCat(dir, "/raw")},
                               absl::StrCat(dir, "/raw")));
  ASSIGN_OR_RETURN(PhaseResult raw, RunPhase(flags, raw_server, identities, pki_files.ca_pem,
                                             describes, v1::HEARTBEAT_VERDICT_REGISTER,
                                             absl::StrCat(dir, "/raw/latencies.csv"), nothing));
  RETURN_IF_ERROR(raw_server.process.Stop(absl::Seconds(5)).status());
  for (std::unique_ptr<grpc::Server>& server : agent_servers) {
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  }
  std::cerr << std::endl;
  return Report(flags, ctl, raw, listing);
}

int Main(int argc, char** argv) {
  BenchFlags flags;
  CLI::App app{"heartbeat_bench: simulated agents heartbeating at 1 Hz against the controller",
               "heartbeat_bench"};
  app.add_option("--agents", flags.agents, "simulated agents")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--seconds", flags.seconds, "measured window per phase, seconds")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 600.0));
  app.add_option("--warmup", flags.warmup_seconds, "heartbeating before the window, seconds")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 120.0));
  app.add_option("--driver-threads", flags.driver_threads, "threads that send heartbeats")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--list-runs", flags.list_runs, "runs of `fleet nodes -o json`")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--fleet", flags.fleet, "the fleet binary")->capture_default_str();
  app.add_flag("--keep", flags.keep, "keep the scratch directory (server logs, node list)");
  app.add_option("--serve-raw", flags.serve_raw)->group("");  // internal: the reference server
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (!flags.serve_raw.empty()) {
    return ServeRaw(flags.serve_raw);
  }

  std::string templ = (std::filesystem::temp_directory_path() / "heartbeat-bench-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) {
    std::cerr << "heartbeat_bench: mkdtemp " << templ << ": " << std::strerror(errno) << std::endl;
    return 2;
  }
  const std::string dir = templ;

  // Bounds the whole run: two phases of registration, warm-up, window and drain, plus listing.
  absl::Notification done;
  const absl::Duration budget = absl::Seconds(120) +
                                2 * absl::Seconds(flags.warmup_seconds + flags.seconds) +
                                kRpcDeadline * (4 + 3 * flags.list_runs);
  std::thread watchdog([&] {
    if (done.WaitForNotificationWithTimeout(budget)) return;
    std::cerr << "heartbeat_bench: still running after " << absl::FormatDuration(budget)
              << "; giving up (scratch directory " << dir << ")" << std::endl;
    std::_Exit(3);  // the server processes die with us (die_with_parent)
  });

  absl::StatusOr<bool> pass = RunBench(flags, dir);
  done.Notify();
  watchdog.join();
  if (!pass.ok()) {
    std::cerr << "heartbeat_bench: error: " << pass.status().message() << " (scratch directory "
              << dir << " kept)" << std::endl;
    return 2;
  }
  if (flags.keep || !*pass) {
    std::cout << "scratch directory (server logs, node list): " << dir << std::endl;
  } else {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  return *pass ? 0 : 1;
}

}  // namespace
}  // namespace fleet::bench

int main(int argc, char** argv) { return fleet::bench::Main(argc, argv); }
