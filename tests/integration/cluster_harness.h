// A real SparkFleet cluster for integration tests: one `fleet controller` and N `fleet agent`
// processes on the hosts of a TestNetwork, driven through the real `fleet` CLI with the admin
// credential the controller writes, as an operator on the head node would.

#ifndef FLEET_TESTS_INTEGRATION_CLUSTER_HARNESS_H_
#define FLEET_TESTS_INTEGRATION_CLUSTER_HARNESS_H_

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"
#include "tests/integration/test_network.h"

namespace fleet::testing {

// The ports a cluster listens on. In isolated mode every host has its own addresses, so the
// product's defaults are used; in fallback mode all hosts share the loopback interface with
// whatever else runs on the machine, so Create() picks free ones instead.
inline constexpr int kControllerPort = 7100;
inline constexpr int kAgentPort = 7101;

// How StartAgent() starts an agent.
struct AgentStartOptions {
  // Pass `--controller <controller_address()>`. Without it an agent that has not joined yet
  // waits to be adopted through discovery (`fleet discover --adopt`, `--auto-adopt`).
  bool with_controller = true;
  // Appended after the harness's own flags.
  std::vector<std::string> extra_flags;
  // "KEY=VALUE" over the test's environment (DOCKER_HOST of the node's own engine, say).
  std::vector<std::string> env;
};

// A daemon the cluster started, for checking that none outlives the cluster. The pid and its
// start time (clock ticks since boot) name one process even after the pid is reused.
struct StartedProcess {
  std::string role;  // "controller", "node-1", ...
  pid_t pid = -1;
  uint64_t start_ticks = 0;
};

// A test network of `hosts` hosts (tests/integration/test_network.h), in the loopback fallback
// when FLEET_TEST_FALLBACK=1 (so a root machine can run what machines without namespaces get);
// prints a note when the hosts are 127.0.0.x addresses.
absl::StatusOr<std::unique_ptr<TestNetwork>> CreateTestNetwork(int hosts);

// Host 0 of the network runs the controller; host i (1 <= i < network.size()) runs the agent
// named "node-i". Every daemon runs through network.Wrap(), writes its output to
// <temp dir>/logs/<role>.log (appended across restarts) and keeps its state in
// <temp dir>/<role>/, so a restarted daemon finds its old state.
//
// Every connection is mutual TLS under the cluster CA the controller makes on its first start.
// The CLI runs with FLEET_CONFIG=admin_config_path(), the admin config the controller writes. An
// agent that holds no node certificate yet is started with `--join-file join_file(i)`; unless a
// test put a token there (SetJoinToken), the harness writes the cluster's own token
// (ClusterToken) into it first. An agent that has joined is restarted without a token.
//
// Discovery: in isolated mode agents answer on the product's default, 0.0.0.0:7109 of their own
// namespace. In fallback mode every host shares the machine's network, where probes would be
// broadcast on the real LAN, so agents run with discovery off (`--discovery-listen ""`); tests
// of discovery need isolation.
//
// Example:
//   absl::StatusOr<std::unique_ptr<TestNetwork>> net = TestNetwork::Create(5);
//   ASSERT_TRUE(net.ok()) << net.status();
//   absl::StatusOr<std::unique_ptr<TestCluster>> made = TestCluster::Create(**net, FLEET_BINARY);
//   ASSERT_TRUE(made.ok()) << made.status();
//   TestCluster& cluster = **made;
//   ASSERT_TRUE(cluster.StartController().ok());
//   ASSERT_TRUE(cluster.StartAgent(1).ok());  // joins with the cluster token
//   bool listed = TestCluster::WaitFor(
//       [&] {
//         absl::StatusOr<nlohmann::json> nodes = cluster.Nodes();
//         return nodes.ok() && (*nodes)["items"].size() == 1;
//       },
//       absl::Seconds(10));
//
// The destructor kills (SIGKILL) and reaps every daemon still running and deletes the temporary
// directory; print LogTails() before that when a test failed. The network must outlive the
// cluster. Not thread-safe.
class TestCluster {
 public:
  // Makes the temporary directory and chooses the addresses; starts nothing. `fleet_binary` is
  // the absolute path of the `fleet` program. Fails with kInvalidArgument for a network of
  // fewer than two hosts.
  static absl::StatusOr<std::unique_ptr<TestCluster>> Create(const TestNetwork& network,
                                                             std::string fleet_binary);

  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;
  ~TestCluster();

  // Agents are numbered 1..agent_count(), like the hosts they run on.
  int agent_count() const { return network_.size() - 1; }
  // "IP:PORT" of the controller, as agents and the CLI are told.
  const std::string& controller_address() const { return controller_address_; }
  // "IP:PORT" agent i listens on and advertises.
  std::string agent_address(int i) const;
  // "node-i".
  static std::string AgentName(int i);
  const std::string& temp_dir() const { return temp_dir_; }
  std::string controller_state_dir() const;
  std::string agent_state_dir(int i) const;
  // The admin config the controller writes (its default, STATE_DIR/admin.yaml): the controller's
  // address and the paths of the CA certificate and the admin key pair.
  std::string admin_config_path() const;
  // Where agent i's join token is written (mode 0600), outside its state directory.
  std::string join_file(int i) const;
  // Agent i's node id (its STATE_DIR/node_id), once it has started at least once.
  absl::StatusOr<std::string> AgentNodeId(int i) const;

