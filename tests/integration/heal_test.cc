// Groups that heal themselves, end to end: a controller and two agents on their own hosts of a
// TestNetwork, a 2-rank `exec` group of fleet-echo-engine (which can behave as vLLM's ranks do:
// workers that hang when their head dies, a start that always fails, a wedge warning), driven
// through the real `fleet` CLI. Each test asserts what a user sees (state, generation, an
// answer, the events, the group's message) and that no process of an old generation is left.

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/engine_pids.h"
#include "tests/integration/haproxy_present.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

constexpr int kHosts = 3;  // the controller's host and two agents
constexpr int kAgents = kHosts - 1;
constexpr char kGroup[] = "echo-heal";

// FLEET_GENERATION of a process, from its environment; 0 when it cannot be read.
uint64_t GenerationOf(pid_t pid) {
  absl::StatusOr<std::string> environ = ReadFileToString(absl::StrCat("/proc/", pid, "/environ"));
  if (!environ.ok()) return 0;
  for (absl::string_view var : absl::StrSplit(*environ, '\0')) {
    uint64_t generation = 0;
    if (absl::ConsumePrefix(&var, "FLEET_GENERATION=") && absl::SimpleAtoi(var, &generation)) {
      return generation;
    }
  }
  return 0;
}

class HealTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(Agents() + 1), FLEET_BINARY));
    port_ = 22000 + static_cast<int>(absl::ToUnixMicros(absl::Now()) % 2000) * 2;
    ASSERT_NO_FATAL_FAILURE(StartCluster(Agents()));
    ASSERT_TRUE(WaitForNodes([&](const Json& d) { return AllReady(d, AgentNames(Agents())); },
                             absl::Seconds(15)));
  }

  // Agents node-1..node-N, each on its own host beside the controller's.
  virtual int Agents() const { return kAgents; }

  void TearDown() override {
    if (cluster_ != nullptr) (void)Fleet({"stop", kGroup});
    std::vector<pid_t> left = EnginePids("fleet-echo-engi", kGroup);
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " engine processes left after the test";
    ClusterFixture::TearDown();
  }

  // A 2-rank echo group; `engine_flags` go to fleet-echo-engine, `extra` is appended YAML.
  std::string WriteRecipe(const std::string& engine_flags, const std::string& extra = "") {
    std::string path = absl::StrCat(cluster_->temp_dir(), "/", kGroup, ".yaml");
    std::ofstream(path) << absl::StrCat(R"(recipe_version: "2"
name: echo-heal
engine: exec
runtime: process
nodes: 2
defaults:
  port: )",
                                        port_, R"(
command: fleet-echo-engine --port {port} --rendezvous-timeout 20 )",
                                        engine_flags, "\n", extra);
    return path;
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args,
                                      absl::Duration timeout = absl::Seconds(60)) {
    return cluster_->RunCli(args, timeout);
  }

  Json Describe() {
    absl::StatusOr<CommandResult> r = Fleet({"describe", "group", kGroup, "-o", "json"});
    if (!r.ok() || r->exit_code != 0) return Json();
    return Json::parse(r->stdout_text, nullptr, false);
  }

  std::map<int, int> RankPids() {
    std::map<int, int> pids;
    Json doc = Describe();
    if (!doc.contains("group")) return pids;
    for (const Json& rank : doc["group"]["ranks"]) {
      pids[rank.value("rank", 0)] = rank["status"].value("pid", 0);
    }
    return pids;
  }

  // Waits until the group is in `state` at generation `generation` or later.
  bool WaitForState(const std::string& state, uint64_t generation, absl::Duration timeout) {
    return TestCluster::WaitFor(
        [&] {
          Json d = Describe();
          if (!d.contains("group")) return false;
          uint64_t g = 0;
          (void)absl::SimpleAtoi(d["group"].value("generation", "0"), &g);
          return d["group"].value("state", "") == state && g >= generation;
        },
        timeout);
  }

  // Every engine process of the group runs generation `generation`: none of an older one is
  // left on any host (every host's processes are visible from the test's pid namespace).
  void ExpectOnlyGeneration(uint64_t generation) {
    for (pid_t pid : EnginePids("fleet-echo-engi", kGroup)) {
      EXPECT_EQ(GenerationOf(pid), generation) << "pid " << pid << " of an old generation";
    }
  }

  std::string Completion() {
    absl::StatusOr<CommandResult> r = RunCommand(
        network_->Wrap(
            0, {"curl", "-sS", "--noproxy", "*", "-m", "5", "-H", "Content-Type: application/json",
                "-d", R"({"model": "fleet-echo", "prompt": "hello", "max_tokens": 8})",
                absl::StrCat("http://", network_->host(1).ip, ":", port_, "/v1/completions")}),
        std::chrono::seconds(10));
    return r.ok() ? r->stdout_text : std::string(r.status().message());
  }

  std::string Events() {
    absl::StatusOr<CommandResult> r = Fleet({"events", kGroup});
    return r.ok() ? r->stdout_text + r->stderr_text : std::string(r.status().message());
  }

  // Kills rank `rank` with SIGKILL and checks the group is Ready again on generation 2,
  // answering, with nothing of generation 1 left.
  void KillRankAndExpectANewGeneration(int rank) {
    std::map<int, int> pids = RankPids();
    ASSERT_EQ(pids.size(), 2u);
    ASSERT_GT(pids[rank], 0);
    const absl::Time killed = absl::Now();
    ASSERT_EQ(::kill(pids[rank], SIGKILL), 0);
    ASSERT_TRUE(WaitForState("Ready", 2, absl::Seconds(30))) << Describe().dump() << Events();
    std::printf("[ TIMING   ] rank %d killed -> generation 2 Ready in %s\n", rank,
                absl::FormatDuration(absl::Now() - killed).c_str());
    EXPECT_TRUE(absl::StrContains(Completion(), R"("text":"hello")"));
    ExpectOnlyGeneration(2);
    for (const auto& [r, pid] : pids) EXPECT_NE(GenerationOf(pid), 1u) << "rank " << r;
    std::string events = Events();
    EXPECT_TRUE(absl::StrContains(events, absl::StrCat("rank ", rank, " on node-", rank + 1)))
        << events;
    EXPECT_TRUE(absl::StrContains(events, "killed by signal 9")) << events;
    EXPECT_TRUE(absl::StrContains(events, "started generation 2")) << events;
  }

  // Applies the 2-rank group with `engine_flags`: rank 0 on node-1, rank 1 on node-2.
  void ApplyOnNodesOneAndTwo(const std::string& engine_flags) {
    absl::StatusOr<CommandResult> applied =
        Fleet({"apply", WriteRecipe(engine_flags), "--timeout", "30s"});
    ASSERT_TRUE(applied.ok()) << applied.status();
    ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
    Json ranks = Describe()["group"]["ranks"];
    ASSERT_EQ(ranks.size(), 2u) << ranks.dump();
    ASSERT_EQ(ranks[1].value("nodeName", ""), "node-2") << ranks.dump();
  }

  // Whether an engine process of `generation` still runs on any host.
  bool GenerationRuns(uint64_t generation) {
    for (pid_t pid : EnginePids("fleet-echo-engi", kGroup)) {
      if (GenerationOf(pid) == generation) return true;
    }
    return false;
  }

  int port_ = 0;
};

