// End-to-end behaviour of a real cluster: a `fleet controller` and four `fleet agent`s, each on
// its own host of a TestNetwork, driven through the real `fleet` CLI. Each test asserts what an
// operator relies on: nodes register and are reported truthfully, failures are detected within
// the documented time and recovered from with the same identities, and bad input is refused
// with a clear message instead of a crash.
//
// Hosts live in network namespaces when the test runs as root; elsewhere, or with
// FLEET_TEST_FALLBACK=1, they are 127.0.0.x addresses and the link-cut test is skipped.

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

// One controller host and four agent hosts.
constexpr int kHosts = 5;
constexpr int kAgents = kHosts - 1;
// The controller's default --lost-after; a node is Lost this long after its last heartbeat.
constexpr int kLostAfterSeconds = 5;
constexpr absl::Duration kLostAfter = absl::Seconds(kLostAfterSeconds);
// The agents' heartbeat period (the controller's default --heartbeat-period).
constexpr absl::Duration kHeartbeatPeriod = absl::Seconds(1);
// How long an operator waits: a new or returning agent is Ready within `kJoinTimeout`, and a
// dead one is Lost `kLostAfter` after its last heartbeat (DESIGN.md's failure table). The second
// of slack covers the registry's tick (a fifth of the period) and a `fleet nodes` round trip.
constexpr absl::Duration kJoinTimeout = absl::Seconds(10);
constexpr absl::Duration kLostTimeout = absl::Seconds(kLostAfterSeconds + 1);
// A node whose link comes back has to wait for TCP's retransmission backoff (it doubles while
// the link is down) before its next heartbeat gets through.
constexpr absl::Duration kRecoverTimeout = absl::Seconds(15);
// Exit statuses of a crash, as RunCommand reports them (128 + signal).
constexpr int kAbortExit = 128 + SIGABRT;
constexpr int kSegvExit = 128 + SIGSEGV;

// A WaitForNodes condition: every agent is Ready and the controller has had a heartbeat from it
// since it registered (registration sets lastHeartbeat to registeredAt).
bool AllHeartbeating(const Json& doc) {
  for (const std::string& name : AgentNames(kAgents)) {
    const Json* node = FindNode(doc, name);
    if (node == nullptr || node->value("state", "") != "Ready") return false;
    const Json last = node->value("lastHeartbeat", Json());
    if (!last.is_string() || last == node->value("registeredAt", Json())) return false;
  }
  return true;
}

// A WaitForNodes condition: `victim` is Lost. The first listing in which another node is not
// Ready goes to `*others_not_ready`, so the test can fail on it afterwards.
std::function<bool(const Json&)> VictimLostOthersReady(const std::string& victim,
                                                       std::string* others_not_ready) {
  return [victim, others_not_ready](const Json& doc) {
    for (const std::string& name : AgentNames(kAgents)) {
      if (name != victim && StateOf(doc, name) != "Ready" && others_not_ready->empty()) {
        *others_not_ready = Summary(doc);
      }
    }
    return StateOf(doc, victim) == "Lost";
  };
}

// A crash shows as death by signal, or as the C++ runtime's last words before abort().
void ExpectNoCrash(const CommandResult& result, absl::string_view what) {
  EXPECT_NE(result.exit_code, kAbortExit) << what << " aborted; stderr: " << result.stderr_text;
  EXPECT_NE(result.exit_code, kSegvExit) << what << " crashed; stderr: " << result.stderr_text;
  EXPECT_LT(result.exit_code, 128) << what << " was killed by signal " << result.exit_code - 128
                                   << "; stderr: " << result.stderr_text;
  EXPECT_FALSE(absl::StrContains(result.stderr_text, "terminate called"))
      << what << " threw an uncaught exception; stderr: " << result.stderr_text;
}

// True while the process that `p` names exists, even as a zombie nobody reaped.
bool StillExists(const StartedProcess& p) {
  absl::StatusOr<uint64_t> ticks = ProcessStartTicks(p.pid);
  return ticks.ok() && *ticks == p.start_ticks;
}

class ClusterTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kHosts), FLEET_BINARY));
  }

  void TearDown() override {
    ClusterFixture::TearDown();
    if (cluster_ != nullptr) {
      std::vector<StartedProcess> started = cluster_->started_processes();
      cluster_.reset();
      for (const StartedProcess& p : started) {
        EXPECT_FALSE(StillExists(p))
            << p.role << " (pid " << p.pid << ") is left after the cluster was destroyed";
      }
    }
    if (network_ != nullptr && network_->isolated()) {
      // Anything a daemon forked would live on in the namespaces; there must be nothing.
      for (int i = 0; i < network_->size(); ++i) {
        absl::StatusOr<CommandResult> pids =
            RunCommand({"ip", "netns", "pids", network_->host(i).netns}, std::chrono::seconds(10));
        ASSERT_TRUE(pids.ok()) << pids.status();
        EXPECT_EQ(absl::StripAsciiWhitespace(pids->stdout_text), "")
            << "processes left in host " << i << "'s namespace";
      }
    }
  }

  std::map<std::string, std::string> IdsByName(const Json& doc) {
    std::map<std::string, std::string> ids;
    for (const Json& item : doc["items"]) ids[item.value("name", "")] = item.value("id", "");
    return ids;
  }
};

TEST_F(ClusterTest, AgentsRegisterAndReportThemselves) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  const absl::Time start = absl::Now();
  Json doc;
  // Reachable: the controller has called each agent back at the address it advertised.
  ASSERT_TRUE(WaitForNodes(
      [](const Json& d) {
        if (!AllReady(d, AgentNames(kAgents))) return false;
        for (const Json& item : d["items"]) {
          if (!item.value("reachable", false)) return false;
        }
        return true;
      },
      kJoinTimeout, &doc));
  std::printf("[ TIMING   ] %d agents Ready and reachable %s after start\n", kAgents,
              absl::FormatDuration(absl::Now() - start).c_str());

  absl::StatusOr<CommandResult> version = cluster_->RunFleet(0, {"version"});
  ASSERT_TRUE(version.ok()) << version.status();
  ASSERT_EQ(version->exit_code, 0) << version->stderr_text;
  std::string fleet_version(
      absl::StripAsciiWhitespace(absl::StripPrefix(version->stdout_text, "fleet ")));

  EXPECT_EQ(doc["items"].size(), static_cast<size_t>(kAgents)) << doc.dump(2);
  std::set<std::string> ids;
  std::set<std::string> addresses;
  for (int i = 1; i <= kAgents; ++i) {
    const std::string name = TestCluster::AgentName(i);
    const Json* node = FindNode(doc, name);
    ASSERT_NE(node, nullptr) << name << " is not listed: " << doc.dump(2);
    SCOPED_TRACE(node->dump(2));
    EXPECT_EQ(node->value("state", ""), "Ready");
    EXPECT_EQ(node->value("address", ""), cluster_->agent_address(i))
        << "the node must be listed at its own host's address";
    EXPECT_TRUE(absl::StartsWith(node->value("address", ""), network_->host(i).ip + ":"));
    EXPECT_EQ(node->value("version", ""), fleet_version);
    EXPECT_FALSE(fleet_version.empty());
    ASSERT_TRUE(node->contains("facts") && (*node)["facts"].is_object());
    EXPECT_GT((*node)["facts"].value("cpuCount", 0), 0);
    const std::string id = node->value("id", "");
    EXPECT_EQ(id.size(), 32u) << "node ids are 32 hex digits";
    ids.insert(id);
    addresses.insert(node->value("address", ""));
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kAgents)) << "every node needs its own id";
  EXPECT_EQ(addresses.size(), static_cast<size_t>(kAgents)) << "every node has its own address";

  // The table an operator reads lists the same nodes.
  absl::StatusOr<CommandResult> table = cluster_->RunCli({"nodes"});
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->exit_code, 0) << table->stderr_text;
  for (int i = 1; i <= kAgents; ++i) {
    EXPECT_TRUE(absl::StrContains(table->stdout_text, cluster_->agent_address(i)))
        << table->stdout_text;
  }
}

