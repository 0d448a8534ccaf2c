// The router end to end: a controller and two agents on their own hosts of a TestNetwork, an
// application of two 1-node fleet-engine replicas behind its HAProxy router (run by node-1's
// agent), driven through the real `fleet` CLI. Each test asserts what a client of the endpoint
// sees: answers from both replicas, no failed request while a replica's head is killed, the same
// URL after its restart, and zero failed streamed requests during `fleet roll`.

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
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
constexpr char kApp[] = "routed";
constexpr int kRouterPort = 8100;

// Requests sent through the router by a client thread until stopped, and how many failed.
struct ClientLoad {
  std::atomic<int> sent{0};
  std::atomic<int> failed{0};
  absl::Mutex mu;
  std::vector<std::string> failures ABSL_GUARDED_BY(mu);
};

class RouterTest : public ClusterFixture {
 protected:
  void SetUp() override {
    if (!HaveHaproxy()) GTEST_SKIP() << "haproxy is not installed (scripts/setup.sh installs it)";
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kHosts), FLEET_BINARY));
    ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
    ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                             absl::Seconds(15)));
  }

  void TearDown() override {
    if (cluster_ != nullptr) (void)Fleet({"stop", kApp});
    std::vector<pid_t> left = EnginePids("fleet-engine", absl::StrCat(kApp, "-0"));
    std::vector<pid_t> more = EnginePids("fleet-engine", absl::StrCat(kApp, "-1"));
    left.insert(left.end(), more.begin(), more.end());
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " engine processes left after the test";
    ClusterFixture::TearDown();
  }

  // `max_seq_len` changes the recipe without changing its placement.
  std::string WriteRecipe(int max_seq_len = 256) {
    std::string path = absl::StrCat(cluster_->temp_dir(), "/", kApp, ".yaml");
    std::ofstream(path) << absl::StrCat(R"(recipe_version: "2"
name: routed
engine: native
runtime: process
nodes: 1
replicas: 2
defaults:
  port: 8000
command: >-
  fleet-engine serve --device cpu --port {port} --hidden-size 64 --num-layers 2 --num-heads 4
  --num-experts 4 --experts-per-token 2 --expert-ffn-size 64 --vocab-size 256
  --max-num-seqs 8 --max-seq-len )",
                                        max_seq_len, R"(
router:
  port: )",
                                        kRouterPort, R"(
rollout:
  drain_timeout: 20s