TEST_F(HealTest, KilledHeadIsReplacedByANewGenerationThatAnswers) {
  ASSERT_NO_FATAL_FAILURE(ApplyOnNodesOneAndTwo(""));
  ASSERT_NO_FATAL_FAILURE(KillRankAndExpectANewGeneration(0));
}

TEST_F(HealTest, KilledWorkerIsReplacedByANewGenerationThatAnswers) {
  ASSERT_NO_FATAL_FAILURE(ApplyOnNodesOneAndTwo(""));
  ASSERT_NO_FATAL_FAILURE(KillRankAndExpectANewGeneration(1));
}

TEST_F(HealTest, WorkersThatHangWhenTheirHeadDiesAreStoppedBySparkFleet) {
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", WriteRecipe("--hang-when-head-dies"), "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  std::map<int, int> pids = RankPids();
  ASSERT_GT(pids[1], 0);
  ASSERT_NO_FATAL_FAILURE(KillRankAndExpectANewGeneration(0));
  // The hung worker of generation 1 did not leave by itself: SparkFleet stopped it.
  EXPECT_NE(GenerationOf(pids[1]), 1u);
}

TEST_F(HealTest, CrashAtEveryStartFailsAfterTheBudgetWithTheBackoffObserved) {
  const std::string recipe = WriteRecipe(
      "--fail-at-start \"engine crashed at start\"",
      "restart:\n  initial_backoff: 1s\n  max_backoff: 2s\n  max_restarts: 2\n  window: 1m\n");
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> applied = Fleet({"apply", recipe, "--no-wait"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  ASSERT_TRUE(WaitForState("Failed", 3, absl::Seconds(40))) << Describe().dump() << Events();
  const absl::Duration took = absl::Now() - start;
  std::printf("[ TIMING   ] 3 generations failed at start -> Failed in %s\n",
              absl::FormatDuration(took).c_str());
  // Generation 2 started at once, generation 3 after the 1 s backoff.
  EXPECT_GE(took, absl::Seconds(1));
  Json d = Describe();
  const std::string message = d["group"].value("message", "");
  EXPECT_TRUE(absl::StrContains(message, "restart budget spent: 2 restarts within 1m")) << message;
  EXPECT_TRUE(absl::StrContains(message, "ended (exited with status 1)")) << message;
  std::string events = Events();
  EXPECT_TRUE(absl::StrContains(events, "restart in 1s")) << events;
  EXPECT_TRUE(absl::StrContains(events, "started generation 3")) << events;
  EXPECT_FALSE(absl::StrContains(events, "started generation 4")) << events;
  EXPECT_TRUE(EnginePids("fleet-echo-engi", kGroup).empty());
  // -o json uses the same words as the table.
  absl::StatusOr<CommandResult> json = Fleet({"events", kGroup, "-o", "json"});
  ASSERT_TRUE(json.ok());
  Json doc = Json::parse(json->stdout_text, nullptr, false);
  ASSERT_TRUE(doc.contains("items")) << json->stdout_text;
  EXPECT_GE(doc["items"].size(), 5u);
  EXPECT_EQ(doc["items"][0].value("group", ""), kGroup);
}

TEST_F(HealTest, UnhealableStartFailureFailsAtOnceWithTheCauseAndTheFix) {
  const std::string recipe = WriteRecipe(
      "--fail-at-start \"NCCL WARN Call to ibv_reg_mr failed with error Cannot allocate memory\"");
  absl::StatusOr<CommandResult> applied = Fleet({"apply", recipe, "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_NE(applied->exit_code, 0) << applied->stdout_text;
  ASSERT_TRUE(WaitForState("Failed", 1, absl::Seconds(30))) << Describe().dump() << Events();
  Json d = Describe();
  EXPECT_EQ(d["group"].value("generation", ""), "1");
  const std::string message = d["group"].value("message", "");
  EXPECT_TRUE(absl::StrContains(message, "cannot heal")) << message;
  EXPECT_TRUE(absl::StrContains(message, "ibv_reg_mr failed with error Cannot allocate memory"))
      << message;
  EXPECT_TRUE(absl::StrContains(message, "LimitMEMLOCK=infinity")) << message;
  EXPECT_TRUE(EnginePids("fleet-echo-engi", kGroup).empty());
}

TEST_F(HealTest, WedgeWarningSeenThreeTimesRestartsTheGroup) {
  const std::string recipe = WriteRecipe(
      "--print-when-ready \"WARNING No available shared memory broadcast block found in 60 "
      "seconds\" --print-count 3 --print-interval 0.3 --print-generation 1",
      "health:\n  signatures:\n    - pattern: No available shared memory broadcast block found\n"
      "      count: 3\n      window: 3m\n");
  absl::StatusOr<CommandResult> applied = Fleet({"apply", recipe, "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  ASSERT_TRUE(WaitForState("Ready", 2, absl::Seconds(30))) << Describe().dump() << Events();
  ExpectOnlyGeneration(2);
  EXPECT_TRUE(absl::StrContains(Completion(), R"("text":"hello")"));
  std::string events = Events();
  EXPECT_TRUE(absl::StrContains(events, "No available shared memory broadcast block")) << events;
  EXPECT_TRUE(absl::StrContains(events, "(3 times)")) << events;
}

TEST_F(HealTest, ControllerKilledDuringARestartFinishesItWhenItComesBack) {
  // The second restart within the window waits initial_backoff: the controller dies then.
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply",
             WriteRecipe("",
                         "restart:\n  initial_backoff: 3s\n  max_backoff: 3s\n"
                         "  max_restarts: 5\n  window: 10m\n"),
             "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  ASSERT_NO_FATAL_FAILURE(KillRankAndExpectANewGeneration(0));
  std::map<int, int> pids = RankPids();
  ASSERT_GT(pids[0], 0);
  ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
  // The controller has seen the exit and is waiting out the backoff.
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] {
        return absl::StrContains(Events(), "killed by signal 9") &&
               absl::StrContains(Describe()["group"].value("message", ""), "restart");
      },
      absl::Seconds(10)))
      << Describe().dump() << Events();
  const Json before = Describe()["group"];
  absl::StatusOr<int> killed = cluster_->KillController();
  ASSERT_TRUE(killed.ok()) << killed.status();
  // Killed before generation 3 was ordered.
  ASSERT_EQ(before.value("generation", ""), "2") << before.dump();
  std::printf("[ INFO     ] controller killed while the group said: %s\n",
              before.value("message", "").c_str());
  ASSERT_TRUE(cluster_->StartController().ok());
  ASSERT_TRUE(WaitForState("Ready", 3, absl::Seconds(40))) << Describe().dump() << Events();
  ExpectOnlyGeneration(3);
  EXPECT_TRUE(absl::StrContains(Completion(), R"("text":"hello")"));
  // Every engine process there is of generation 3, and there are exactly the group's two.
  EXPECT_EQ(EnginePids("fleet-echo-engi", kGroup).size(), 2u);
}

// A node that goes Lost: with a free node, the group is placed again at once.
class LostNodeTest : public HealTest {
 protected:
  int Agents() const override { return 3; }
};

TEST_F(LostNodeTest, AnAgentKeptDownIsReplacedByAFreeNodeAndItsRanksStoppedWhenItReturns) {
  // Workers that hang when their head dies: the one on the Lost node outlives its group.
  ASSERT_NO_FATAL_FAILURE(ApplyOnNodesOneAndTwo("--hang-when-head-dies"));
  Json ranks;

  const absl::Time killed = absl::Now();
  ASSERT_TRUE(cluster_->KillAgent(2).ok());
  // Generation 2 ordered once node-2 is Lost (the controller's default --lost-after 5s).
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] { return Describe()["group"].value("generation", "") == "2"; }, absl::Seconds(20)))
      << Describe().dump() << Events();
  std::printf("[ TIMING   ] agent of node-2 killed -> generation 2 ordered in %s\n",
              absl::FormatDuration(absl::Now() - killed).c_str());
  ASSERT_TRUE(WaitForState("Ready", 2, absl::Seconds(30))) << Describe().dump() << Events();
  std::printf("[ TIMING   ] agent of node-2 killed -> generation 2 Ready in %s\n",
              absl::FormatDuration(absl::Now() - killed).c_str());
  ranks = Describe()["group"]["ranks"];
  std::set<std::string> nodes;
  for (const Json& r : ranks) nodes.insert(r.value("nodeName", ""));
  EXPECT_EQ(nodes, (std::set<std::string>{"node-1", "node-3"})) << ranks.dump();
  EXPECT_TRUE(absl::StrContains(Completion(), R"("text":"hello")"));
  std::string events = Events();
  EXPECT_TRUE(absl::StrContains(events, "node node-2 (rank 1) is Lost")) << events;
  EXPECT_TRUE(absl::StrContains(events, "re-placed: rank 1 node-2 -> node-3")) << events;

  // The worker of generation 1 still runs on node-2; when its agent returns it is stopped.
  EXPECT_TRUE(GenerationRuns(1)) << "the hung worker of generation 1 should outlive its Lost agent";
  ASSERT_TRUE(cluster_->StartAgent(2).ok());
  EXPECT_TRUE(TestCluster::WaitFor([&] { return !GenerationRuns(1); }, absl::Seconds(30)))
      << "generation 1 still runs on node-2 after its agent returned";
  ExpectOnlyGeneration(2);
}