TEST_F(ClusterTest, KilledAgentIsLostThenRejoinsWithItsId) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  std::map<std::string, std::string> ids = WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  // Heartbeats flow, so the kill does not race the first ones.
  ASSERT_TRUE(WaitForNodes(AllHeartbeating, kJoinTimeout));

  constexpr int kVictim = 2;
  const std::string victim = TestCluster::AgentName(kVictim);
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(cluster_->KillAgent(kVictim, SIGKILL).ok());

  std::string others_not_ready;
  ASSERT_TRUE(WaitForNodes(VictimLostOthersReady(victim, &others_not_ready), kLostTimeout))
      << victim << " was killed with SIGKILL";
  std::printf("[ TIMING   ] %s Lost %s after SIGKILL\n", victim.c_str(),
              absl::FormatDuration(absl::Now() - killed).c_str());
  EXPECT_EQ(others_not_ready, "") << "live nodes left Ready while another node died";

  ASSERT_TRUE(cluster_->StartAgent(kVictim).ok());
  const absl::Time restarted = absl::Now();
  Json doc;
  ASSERT_TRUE(WaitForNodes([&](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           kJoinTimeout, &doc));
  std::printf("[ TIMING   ] %s Ready %s after its restart\n", victim.c_str(),
              absl::FormatDuration(absl::Now() - restarted).c_str());
  EXPECT_EQ(IdsByName(doc), ids) << "a restarted agent keeps its node id; no duplicate entries";
}

TEST_F(ClusterTest, NodeBehindCutLinkIsLostThenRecoversWithItsId) {
  if (!network_->isolated()) {
    GTEST_SKIP() << "links can only be cut between network namespaces: "
                 << network_->fallback_reason();
  }
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  std::map<std::string, std::string> ids = WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(WaitForNodes(AllHeartbeating, kJoinTimeout));

  constexpr int kVictim = 3;
  const std::string victim = TestCluster::AgentName(kVictim);
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(network_->CutLink(kVictim).ok());
  std::string others_not_ready;
  ASSERT_TRUE(WaitForNodes(VictimLostOthersReady(victim, &others_not_ready), kLostTimeout))
      << victim << "'s link was cut";
  std::printf("[ TIMING   ] %s Lost %s after its link was cut\n", victim.c_str(),
              absl::FormatDuration(absl::Now() - cut).c_str());
  EXPECT_EQ(others_not_ready, "") << "nodes with a working link left Ready";
  EXPECT_TRUE(cluster_->AgentRunning(kVictim)) << "a cut link must not kill the agent";

  ASSERT_TRUE(network_->RestoreLink(kVictim).ok());
  const absl::Time restored = absl::Now();
  Json doc;
  ASSERT_TRUE(WaitForNodes([&](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           kRecoverTimeout, &doc))
      << victim << "'s link was restored";
  std::printf("[ TIMING   ] %s Ready %s after its link was restored\n", victim.c_str(),
              absl::FormatDuration(absl::Now() - restored).c_str());
  EXPECT_EQ(IdsByName(doc), ids) << "a node that comes back keeps its id; no duplicate entries";
}

TEST_F(ClusterTest, ControllerRestartKeepsNodesAndIdsWithoutTouchingAgents) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  std::map<std::string, std::string> ids = WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  std::vector<pid_t> agent_pids;
  for (int i = 1; i <= kAgents; ++i) agent_pids.push_back(cluster_->agent_pid(i));
  ASSERT_TRUE(WaitForNodes(AllHeartbeating, kJoinTimeout));

  ASSERT_TRUE(cluster_->KillController(SIGKILL).ok());
  // While it is down the CLI says so instead of hanging or printing an empty list.
  absl::StatusOr<CommandResult> down = cluster_->RunCli({"nodes"});
  ASSERT_TRUE(down.ok()) << down.status();
  EXPECT_NE(down->exit_code, 0);
  EXPECT_TRUE(absl::StrContains(down->stderr_text, "cannot reach the controller"))
      << down->stderr_text;

  absl::Status started = cluster_->StartController();
  ASSERT_TRUE(started.ok()) << started;
  const absl::Time serving = absl::Now();

  // Straight from the store: the same nodes with the same ids, before any agent reports.
  absl::StatusOr<Json> first = cluster_->Nodes();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(IdsByName(*first), ids) << Summary(*first);

  // Ready on the strength of a heartbeat received by the new controller, not of the stored
  // state: every node's last heartbeat is younger than the restarted controller.
  Json doc;
  ASSERT_TRUE(WaitForNodes(
      [&](const Json& d) {
        if (!AllReady(d, AgentNames(kAgents))) return false;
        double since_restart = absl::ToDoubleSeconds(absl::Now() - serving);
        for (const Json& item : d["items"]) {
          if (!item.contains("lastHeartbeatAgeSeconds")) return false;
          const Json& age = item["lastHeartbeatAgeSeconds"];
          if (!age.is_number() || age.get<double>() >= since_restart) return false;
        }
        return true;
      },
      kJoinTimeout, &doc));
  std::printf("[ TIMING   ] all nodes heartbeating %s after the controller restart\n",
              absl::FormatDuration(absl::Now() - serving).c_str());
  EXPECT_EQ(IdsByName(doc), ids);

  // Past the restarted controller's grace period every node is still Ready. Nothing happens at
  // that moment to wait on: the time passing without a node going Lost is what is tested.
  absl::SleepFor(serving + kLostAfter + kHeartbeatPeriod - absl::Now());
  absl::StatusOr<Json> later = cluster_->Nodes();
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_TRUE(AllReady(*later, AgentNames(kAgents))) << Summary(*later);
  EXPECT_EQ(IdsByName(*later), ids);

  for (int i = 1; i <= kAgents; ++i) {
    EXPECT_TRUE(cluster_->AgentRunning(i)) << "agent " << i << " exited";
    EXPECT_EQ(cluster_->agent_pid(i), agent_pids[static_cast<size_t>(i - 1)]);
  }
}