health:
  start_timeout: 1m
)");
    return path;
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args,
                                      absl::Duration timeout = absl::Seconds(90)) {
    return cluster_->RunCli(args, timeout);
  }

  void Apply() {
    absl::StatusOr<CommandResult> applied = Fleet({"apply", WriteRecipe(), "--timeout", "60s"});
    ASSERT_TRUE(applied.ok()) << applied.status();
    ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
    // `fleet apply` prints the one endpoint, on the router's node (node-1: replica 0's head).
    EXPECT_TRUE(absl::StrContains(applied->stdout_text, Endpoint())) << applied->stdout_text;
  }

  std::string Endpoint() const {
    return absl::StrCat("http://", network_->host(1).ip, ":", kRouterPort);
  }

  Json Services() {
    absl::StatusOr<CommandResult> r = Fleet({"get", "services", "-o", "json"});
    if (!r.ok() || r->exit_code != 0) return Json();
    return Json::parse(r->stdout_text, nullptr, false);
  }

  bool WaitForReadyReplicas(int ready, absl::Duration timeout) {
    return TestCluster::WaitFor(
        [&] {
          Json s = Services();
          return s.contains("items") && s["items"].size() == 1 &&
                 s["items"][0]["replicas"].value("ready", 0) == ready;
        },
        timeout);
  }

  // One request through the router from the controller's host; its body, or why it failed.
  absl::StatusOr<std::string> Request(bool stream) {
    const std::string body = absl::StrCat(
        R"({"model": "fleet-engine-synthetic", "prompt": "hello", "max_tokens": 8, "stream": )",
        stream ? "true" : "false", "}");
    absl::StatusOr<CommandResult> r =
        RunCommand(network_->Wrap(0, {"curl", "-sS", "-N", "--fail", "--noproxy", "*", "-m", "20",
                                      "-H", "Content-Type: application/json", "-d", body,
                                      absl::StrCat(Endpoint(), "/v1/completions")}),
                   std::chrono::seconds(30));
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) {
      return absl::UnavailableError(absl::StrCat("curl exit ", r->exit_code, ": ", r->stderr_text));
    }
    if (stream && !absl::StrContains(r->stdout_text, "data: [DONE]")) {
      return absl::DataLossError(absl::StrCat("stream ended early: ", r->stdout_text));
    }
    return r->stdout_text;
  }

  // Starts a client that sends requests one after another until `stop`.
  std::thread StartClient(ClientLoad& load, std::atomic<bool>& stop, bool stream) {
    return std::thread([this, &load, &stop, stream] {
      // Bounded: at most 5,000 requests (a roll takes seconds).
      for (int i = 0; i < 5000 && !stop.load(); ++i) {
        absl::StatusOr<std::string> r = Request(stream);
        ++load.sent;
        if (!r.ok()) {
          ++load.failed;
          absl::MutexLock lock(&load.mu);
          load.failures.push_back(std::string(r.status().message()));
        }
      }
    });
  }

  Json Groups() {
    absl::StatusOr<CommandResult> r = Fleet({"get", "groups", "-o", "json"});
    if (!r.ok() || r->exit_code != 0) return Json();
    return Json::parse(r->stdout_text, nullptr, false);
  }

  // The generation of group `name` when it is Ready, else 0.
  uint64_t ReadyGeneration(const std::string& name) {
    Json doc = Groups();
    if (!doc.contains("items")) return 0;
    for (const Json& g : doc["items"]) {
      if (g.value("name", "") != name || g.value("state", "") != "Ready") continue;
      uint64_t generation = 0;
      (void)absl::SimpleAtoi(g.value("generation", "0"), &generation);
      return generation;
    }
    return 0;
  }

  // Two Ready replicas and a client sending requests through the router without pause
  // (streamed or not): `action` runs once the client has sent 3, and the client goes on until it
  // has sent 3 more after it.
  void DuringClientLoad(bool stream, const std::function<void()>& action, ClientLoad& load) {
    ASSERT_NO_FATAL_FAILURE(Apply());
    ASSERT_TRUE(WaitForReadyReplicas(2, absl::Seconds(20))) << Services().dump();
    std::atomic<bool> stop{false};
    std::thread client = StartClient(load, stop, stream);
    const bool started =
        TestCluster::WaitFor([&] { return load.sent.load() >= 3; }, absl::Seconds(20));
    if (started) action();
    const int sent_before = load.sent.load();
    EXPECT_TRUE(TestCluster::WaitFor([&] { return load.sent.load() >= sent_before + 3; },
                                     absl::Seconds(20)));
    stop = true;
    client.join();
    ASSERT_TRUE(started) << "the client sent nothing through the router";
  }

  // No request of `load` failed; prints how many went through during `what`.
  static void ExpectNoFailedRequest(ClientLoad& load, const char* what) {
    absl::MutexLock lock(&load.mu);
    EXPECT_EQ(load.failed.load(), 0)
        << load.sent.load()
        << " sent; first failure: " << (load.failures.empty() ? "" : load.failures.front());
    std::printf("[ FIGURE   ] %s: %d requests through the router, %d failed\n", what,
                load.sent.load(), load.failed.load());
  }
};

TEST_F(RouterTest, RequestsThroughTheEndpointReachBothReplicas) {
  ASSERT_NO_FATAL_FAILURE(Apply());
  ASSERT_TRUE(WaitForReadyReplicas(2, absl::Seconds(20))) << Services().dump();
  Json s = Services()["items"][0];
  EXPECT_EQ(s.value("name", ""), kApp);
  EXPECT_EQ(s.value("endpoint", ""), Endpoint());
  EXPECT_EQ(s["replicas"].value("total", 0), 2);
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<std::string> r = Request(i % 2 == 0);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  // Each replica answered some of them (fewest requests in flight, ties in turn): its own
  // vllm:request_success_total counts them.
  for (int host : {1, 2}) {
    absl::StatusOr<CommandResult> m = RunCommand(
        network_->Wrap(0, {"curl", "-sS", "--noproxy", "*", "-m", "5",
                           absl::StrCat("http://", network_->host(host).ip, ":8000/metrics")}),
        std::chrono::seconds(10));
    ASSERT_TRUE(m.ok()) << m.status();
    // The readiness probe generated 1 token; a request of ours 8 more.
    double tokens = 0;
    for (absl::string_view line : absl::StrSplit(m->stdout_text, '\n')) {
      if (!absl::StartsWith(line, "vllm:generation_tokens_total{")) continue;
      (void)absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &tokens);
    }
    EXPECT_GT(tokens, 8) << "node-" << host << " answered none of the requests\n" << m->stdout_text;
  }
  // The router's own metrics (HAProxy's exporter) count them too.
  absl::StatusOr<CommandResult> own =
      RunCommand(network_->Wrap(0, {"curl", "-sS", "--noproxy", "*", "-m", "5",
                                    absl::StrCat(Endpoint(), "/router/metrics")}),
                 std::chrono::seconds(10));
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_TRUE(absl::StrContains(own->stdout_text, "haproxy_backend_http_responses_total"));
}