TEST_F(LostNodeTest, ACutLinkIsReplacedAndTheOldRanksStoppedWhenTheLinkReturns) {
  if (!network_->isolated()) GTEST_SKIP() << "links cannot be cut: " << network_->fallback_reason();
  ASSERT_NO_FATAL_FAILURE(ApplyOnNodesOneAndTwo("--hang-when-head-dies"));
  Json ranks;

  // Unlike a killed agent, everything on node-2 keeps running: its agent, and the worker of
  // generation 1, which hangs once its head is stopped.
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(network_->CutLink(2).ok());
  ASSERT_TRUE(WaitForState("Ready", 2, absl::Seconds(40))) << Describe().dump() << Events();
  std::printf("[ TIMING   ] link of node-2 cut -> generation 2 Ready in %s\n",
              absl::FormatDuration(absl::Now() - cut).c_str());
  ranks = Describe()["group"]["ranks"];
  std::set<std::string> nodes;
  for (const Json& r : ranks) nodes.insert(r.value("nodeName", ""));
  EXPECT_EQ(nodes, (std::set<std::string>{"node-1", "node-3"})) << ranks.dump();
  EXPECT_TRUE(absl::StrContains(Completion(), R"("text":"hello")"));
  EXPECT_TRUE(GenerationRuns(1))
      << "the worker of generation 1 on the cut-off node should still run";

  // The link returns: the agent's heartbeats of the same session arrive again, and the
  // controller asks what still runs there and stops generation 1, well before the periodic
  // shard refresh.
  const absl::Time restored = absl::Now();
  ASSERT_TRUE(network_->RestoreLink(2).ok());
  EXPECT_TRUE(TestCluster::WaitFor([&] { return !GenerationRuns(1); }, absl::Seconds(15)))
      << "generation 1 still runs on node-2 after its link returned";
  std::printf("[ TIMING   ] link of node-2 restored -> generation 1 stopped there in %s\n",
              absl::FormatDuration(absl::Now() - restored).c_str());
  ExpectOnlyGeneration(2);
  EXPECT_EQ(Describe()["group"].value("state", ""), "Ready");
  // node-2 is confirmed free again: its node listing shows it Ready.
  EXPECT_TRUE(
      WaitForNodes([&](const Json& d) { return AllReady(d, AgentNames(3)); }, absl::Seconds(10)));
}

