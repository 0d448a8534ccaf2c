// Checks that TestNetwork gives hosts working, isolated links that can be cut and restored, and
// leaves nothing behind.

#include "tests/integration/test_network.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace fleet::testing {
namespace {

using std::chrono::milliseconds;

// Every command here finishes in well under a second; the bound keeps a hung one from hanging
// the suite.
constexpr milliseconds kCommandTimeout{10000};

CommandResult MustRun(const std::vector<std::string>& argv) {
  absl::StatusOr<CommandResult> result = RunCommand(argv, kCommandTimeout);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : CommandResult{-1, "", ""};
}

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    if (access(absl::StrCat(dir, "/", program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// A one-shot ping with a one-second wait, from iputils or busybox; nullopt when neither exists.
std::optional<std::vector<std::string>> PingCommand(const std::string& ip) {
  if (OnPath("ping")) return std::vector<std::string>{"ping", "-c1", "-W1", ip};
  if (OnPath("busybox")) {
    CommandResult applets = MustRun({"busybox", "--list"});
    for (absl::string_view applet : absl::StrSplit(applets.stdout_text, '\n')) {
      if (applet == "ping") return std::vector<std::string>{"busybox", "ping", "-c1", "-W1", ip};
    }
  }
  return std::nullopt;
}

std::vector<std::string> NetnsWithSuffix(const std::string& suffix) {
  std::vector<std::string> found;
  CommandResult list = MustRun({"ip", "netns", "list"});
  for (absl::string_view line : absl::StrSplit(list.stdout_text, '\n', absl::SkipWhitespace())) {
    if (absl::StrContains(line, suffix)) found.emplace_back(line);
  }
  return found;
}

bool MarkerExists(const std::string& suffix) {
  struct stat info;
  return stat(absl::StrCat("/run/fleet-test-netns/", suffix, ".pid").c_str(), &info) == 0;
}

std::unique_ptr<TestNetwork> MustCreate(int hosts, const TestNetworkOptions& options = {}) {
  absl::StatusOr<std::unique_ptr<TestNetwork>> network = TestNetwork::Create(hosts, options);
  EXPECT_TRUE(network.ok()) << network.status();
  return network.ok() ? *std::move(network) : nullptr;
}

// SIGKILLs and reaps a forked child when asked or at the latest when it goes out of scope.
class ChildKiller {
 public:
  ChildKiller(pid_t pid, int hold_fd) : pid_(pid), hold_fd_(hold_fd) {}
  ChildKiller(const ChildKiller&) = delete;
  ChildKiller& operator=(const ChildKiller&) = delete;
  ~ChildKiller() { KillAndReap(); }

  void KillAndReap() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    close(hold_fd_);
    pid_ = -1;
  }

 private:
  pid_t pid_;
  int hold_fd_;
};

TEST(RunCommandTest, CapturesOutputAndExitCode) {
  absl::StatusOr<CommandResult> result =
      RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, kCommandTimeout);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_EQ(result->stdout_text, "out\n");
  EXPECT_EQ(result->stderr_text, "err\n");
}

TEST(RunCommandTest, KillsACommandThatRunsPastItsTimeout) {
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<CommandResult> result = RunCommand({"sleep", "30"}, milliseconds(200));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(RunCommandTest, ReportsAMissingProgram) {
  absl::StatusOr<CommandResult> result =
      RunCommand({"fleet-no-such-program-anywhere"}, kCommandTimeout);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "fleet-no-such-program-anywhere"));
}

TEST(TestNetworkTest, RejectsHostCountsOutsideOneSubnet) {
  EXPECT_EQ(TestNetwork::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TestNetwork::Create(254).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TestNetworkTest, FallbackGivesLoopbackAddressesAndRefusesToCutLinks) {
  std::unique_ptr<TestNetwork> network = MustCreate(3, {.use_namespaces = false});
  ASSERT_NE(network, nullptr);
  EXPECT_FALSE(network->isolated());
  EXPECT_FALSE(network->fallback_reason().empty());
  ASSERT_EQ(network->size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(network->host(i).name, absl::StrCat("h", i));
    EXPECT_EQ(network->host(i).ip, absl::StrCat("127.0.0.", i + 2));
    EXPECT_TRUE(network->host(i).netns.empty());
  }
  EXPECT_EQ(network->Wrap(1, {"true"}), std::vector<std::string>{"true"});
  absl::Status cut = network->CutLink(1);
  EXPECT_EQ(cut.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(cut.message(), "needs network namespaces")) << cut;
  EXPECT_EQ(network->RestoreLink(1).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(TestNetworkTest, RequireIsolationFailsInsteadOfFallingBack) {
  absl::StatusOr<std::unique_ptr<TestNetwork>> network =
      TestNetwork::Create(2, {.use_namespaces = false, .require_isolation = true});
  EXPECT_EQ(network.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(TestNetworkTest, HostsReachEachOtherUntilTheirLinkIsCut) {
  std::unique_ptr<TestNetwork> network = MustCreate(3);
  ASSERT_NE(network, nullptr);
  if (!network->isolated()) {
    GTEST_SKIP() << "no namespaces, so skipped: addresses, ping between hosts, CutLink and "
                    "RestoreLink. Reason: "
                 << network->fallback_reason();
  }

  std::set<std::string> netns_names;
  for (int i = 0; i < network->size(); ++i) {
    const TestHost& host = network->host(i);
    netns_names.insert(host.netns);
    EXPECT_TRUE(absl::StrContains(host.netns, network->suffix())) << host.netns;
    CommandResult addr = MustRun({"ip", "-n", host.netns, "-o", "addr", "show", "dev", "eth0"});
    EXPECT_TRUE(absl::StrContains(addr.stdout_text, absl::StrCat("inet ", host.ip, "/24")))
        << addr.stdout_text;
    CommandResult lo = MustRun({"ip", "-n", host.netns, "-o", "link", "show", "dev", "lo"});
    EXPECT_TRUE(absl::StrContains(lo.stdout_text, ",UP")) << lo.stdout_text;
  }
  EXPECT_EQ(netns_names.size(), 3u);

  std::optional<std::vector<std::string>> ping_2 = PingCommand(network->host(2).ip);
  std::optional<std::vector<std::string>> ping_0 = PingCommand(network->host(0).ip);
  if (!ping_2.has_value() || !ping_0.has_value()) {
    GTEST_SKIP() << "neither ping nor busybox ping is installed, so skipped: reachability "
                    "between hosts across CutLink and RestoreLink";
  }

  EXPECT_EQ(MustRun(network->Wrap(1, *ping_2)).exit_code, 0) << "h1 cannot reach h2";

  ASSERT_TRUE(network->CutLink(2).ok());
  CommandResult cut_ping = MustRun(network->Wrap(1, *ping_2));
  EXPECT_NE(cut_ping.exit_code, 0)
      << "h1 still reaches h2 after CutLink(2): " << cut_ping.stdout_text;
  CommandResult carrier =
      MustRun({"ip", "-n", network->host(2).netns, "-o", "link", "show", "dev", "eth0"});
  EXPECT_TRUE(absl::StrContains(carrier.stdout_text, "NO-CARRIER")) << carrier.stdout_text;
  EXPECT_EQ(MustRun(network->Wrap(1, *ping_0)).exit_code, 0)
      << "cutting h2's link also cut h1 from h0";

  ASSERT_TRUE(network->RestoreLink(2).ok());
  EXPECT_EQ(MustRun(network->Wrap(1, *ping_2)).exit_code, 0)
      << "h1 cannot reach h2 after RestoreLink(2)";
}

TEST(TestNetworkTest, DestructorRemovesEverythingItMade) {
  std::unique_ptr<TestNetwork> network = MustCreate(3);
  ASSERT_NE(network, nullptr);
  if (!network->isolated()) GTEST_SKIP() << "no namespaces: " << network->fallback_reason();
  const std::string suffix = network->suffix();
  // Three hosts and the switch.
  EXPECT_EQ(NetnsWithSuffix(suffix).size(), 4u);
  EXPECT_TRUE(MarkerExists(suffix));

  // A process left running in a host, as a failed test might leave a daemon.
  absl::StatusOr<CommandResult> background =
      RunCommand(network->Wrap(0, {"sh", "-c", "sleep 60 >/dev/null 2>&1 &"}), kCommandTimeout);
  ASSERT_TRUE(background.ok()) << background.status();
  ASSERT_EQ(background->exit_code, 0);
  CommandResult pids = MustRun({"ip", "netns", "pids", network->host(0).netns});
  EXPECT_FALSE(pids.stdout_text.empty());

  network.reset();
  EXPECT_TRUE(NetnsWithSuffix(suffix).empty());
  EXPECT_FALSE(MarkerExists(suffix));
}

TEST(TestNetworkTest, CreateRemovesWhatAKilledRunLeftBehind) {
  {
    std::unique_ptr<TestNetwork> probe = MustCreate(1);
    ASSERT_NE(probe, nullptr);
    if (!probe->isolated()) GTEST_SKIP() << "no namespaces: " << probe->fallback_reason();
  }

  // A child builds a network and is killed before its destructor can run, like a test that hit
  // its timeout. It is killed only after the leftovers are checked, so a sweep by a test running
  // in parallel cannot remove them first.
  int suffix_pipe[2];
  int hold_pipe[2];
  ASSERT_EQ(pipe(suffix_pipe), 0);
  ASSERT_EQ(pipe(hold_pipe), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(suffix_pipe[0]);
    close(hold_pipe[1]);
    absl::StatusOr<std::unique_ptr<TestNetwork>> leaked = TestNetwork::Create(2);
    if (leaked.ok() && (*leaked)->isolated()) {
      const std::string& suffix = (*leaked)->suffix();
      if (write(suffix_pipe[1], suffix.data(), suffix.size()) < 0) _exit(1);
    }
    close(suffix_pipe[1]);
    // Blocks until the parent kills this process, or returns end of file if the parent died.
    char byte;
    while (read(hold_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    _exit(1);
  }
  close(suffix_pipe[1]);
  close(hold_pipe[0]);
  // Reaps the child on every path out of this test.
  ChildKiller killer(child, hold_pipe[1]);
  char buffer[16] = {};
  ssize_t n = read(suffix_pipe[0], buffer, sizeof(buffer));
  close(suffix_pipe[0]);
  ASSERT_GT(n, 0) << "the child could not build an isolated network";
  const std::string leaked_suffix(buffer, static_cast<size_t>(n));
  ASSERT_EQ(NetnsWithSuffix(leaked_suffix).size(), 3u);
  ASSERT_TRUE(MarkerExists(leaked_suffix));
  killer.KillAndReap();

  std::unique_ptr<TestNetwork> network = MustCreate(1);
  ASSERT_NE(network, nullptr);
  // fork() copies absl's seed pool; the parent must still draw a suffix of its own.
  EXPECT_NE(network->suffix(), leaked_suffix);
  EXPECT_TRUE(NetnsWithSuffix(leaked_suffix).empty());
  EXPECT_FALSE(MarkerExists(leaked_suffix));
  // The live network is untouched by its own sweep.
  EXPECT_EQ(NetnsWithSuffix(network->suffix()).size(), 2u);
}

TEST(TestNetworkTest, ConcurrentNetworksGetDistinctNames) {
  std::unique_ptr<TestNetwork> first = MustCreate(1);
  std::unique_ptr<TestNetwork> second = MustCreate(1);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  if (!first->isolated()) GTEST_SKIP() << "no namespaces: " << first->fallback_reason();
  EXPECT_NE(first->suffix(), second->suffix());
  EXPECT_NE(first->host(0).netns, second->host(0).netns);
}

}  // namespace
}  // namespace fleet::testing