// The restarted controller only has its store's word that a node is Ready; a node that died
// meanwhile must still be found out, within `kLostAfter` of the restart.
TEST_F(ClusterTest, NodeThatDiedWhileTheControllerWasDownIsLostAfterTheRestart) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  std::map<std::string, std::string> ids = WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());

  constexpr int kVictim = kAgents;
  const std::string victim = TestCluster::AgentName(kVictim);
  ASSERT_TRUE(cluster_->KillController(SIGKILL).ok());
  ASSERT_TRUE(cluster_->KillAgent(kVictim, SIGKILL).ok());
  ASSERT_TRUE(cluster_->StartController().ok());
  const absl::Time serving = absl::Now();

  std::string others_not_ready;
  ASSERT_TRUE(WaitForNodes(VictimLostOthersReady(victim, &others_not_ready), kLostTimeout))
      << victim << " died while the controller was down";
  std::printf("[ TIMING   ] %s Lost %s after the controller restarted\n", victim.c_str(),
              absl::FormatDuration(absl::Now() - serving).c_str());
  EXPECT_EQ(others_not_ready, "") << "live nodes left Ready after the controller restart";

  ASSERT_TRUE(cluster_->StartAgent(kVictim).ok());
  Json doc;
  ASSERT_TRUE(WaitForNodes([&](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                           kJoinTimeout, &doc));
  EXPECT_EQ(IdsByName(doc), ids);
}

TEST_F(ClusterTest, AgentsStartedBeforeTheControllerJoinOnceItStarts) {
  // A join token pins the cluster CA, which the controller makes on its first start: as on a
  // real head node, the controller ran once and made the token before the agents were set up.
  ASSERT_TRUE(cluster_->StartController().ok());
  absl::StatusOr<std::string> token = cluster_->ClusterToken();
  ASSERT_TRUE(token.ok()) << token.status();
  ASSERT_TRUE(cluster_->KillController(SIGTERM).ok());
  for (int i = 1; i <= kAgents; ++i) ASSERT_TRUE(cluster_->StartAgent(i).ok());
  // Long enough for the agents' retry backoff to reach its ceiling (5 s), as it has when the
  // controller's box boots last. The agents log only their first failure, so this waits for the
  // time itself: surviving it is what is tested.
  absl::SleepFor(absl::Seconds(7));
  for (int i = 1; i <= kAgents; ++i) {
    EXPECT_TRUE(cluster_->AgentRunning(i)) << "agent " << i << " gave up on a missing controller";
  }
  ASSERT_TRUE(cluster_->StartController().ok());
  const absl::Time started = absl::Now();
  WaitAllReady(kAgents, kJoinTimeout);
  std::printf("[ TIMING   ] agents Ready %s after the controller started\n",
              absl::FormatDuration(absl::Now() - started).c_str());
}