// HAProxy processes started by this test's agents (their working directory is a shard
// directory under the cluster's temporary directory).
std::vector<pid_t> RouterPids(const std::string& temp_dir) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    absl::StatusOr<std::string> comm = ReadFileToString(absl::StrCat("/proc/", pid, "/comm"));
    if (!comm.ok() || !absl::StartsWith(*comm, "haproxy")) continue;
    std::string cwd = std::filesystem::read_symlink(entry.path() / "cwd", ec).string();
    if (!ec && absl::StartsWith(cwd, temp_dir)) pids.push_back(pid);
  }
  return pids;
}

TEST_F(LostNodeTest, TheRouterMovesOffALostNodeAndTheOldOneStopsWhenItReturns) {
  if (!network_->isolated()) GTEST_SKIP() << "links cannot be cut: " << network_->fallback_reason();
  if (!HaveHaproxy()) GTEST_SKIP() << "haproxy is not installed (scripts/setup.sh installs it)";
  ASSERT_NO_FATAL_FAILURE(ApplyOnNodesOneAndTwo(""));
  auto service = [&]() -> Json {
    absl::StatusOr<CommandResult> r = Fleet({"get", "services", "-o", "json"});
    if (!r.ok() || r->exit_code != 0) return Json();
    Json doc = Json::parse(r->stdout_text, nullptr, false);
    return doc.contains("items") && doc["items"].size() == 1 ? doc["items"][0] : Json();
  };
  ASSERT_TRUE(TestCluster::WaitFor([&] { return service().value("node", "") == "node-1"; },
                                   absl::Seconds(20)))
      << service().dump();
  ASSERT_EQ(RouterPids(cluster_->temp_dir()).size(), 1u);

  // node-1 holds the head and the router: its link is cut.
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(network_->CutLink(1).ok());
  ASSERT_TRUE(WaitForState("Ready", 2, absl::Seconds(40))) << Describe().dump() << Events();
  Json moved;
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] {
        moved = service();
        return moved.value("node", "node-1") != "node-1" &&
               moved["replicas"].value("ready", 0) == 1;
      },
      absl::Seconds(20)))
      << service().dump();
  std::printf("[ TIMING   ] link of the router's node cut -> router on %s in %s\n",
              moved.value("node", "").c_str(), absl::FormatDuration(absl::Now() - cut).c_str());
  absl::StatusOr<CommandResult> answer = RunCommand(
      network_->Wrap(
          0, {"curl", "-sS", "--noproxy", "*", "-m", "5", "-H", "Content-Type: application/json",
              "-d", R"({"model": "fleet-echo", "prompt": "hello", "max_tokens": 8})",
              moved.value("endpoint", "") + "/v1/completions"}),
      std::chrono::seconds(10));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_TRUE(absl::StrContains(answer->stdout_text, R"("text":"hello")")) << answer->stdout_text;
  EXPECT_EQ(RouterPids(cluster_->temp_dir()).size(), 2u) << "the old router runs on, unreachable";

  // The link returns: the old head and the old router are stopped; the endpoint stays where it
  // moved.
  ASSERT_TRUE(network_->RestoreLink(1).ok());
  EXPECT_TRUE(TestCluster::WaitFor([&] { return !GenerationRuns(1); }, absl::Seconds(15)))
      << "generation 1 still runs on node-1 after its link returned";
  EXPECT_TRUE(TestCluster::WaitFor([&] { return RouterPids(cluster_->temp_dir()).size() == 1; },
                                   absl::Seconds(20)))
      << RouterPids(cluster_->temp_dir()).size() << " routers";
  EXPECT_EQ(service().value("endpoint", ""), moved.value("endpoint", ""));
}

