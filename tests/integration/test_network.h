// A throwaway multi-host network for integration tests: one Linux network namespace per simulated
// node, joined by a bridge, so tests can run real agents and controllers and cut their links.

#ifndef FLEET_TESTS_INTEGRATION_TEST_NETWORK_H_
#define FLEET_TESTS_INTEGRATION_TEST_NETWORK_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fleet::testing {

// One simulated node.
struct TestHost {
  std::string name;   // "h0", "h1", ...
  std::string netns;  // Its network namespace; empty in fallback mode.
  std::string ip;     // The IPv4 address other hosts of the same network reach it at.
};

struct TestNetworkOptions {
  // false forces fallback mode even where namespaces work, so tests of the fallback path run
  // on root machines too.
  bool use_namespaces = true;
  // true makes Create() fail instead of falling back, for CI jobs that must not silently skip
  // the tests that need isolation.
  bool require_isolation = false;
};

// A set of hosts that can reach each other.
//
// Isolated mode (root and a working `ip netns`): host i lives in its own namespace with `lo` up
// and one veth, `eth0`, addressed 10.X.Y.(i+1)/24, whose other end is a port of a bridge in a
// separate "switch" namespace. X and Y are random per network. Nothing is added to the root
// namespace, so the test process itself cannot reach the hosts: run both ends through Wrap().
//
// Fallback mode (not root, or namespaces unavailable): host i is 127.0.0.(i+2) in the root
// namespace; Wrap() is the identity and links cannot be cut. fallback_reason() says why.
//
// Every namespace name is "flt-<suffix>-<role>" with a random six-hex-digit suffix, so tests run
// in parallel. The destructor kills processes still running in those namespaces and deletes
// them (which also deletes their veths and the bridge), whether or not the test passed. A
// marker file /run/fleet-test-netns/<suffix>.pid names the creating process; Create() removes
// the namespaces of any earlier network whose creator has died (a test killed by a timeout).
//
// Example:
//   absl::StatusOr<std::unique_ptr<TestNetwork>> net = TestNetwork::Create(3);
//   ASSERT_TRUE(net.ok()) << net.status();
//   if (!(*net)->isolated()) GTEST_SKIP() << (*net)->fallback_reason();
//   StartAgent((*net)->Wrap(1, {"fleet-agent", "--controller", (*net)->host(0).ip}));
//   ASSERT_TRUE((*net)->CutLink(1).ok());
//
// Not thread-safe; create, use and destroy it from one thread.
class TestNetwork {
 public:
  // Creates `hosts` hosts, 1 to 253. Fails with kInvalidArgument for other counts, and with the
  // setup error when options.require_isolation is set and isolation is not possible; otherwise
  // it falls back instead of failing.
  static absl::StatusOr<std::unique_ptr<TestNetwork>> Create(int hosts);
  static absl::StatusOr<std::unique_ptr<TestNetwork>> Create(int hosts,
                                                             const TestNetworkOptions& options);

  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;
  ~TestNetwork();

  // True when every host has its own namespace.
  bool isolated() const { return isolated_; }
  // Why the network is not isolated; empty when it is.
  const std::string& fallback_reason() const { return fallback_reason_; }
  // The random tag carried by every namespace this network made; empty in fallback mode.
  const std::string& suffix() const { return suffix_; }
  int size() const { return static_cast<int>(hosts_.size()); }
  // Aborts when i is not in [0, size()): an index out of range is a bug in the test.
  const TestHost& host(int i) const;

  // The argv that runs `argv` on host i: {"ip", "netns", "exec", ns, argv...} when isolated,
  // `argv` unchanged in fallback mode.
  std::vector<std::string> Wrap(int i, std::vector<std::string> argv) const;

  // Takes host i's link down by downing the bridge-side end of its veth, so the host also sees
  // carrier loss on eth0. kFailedPrecondition in fallback mode.
  absl::Status CutLink(int i);
  // Brings host i's link back and returns once the host has carrier and the bridge forwards its
  // traffic again (at most a few seconds). kFailedPrecondition in fallback mode.
  absl::Status RestoreLink(int i);

 private:
  TestNetwork() = default;

  absl::Status SetUpIsolated(int hosts);
  void SetUpFallback(int hosts, std::string reason);
  absl::Status CheckLinkIndex(int i, const char* operation) const;
  // Polls until host i's eth0 has carrier and its bridge port forwards.
  absl::Status WaitForLinkUp(int i) const;

  bool isolated_ = false;
  std::string fallback_reason_;
  std::string suffix_;
  std::string marker_path_;  // Empty until the suffix is reserved.
  std::string switch_netns_;
  // Namespaces in creation order; the destructor deletes exactly these.
  std::vector<std::string> created_netns_;
  std::vector<TestHost> hosts_;
};

// What a finished command did.
struct CommandResult {
  int exit_code = 0;  // The exit status, or 128 + the signal number when killed by a signal.
  std::string stdout_text;
  std::string stderr_text;
};

// Runs argv[0] (looked up on PATH) with stdin from /dev/null, capturing stdout and stderr, in a
// process group of its own. A non-zero exit is a result, not an error. Errors:
// kInvalidArgument for an empty argv, kFailedPrecondition when the program cannot be started,
// kDeadlineExceeded when it runs past `timeout` (its whole process group is then killed).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout);

}  // namespace fleet::testing

#endif  // FLEET_TESTS_INTEGRATION_TEST_NETWORK_H_