// systemd stops a unit with SIGTERM and waits before it uses SIGKILL: each daemon must exit
// promptly and with status 0, whether or not its peers are still there.
TEST_F(ClusterTest, DaemonsStopCleanlyOnSigterm) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());
  constexpr absl::Duration kStopTimeout = absl::Seconds(5);

  auto expect_clean_stop = [&](const std::string& what,
                               const std::function<absl::StatusOr<int>()>& stop) {
    const absl::Time start = absl::Now();
    absl::StatusOr<int> status = stop();
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(status.ok()) << what << ": " << status.status();
    std::printf("[ TIMING   ] %s stopped %s after SIGTERM\n", what.c_str(),
                absl::FormatDuration(took).c_str());
    EXPECT_EQ(DescribeWaitStatus(*status), DescribeWaitStatus(0)) << what;
    EXPECT_LT(took, kStopTimeout) << what;
  };
  // An agent while the controller runs, the controller while agents run, and agents whose
  // controller is gone.
  expect_clean_stop("node-1", [&] { return cluster_->KillAgent(1, SIGTERM); });
  expect_clean_stop("the controller", [&] { return cluster_->KillController(SIGTERM); });
  for (int i = 2; i <= kAgents; ++i) {
    expect_clean_stop(TestCluster::AgentName(i), [&] { return cluster_->KillAgent(i, SIGTERM); });
  }
}

TEST_F(ClusterTest, BadFlagsFailWithAnErrorNamingTheProblem) {
  const std::string state_dir = absl::StrCat(cluster_->temp_dir(), "/bad-flags");
  const std::string listen = cluster_->controller_address();
  struct Case {
    std::vector<std::string> args;
    bool with_controller;               // Through RunCli, as the admin.
    std::vector<std::string> expected;  // Every one appears in stderr.
  };
  const std::vector<Case> cases = {
      {{"controller", "--state-dir", state_dir, "--listen", listen, "--lost-after", "banana"},
       false,
       {"lost-after", "banana"}},
      {{"controller", "--state-dir", state_dir, "--listen", listen, "--heartbeat-period=-1s"},
       false,
       {"heartbeat-period", "-1s"}},
      // Each duration is fine alone; together they cannot work.
      {{"controller", "--state-dir", state_dir, "--listen", listen, "--lost-after", "2s"},
       false,
       {"lost-after"}},
      {{"nodes", "-o", "xml"}, true, {"xml", "json"}},
      {{"nodes", "--no-such-flag"}, true, {"--no-such-flag"}},
      // Without --controller an agent waits to be adopted, but it cannot join without a token.
      {{"agent", "--state-dir", state_dir, "--name", "x", "--advertise", network_->host(0).ip},
       false,
       {"--join-file"}},
      {{"agent", "--controller", listen, "--state-dir", state_dir, "--listen", "0.0.0.0:0"},
       false,
       {"--advertise"}},
  };
  for (const Case& c : cases) {
    const std::string what = absl::StrCat("`fleet ", absl::StrJoin(c.args, " "), "`");
    SCOPED_TRACE(what);
    const absl::Time start = absl::Now();
    // A daemon that wrongly accepted its flags would run on; the timeout turns that into a
    // failure.
    absl::StatusOr<CommandResult> result = c.with_controller
                                               ? cluster_->RunCli(c.args, absl::Seconds(10))
                                               : cluster_->RunFleet(0, c.args, absl::Seconds(10));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_NE(result->exit_code, 0);
    ExpectNoCrash(*result, what);
    for (const std::string& word : c.expected) {
      EXPECT_TRUE(absl::StrContains(result->stderr_text, word))
          << "stderr does not name " << word << ": " << result->stderr_text;
    }
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "refusing a flag should be immediate";
  }
}