// The head watch (agent side): a head that stops working while /health may still be 200.
class HeadWatchTest : public HealTest {
 protected:
  // Applies a 2-rank echo group with `engine_flags` and the `health:` keys in `health`, and
  // waits for generation 1 to be Ready.
  void ApplyWatched(const std::string& engine_flags, const std::string& health) {
    absl::StatusOr<CommandResult> applied =
        Fleet({"apply", WriteRecipe(engine_flags, absl::StrCat("health:\n", health)), "--timeout",
               "30s"});
    ASSERT_TRUE(applied.ok()) << applied.status();
    ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  }

  // POSTs a completion with `prompt` from the controller's host; returns at once when
  // `background` (curl then gives up after 30 s on its own).
  void Send(const std::string& prompt, bool background) {
    const std::string curl = absl::StrCat(
        "curl -sS --noproxy '*' -m 30 -H 'Content-Type: application/json' -d '{\"model\": "
        "\"fleet-echo\", \"prompt\": \"",
        prompt, "\", \"max_tokens\": 8}' http://", network_->host(1).ip, ":", port_,
        "/v1/completions >/dev/null 2>&1", background ? " &" : "");
    absl::StatusOr<CommandResult> r =
        RunCommand(network_->Wrap(0, {"sh", "-c", curl}), std::chrono::seconds(40));
    ASSERT_TRUE(r.ok()) << r.status();
  }