TEST_F(RouterTest, KilledHeadTheEndpointKeepsAnsweringAndTheSameUrlWorksAfterTheRestart) {
  ClientLoad load;
  bool killed = false, healed = false, back = false;
  ASSERT_NO_FATAL_FAILURE(DuringClientLoad(
      /*stream=*/false,
      [&] {
        std::vector<pid_t> heads = EnginePids("fleet-engine", absl::StrCat(kApp, "-0"));
        killed = !heads.empty();
        for (pid_t pid : heads) ::kill(pid, SIGKILL);
        healed = killed && TestCluster::WaitFor([&] { return ReadyGeneration("routed-0") >= 2; },
                                                absl::Seconds(60));
        back = healed && WaitForReadyReplicas(2, absl::Seconds(20));
      },
      load));
  ASSERT_TRUE(killed) << "no head process of " << kApp << "-0 found";
  ASSERT_TRUE(healed) << Groups().dump();
  EXPECT_TRUE(back) << Services().dump();
  ExpectNoFailedRequest(load, "head killed");
  absl::StatusOr<std::string> after = Request(/*stream=*/true);
  EXPECT_TRUE(after.ok()) << after.status();
}

TEST_F(RouterTest, RollOverTwoReplicasWhileAClientStreamsLosesNoRequest) {
  ClientLoad load;
  absl::StatusOr<CommandResult> rolled = absl::UnknownError("not run");
  ASSERT_NO_FATAL_FAILURE(DuringClientLoad(
      /*stream=*/true,
      [&] {
        rolled = Fleet({"roll", kApp}, absl::Minutes(4));
      },
      load));
  ASSERT_TRUE(rolled.ok()) << rolled.status();
  EXPECT_EQ(rolled->exit_code, 0) << rolled->stdout_text << rolled->stderr_text;
  EXPECT_TRUE(absl::StrContains(rolled->stdout_text, "routed-0 out of rotation, draining"))
      << rolled->stdout_text;
  EXPECT_TRUE(absl::StrContains(rolled->stdout_text, "group routed-1 rolled: generation 2"))
      << rolled->stdout_text;
  EXPECT_EQ(ReadyGeneration("routed-0"), 2u);
  EXPECT_EQ(ReadyGeneration("routed-1"), 2u);
  ExpectNoFailedRequest(load, "roll (streamed)");
}

TEST_F(RouterTest, ChangedRecipeAppliedOverTwoReplicasRollsWhileAClientStreamsLosesNoRequest) {
  ClientLoad load;
  absl::StatusOr<CommandResult> applied = absl::UnknownError("not run");
  ASSERT_NO_FATAL_FAILURE(DuringClientLoad(
      /*stream=*/true,
      [&] {
        applied = Fleet({"apply", WriteRecipe(/*max_seq_len=*/512), "--timeout", "60s"},
                        absl::Minutes(4));
      },
      load));
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  // Each replica drained, restarted on the new recipe and put back before the next one.
  for (const char* step :
       {"roll: routed-0 out of rotation, draining", "roll: routed-0 back in rotation",
        "roll: routed-1 out of rotation, draining", "group routed-1 rolled: generation 2"}) {
    EXPECT_TRUE(absl::StrContains(applied->stdout_text, step)) << step << "\n"
                                                               << applied->stdout_text;
  }
  EXPECT_LT(applied->stdout_text.find("routed-0 back in rotation"),
            applied->stdout_text.find("routed-1 out of rotation"))
      << applied->stdout_text;
  EXPECT_EQ(ReadyGeneration("routed-0"), 2u);
  EXPECT_EQ(ReadyGeneration("routed-1"), 2u);
  for (const std::string group : {"routed-0", "routed-1"}) {
    std::vector<pid_t> pids = EnginePids("fleet-engine", group);
    ASSERT_EQ(pids.size(), 1u) << group;
    absl::StatusOr<std::string> cmdline =
        ReadFileToString(absl::StrCat("/proc/", pids[0], "/cmdline"));
    ASSERT_TRUE(cmdline.ok());
    EXPECT_TRUE(absl::StrContains(*cmdline, std::string("--max-seq-len") + '\0' + "512")) << group;
  }
  ExpectNoFailedRequest(load, "apply of a changed recipe (streamed)");
}

}  // namespace
}  // namespace fleet::testing