// Kept apart from the flag cases above so that its failure names the one thing that is wrong.
TEST_F(ClusterTest, UnknownCommandIsNamedInTheError) {
  absl::StatusOr<CommandResult> result = cluster_->RunFleet(0, {"frobnicate"}, absl::Seconds(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NE(result->exit_code, 0);
  ExpectNoCrash(*result, "`fleet frobnicate`");
  EXPECT_TRUE(absl::StrContains(result->stderr_text, "frobnicate"))
      << "the error should name the command it does not know: " << result->stderr_text;
}

TEST_F(ClusterTest, UnreachableControllerFailsFastWithAClearError) {
  struct Target {
    std::string what;
    std::string address;
  };
  // Nothing listens on an agent host: the connection is refused.
  std::vector<Target> targets = {
      {"no listener", absl::StrCat(network_->host(kAgents).ip, ":", kControllerPort)}};
  if (network_->isolated()) {
    // An address on the hosts' subnet that nobody holds: ARP gets no answer.
    std::vector<std::string> octets = absl::StrSplit(network_->host(0).ip, '.');
    octets.back() = "250";
    targets.push_back(
        {"no such host", absl::StrCat(absl::StrJoin(octets, "."), ":", kControllerPort)});
  }
  // A frozen controller: the kernel still accepts the connection but nothing ever answers, so
  // only the CLI's own deadline ends the call.
  ASSERT_TRUE(cluster_->StartController().ok());
  ASSERT_TRUE(cluster_->SignalController(SIGSTOP).ok());
  targets.push_back({"frozen controller", cluster_->controller_address()});

  for (const Target& target : targets) {
    SCOPED_TRACE(absl::StrCat(target.what, " at ", target.address));
    const absl::Time start = absl::Now();
    absl::StatusOr<CommandResult> result =
        cluster_->RunFleet(0, {"--controller", target.address, "nodes"}, absl::Seconds(15));
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(result.ok()) << result.status();
    std::printf("[ TIMING   ] `fleet nodes` against a %s failed after %s: %s\n",
                target.what.c_str(), absl::FormatDuration(took).c_str(),
                std::string(absl::StripTrailingAsciiWhitespace(result->stderr_text)).c_str());
    EXPECT_NE(result->exit_code, 0);
    ExpectNoCrash(*result, "fleet nodes");
    EXPECT_LT(took, absl::Seconds(10));
    EXPECT_TRUE(absl::StrContains(result->stderr_text, "cannot reach the controller"))
        << result->stderr_text;
    EXPECT_TRUE(absl::StrContains(result->stderr_text, target.address)) << result->stderr_text;
    EXPECT_EQ(result->stdout_text, "") << "no table for a controller that did not answer";
  }
}

// `fleet nodes` waits up to 5 s for an answer, so a controller that stalls for a moment (a slow
// disk, a starved CPU, a long round trip) still answers it. The stall is a SIGSTOP: the kernel
// accepts the connection at once, and the controller's answer comes when it resumes.
TEST_F(ClusterTest, CliRidesOutABriefControllerStall) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
  WaitAllReady(kAgents, kJoinTimeout);
  ASSERT_FALSE(HasFailure());

  constexpr absl::Duration kStall = absl::Seconds(1);
  const pid_t controller = cluster_->controller_pid();
  ASSERT_TRUE(cluster_->SignalController(SIGSTOP).ok());
  // The harness is not thread-safe, so the thread only sends the signal itself.
  std::thread resume([controller, kStall] {
    absl::SleepFor(kStall);  // the stall under test
    ::kill(controller, SIGCONT);
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> result = cluster_->RunCli({"nodes"}, absl::Seconds(15));
  const absl::Duration took = absl::Now() - start;
  resume.join();
  ASSERT_TRUE(result.ok()) << result.status();
  std::printf("[ TIMING   ] `fleet nodes` during a %s controller stall took %s\n",
              absl::FormatDuration(kStall).c_str(), absl::FormatDuration(took).c_str());
  EXPECT_EQ(result->exit_code, 0) << "`fleet nodes` gave up " << absl::FormatDuration(took)
                                  << " into a " << absl::FormatDuration(kStall)
                                  << " stall: " << result->stderr_text;
  EXPECT_TRUE(absl::StrContains(result->stdout_text, TestCluster::AgentName(1)))
      << result->stdout_text;
}

TEST_F(ClusterTest, CorruptStateDatabaseIsRefusedAndLeftAsItWas) {
  std::mt19937 random(20240611);
  std::string random_bytes(64 * 1024, '\0');
  for (char& c : random_bytes) c = static_cast<char>(random() & 0xff);
  std::string text;
  while (text.size() < 8192) text += "this is not a database, it is a shopping list\n";
  // SQLite's own magic followed by junk: it gets past the first look at the header.
  std::string fake_header = std::string("SQLite format 3", 16) + random_bytes.substr(0, 8192);
  // A real database cut in half, as a full disk or an interrupted copy leaves it. The controller
  // closes it cleanly on SIGTERM, so everything is in fleet.db and nothing in a WAL file.
  ASSERT_TRUE(cluster_->StartController().ok());
  ASSERT_TRUE(cluster_->StartAgent(1).ok());
  ASSERT_TRUE(
      WaitForNodes([](const Json& d) { return StateOf(d, TestCluster::AgentName(1)) == "Ready"; },
                   kJoinTimeout));
  ASSERT_TRUE(cluster_->KillAgent(1, SIGKILL).ok());
  ASSERT_TRUE(cluster_->KillController(SIGTERM).ok());
  absl::StatusOr<std::string> real =
      ReadFileToString(absl::StrCat(cluster_->controller_state_dir(), "/fleet.db"));
  ASSERT_TRUE(real.ok()) << real.status();
  ASSERT_GT(real->size(), 4096u);

  const std::vector<std::pair<std::string, std::string>> garbage = {
      {"random bytes", random_bytes},
      {"text", text},
      {"SQLite header then junk", fake_header},
      {"truncated database", real->substr(0, real->size() / 2)}};

  int n = 0;
  for (const auto& [kind, content] : garbage) {
    SCOPED_TRACE(kind);
    const std::string state_dir = absl::StrCat(cluster_->temp_dir(), "/corrupt-", n++);
    ASSERT_TRUE(MakeDirectories(state_dir, 0700).ok());
    const std::string db = absl::StrCat(state_dir, "/fleet.db");
    {
      std::ofstream out(db, std::ios::binary);
      out.write(content.data(), static_cast<std::streamsize>(content.size()));
      ASSERT_TRUE(out.good());
    }

    const absl::Time start = absl::Now();
    absl::StatusOr<CommandResult> result = cluster_->RunFleet(
        0, {"controller", "--state-dir", state_dir, "--listen", cluster_->controller_address()},
        absl::Seconds(5));
    ASSERT_TRUE(result.ok()) << "the controller must exit on a corrupt database: "
                             << result.status();
    std::printf("[ TIMING   ] controller refused %s in %s\n", kind.c_str(),
                absl::FormatDuration(absl::Now() - start).c_str());
    EXPECT_NE(result->exit_code, 0);
    ExpectNoCrash(*result, "fleet controller");
    EXPECT_TRUE(absl::StrContains(result->stderr_text, db))
        << "the message must name the file: " << result->stderr_text;
    EXPECT_TRUE(absl::StrContains(result->stderr_text, "not a usable SparkFleet database"))
        << result->stderr_text;
    EXPECT_TRUE(absl::StrContains(result->stderr_text, "backup") ||
                absl::StrContains(result->stderr_text, "move it aside"))
        << "the message must say how to fix it: " << result->stderr_text;

    absl::StatusOr<std::string> after = ReadFileToString(db);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_TRUE(*after == content)
        << "the controller changed the corrupt file (" << kind << "): " << content.size()
        << " bytes before, " << after->size() << " after";
  }
}

TEST_F(ClusterTest, SecondControllerOnTheSameStateDirIsRefused) {
  ASSERT_TRUE(cluster_->StartController().ok());
  ASSERT_TRUE(cluster_->StartAgent(1).ok());
  ASSERT_TRUE(
      WaitForNodes([](const Json& d) { return StateOf(d, TestCluster::AgentName(1)) == "Ready"; },
                   kJoinTimeout));

  // Another port, so only the state directory is shared.
  const std::string other_listen = absl::StrCat(network_->host(0).ip, ":0");
  absl::StatusOr<CommandResult> second = cluster_->RunFleet(
      0, {"controller", "--state-dir", cluster_->controller_state_dir(), "--listen", other_listen},
      absl::Seconds(10));
  ASSERT_TRUE(second.ok()) << "a second controller on the same state dir must not run: "
                           << second.status();
  EXPECT_NE(second->exit_code, 0);
  ExpectNoCrash(*second, "the second controller");
  EXPECT_TRUE(absl::StrContains(second->stderr_text, "in use by another controller"))
      << second->stderr_text;
  EXPECT_TRUE(absl::StrContains(second->stderr_text, cluster_->controller_state_dir()))
      << second->stderr_text;
  EXPECT_TRUE(absl::StrContains(second->stderr_text, absl::StrCat(cluster_->controller_pid())))
      << "the message should name the running controller's pid: " << second->stderr_text;

  // The first one is unharmed.
  EXPECT_TRUE(cluster_->ControllerRunning());
  absl::StatusOr<Json> nodes = cluster_->Nodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ(StateOf(*nodes, TestCluster::AgentName(1)), "Ready") << Summary(*nodes);
}

}  // namespace
}  // namespace fleet::testing