  void ExpectRestartedBecause(const std::string& why) {
    ASSERT_TRUE(WaitForState("Ready", 2, absl::Seconds(40))) << Describe().dump() << Events();
    ExpectOnlyGeneration(2);
    EXPECT_TRUE(absl::StrContains(Completion(), R"("text":"hello")"));
    std::string events = Events();
    EXPECT_TRUE(absl::StrContains(events, why)) << events;
  }
};

TEST_F(HeadWatchTest, AWedgedHeadWithARequestRunningIsRestarted) {
  ASSERT_NO_FATAL_FAILURE(ApplyWatched("--wedge-on-prompt WEDGE",
                                       "  watch_period: 300ms\n  stall_timeout: 3s\n"
                                       "  idle_probe_after: 1h\n"));
  ASSERT_TRUE(WaitForState("Ready", 1, absl::Seconds(30))) << Describe().dump();
  const absl::Time wedged = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Send("WEDGE", /*background=*/false));
  ASSERT_NO_FATAL_FAILURE(Send("this one hangs", /*background=*/true));
  ASSERT_NO_FATAL_FAILURE(ExpectRestartedBecause("request(s) running but no token generated"));
  std::printf("[ TIMING   ] wedged head (stall_timeout 3s) -> generation 2 Ready in %s\n",
              absl::FormatDuration(absl::Now() - wedged).c_str());
}