  // Starts `fleet controller --state-dir <dir> --listen <controller_address()> extra_flags...`
  // on host 0 and returns once it is serving and has written its admin config (within 10 s).
  // `extra_flags` must not move the admin config (--admin-config). kFailedPrecondition if it
  // already runs; kAborted, with its log tail, if it exits first.
  absl::Status StartController(const std::vector<std::string>& extra_flags = {});
  // Sends `signo` to the controller and reaps it; returns its raw wait status (see
  // DescribeWaitStatus). kFailedPrecondition when it does not run; kDeadlineExceeded when it
  // still runs 10 s after the signal.
  absl::StatusOr<int> KillController(int signo = SIGKILL);
  // Sends `signo` to the controller without waiting (SIGSTOP freezes it: its port still accepts
  // connections, but nothing answers). kFailedPrecondition when it does not run.
  absl::Status SignalController(int signo);
  // KillController(SIGKILL), then StartController() on the same state directory.
  absl::Status RestartController();
  bool ControllerRunning();
  // The controller's pid, or -1 when it was never started.
  pid_t controller_pid() const;

  // Starts `fleet agent [--controller <controller_address()>] --state-dir <agent_state_dir(i)>
  // --name node-i --listen <agent_address(i)> --advertise <host i's IP>` on host i, plus
  // `--join-file join_file(i)` while the agent holds no node certificate (see the class
  // comment) and `--discovery-listen ""` in fallback mode. Does not wait for anything: an agent
  // waits for its controller by itself. Writing the cluster token needs the controller running.
  absl::Status StartAgent(int i, const AgentStartOptions& options = {});
  // Like KillController and SignalController, for agent i.
  absl::StatusOr<int> KillAgent(int i, int signo = SIGKILL);
  // Reaps agent i once it exits by itself and returns its raw wait status; kDeadlineExceeded
  // while it still runs after `timeout`, kFailedPrecondition when it was never started.
  absl::StatusOr<int> WaitForAgentExit(int i, absl::Duration timeout);
  absl::Status SignalAgent(int i, int signo);
  bool AgentRunning(int i);
  // Agent i's pid, or -1 when it was never started.
  pid_t agent_pid(int i) const;

  // Runs `fleet args...` on host 0 as the admin: with FLEET_CONFIG=admin_config_path(), which
  // names the controller and the admin credential. A non-zero exit is a result;
  // kDeadlineExceeded when it runs past `timeout` (it is then killed).
  absl::StatusOr<CommandResult> RunCli(const std::vector<std::string>& args,
                                       absl::Duration timeout = absl::Seconds(15)) const;
  // Runs `fleet args...` on `host` with FLEET_CONFIG=admin_config_path() and no flag added.
  // `env` ("KEY=VALUE") is set after it, so it may point FLEET_CONFIG elsewhere.
  absl::StatusOr<CommandResult> RunFleet(int host, const std::vector<std::string>& args,
                                         absl::Duration timeout = absl::Seconds(15),
                                         const std::vector<std::string>& env = {}) const;

  // `fleet token create --uses <uses> --ttl <ttl>` (InfiniteDuration: never expires) and returns
  // the token, which the command prints alone on stdout. kUnavailable with the CLI's stderr when
  // it fails.
  absl::StatusOr<std::string> CreateToken(int64_t uses = 0,
                                          absl::Duration ttl = absl::InfiniteDuration()) const;
  // The token StartAgent() gives agents by default: unlimited uses, no expiry, made on first use
  // (the controller must run then) and kept for the cluster's life.
  absl::StatusOr<std::string> ClusterToken();
  // Writes `token` to join_file(i), replacing what was there.
  absl::Status SetJoinToken(int i, absl::string_view token) const;

  // The document `fleet nodes -o json` prints: {"items": [{"name", "id", "address", "state",
  // "version", "reachable", "facts": {"cpuCount", ...}, ...}, ...], ...}. kUnavailable with the
  // CLI's stderr when it exits non-zero; kDataLoss when it prints something else.
  absl::StatusOr<nlohmann::json> Nodes() const;

  // Calls `predicate` every 100 ms until it returns true (true) or `timeout` has passed
  // (false). It is called at least once.
  static bool WaitFor(const std::function<bool()>& predicate, absl::Duration timeout);

  // The whole log of a role ("controller", "node-1", ...), across its restarts.
  absl::StatusOr<std::string> ReadLog(const std::string& role) const;
  // The last `lines` lines of every daemon's log, for a failure message.
  std::string LogTails(int lines = 40) const;
  // Every daemon started so far, including those that have exited.
  const std::vector<StartedProcess>& started_processes() const { return started_; }

 private:
  TestCluster(const TestNetwork& network, std::string fleet_binary, std::string temp_dir);

  std::string LogPath(const std::string& role) const;
  // Starts `fleet args...` on `host` with its output appended to the role's log.
  absl::StatusOr<Process> StartDaemon(int host, const std::string& role,
                                      std::vector<std::string> args,
                                      std::vector<std::string> env = {});
  absl::StatusOr<int> KillDaemon(std::optional<Process>& process, const std::string& role,
                                 int signo);
  static absl::Status SignalDaemon(std::optional<Process>& process, const std::string& role,
                                   int signo);
  absl::Status CheckAgentIndex(int i) const;

  const TestNetwork& network_;
  const std::string fleet_binary_;
  const std::string temp_dir_;
  std::string controller_address_;
  std::vector<int> agent_ports_;  // Indexed by host; entry 0 unused.
  std::string cluster_token_;     // Empty until ClusterToken() made it.
  std::vector<StartedProcess> started_;
  std::optional<Process> controller_;
  std::vector<std::optional<Process>> agents_;  // Indexed by host; entry 0 unused.
};

}  // namespace fleet::testing

#endif  // FLEET_TESTS_INTEGRATION_CLUSTER_HARNESS_H_