TEST_F(HeadWatchTest, AHeadWhoseHealthFailsIsRestarted) {
  ASSERT_NO_FATAL_FAILURE(ApplyWatched("--unhealthy-on-prompt SICK",
                                       "  watch_period: 300ms\n  failure_threshold: 2\n"
                                       "  idle_probe_after: 1h\n"));
  ASSERT_TRUE(WaitForState("Ready", 1, absl::Seconds(30))) << Describe().dump();
  ASSERT_NO_FATAL_FAILURE(Send("SICK", /*background=*/false));
  ASSERT_NO_FATAL_FAILURE(ExpectRestartedBecause("failed its health check 2 times in a row"));
}

TEST_F(HeadWatchTest, AnIdleHeadThatCannotGiveOneTokenIsRestarted) {
  ASSERT_NO_FATAL_FAILURE(ApplyWatched("--wedge-on-prompt WEDGE",
                                       "  watch_period: 300ms\n  idle_probe_after: 2s\n"
                                       "  idle_probe_timeout: 1s\n  stall_timeout: 1h\n"));
  ASSERT_TRUE(WaitForState("Ready", 1, absl::Seconds(30))) << Describe().dump();
  ASSERT_NO_FATAL_FAILURE(Send("WEDGE", /*background=*/false));
  ASSERT_NO_FATAL_FAILURE(ExpectRestartedBecause("a one-token completion failed within 1s"));
}

}  // namespace
}  // namespace fleet::testing
