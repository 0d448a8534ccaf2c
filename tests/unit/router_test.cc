// The router's pure parts and its controller-side policy, with fakes and a fake clock: the
// HAProxy configuration, the runtime-API lines built from typed requests (and refused ones), the
// `show stat` parser, the recipe keys, `fleet roll` as a step function, and RouterManager
// against a fake agent (start, slots following group states, drain during a roll, a router
// that went away started again).
#include "launch/router/router.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/fake_clock.h"
#include "common/fake_executor.h"
#include "controller/groups/fake_agent_client.h"
#include "controller/router/fake_engine_metrics.h"
#include "controller/router/rollout.h"
#include "controller/router/router_manager.h"
#include "controller/store/fake_store.h"
#include "gtest/gtest.h"
#include "launch/recipe.h"

namespace fleet {
namespace {

using controller::FakeAgentClient;
using controller::FakeEngineMetrics;
using controller::FakeStore;
using controller::Roll;
using controller::RollActions;
using controller::RollReplica;
using controller::RouterManager;

TEST(RouterConfigTest, StreamsBalancesByRequestsInFlightAndRetriesUnsentRequests) {
  absl::StatusOr<std::string> config =
      engine::RenderRouterConfig({.address = "10.0.0.2", .port = 8100, .slots = 3});
  ASSERT_TRUE(config.ok()) << config.status();
  for (const char* line :
       {"stats socket unix@admin.sock mode 600 level admin", "bind 10.0.0.2:8100",
        "balance leastconn", "retry-on conn-failure empty-response response-timeout",
        "option redispatch", "server-template r 1-3 127.0.0.1:9 disabled",
        "http-request use-service prometheus-exporter if { path /router/metrics }"}) {
    EXPECT_TRUE(absl::StrContains(*config, line)) << line << "\n" << *config;
  }
  // Nothing that would hold a streamed answer back or check servers behind SparkFleet's back.
  for (const char* absent : {"http-buffer-request", "compression", " check"}) {
    EXPECT_FALSE(absl::StrContains(*config, absent)) << absent;
  }
  EXPECT_FALSE(engine::RenderRouterConfig({.address = "10.0.0.2", .port = 0, .slots = 1}).ok());
  EXPECT_FALSE(engine::RenderRouterConfig({.address = "10.0.0.2", .port = 8100, .slots = 65}).ok());
  EXPECT_FALSE(engine::RenderRouterConfig({.address = "a b", .port = 8100, .slots = 1}).ok());
}

TEST(RouterCommandTest, TypedRequestsBecomeFixedLines) {
  v1::RouterCommandRequest request;
  v1::RouterServer& s = *request.mutable_set_servers()->add_servers();
  s.set_slot(2);
  s.set_host("10.0.0.3");
  s.set_port(8000);
  s.set_weight(10);
  s.set_state(v1::ROUTER_SERVER_STATE_DRAIN);
  absl::StatusOr<std::vector<std::string>> lines = engine::RouterCommandLines(request);
  ASSERT_TRUE(lines.ok()) << lines.status();
  EXPECT_EQ(*lines, (std::vector<std::string>{"set server replicas/r2 addr 10.0.0.3 port 8000",
                                              "set weight replicas/r2 10",
                                              "set server replicas/r2 state drain"}));
  v1::RouterCommandRequest show;
  show.mutable_show();
  EXPECT_EQ(*engine::RouterCommandLines(show), std::vector<std::string>{"show stat -1 4 -1"});
}

TEST(RouterCommandTest, RefusesWhatCouldSmuggleAnotherCommand) {
  auto one = [](auto edit) {
    v1::RouterCommandRequest request;
    v1::RouterServer& s = *request.mutable_set_servers()->add_servers();
    s.set_slot(1);
    edit(s);
    return engine::RouterCommandLines(request).status();
  };
  EXPECT_TRUE(absl::IsInvalidArgument(one([](v1::RouterServer& s) {
    s.set_host("10.0.0.1; shutdown frontend api");
    s.set_port(80);
  })));
  EXPECT_TRUE(absl::IsInvalidArgument(one([](v1::RouterServer& s) { s.set_slot(0); })));
  EXPECT_TRUE(absl::IsInvalidArgument(one([](v1::RouterServer& s) { s.set_weight(300); })));
  EXPECT_TRUE(absl::IsInvalidArgument(one([](v1::RouterServer& s) { s.set_host("a"); })));
  EXPECT_TRUE(absl::IsInvalidArgument(engine::RouterCommandLines({}).status()));
}

TEST(RouterCommandTest, RepliesAreJudgedAsHaproxyWordsThem) {
  EXPECT_TRUE(engine::CheckRouterReply("set server replicas/r1 state ready", "\n").ok());
  EXPECT_TRUE(engine::CheckRouterReply("x",
                                       "IP changed from '127.0.0.1' to '10.0.0.2', port "
                                       "changed from '9' to '8000' by 'stats socket "
                                       "command'\n\n")
                  .ok());
  EXPECT_TRUE(engine::CheckRouterReply("x",
                                       "no need to change the addr, no need to change the "
                                       "port by 'stats socket command'\n")
                  .ok());
  absl::Status refused =
      engine::CheckRouterReply("set server replicas/r9 state ready", "No such server.\n\n");
  EXPECT_TRUE(absl::IsFailedPrecondition(refused));
  EXPECT_TRUE(absl::StrContains(refused.message(), "No such server.")) << refused;
}

TEST(RouterShowTest, ParsesHaproxyShowStat) {
  // Trimmed from HAProxy 2.6.12's answer (the columns that matter, in its order).
  const std::string csv =
      "# pxname,svname,qcur,qmax,scur,smax,status,weight,addr,\n"
      "replicas,r1,0,0,3,4,no check,1,10.0.0.2:8000,\n"
      "replicas,r2,0,0,1,1,DRAIN,1,10.0.0.3:8000,\n"
      "replicas,r3,0,0,0,0,MAINT,1,127.0.0.1:9,\n"
      "api,FRONTEND,,,0,0,OPEN,,,\n";
  absl::StatusOr<std::vector<v1::RouterServer>> servers = engine::ParseRouterShow(csv);
  ASSERT_TRUE(servers.ok()) << servers.status();
  ASSERT_EQ(servers->size(), 3u);
  EXPECT_EQ((*servers)[0].state(), v1::ROUTER_SERVER_STATE_READY);
  EXPECT_EQ((*servers)[0].current_sessions(), 3u);
  EXPECT_EQ((*servers)[0].host(), "10.0.0.2");
  EXPECT_EQ((*servers)[0].port(), 8000u);
  EXPECT_EQ((*servers)[1].state(), v1::ROUTER_SERVER_STATE_DRAIN);
  EXPECT_EQ((*servers)[2].state(), v1::ROUTER_SERVER_STATE_MAINT);
  EXPECT_TRUE(absl::IsInvalidArgument(engine::ParseRouterShow("Unknown command\n").status()));
}

TEST(RouterRecipeTest, RolloutAndRouterKeys) {
  absl::StatusOr<engine::Recipe> r = engine::ParseRecipe("r.yaml", R"(recipe_version: "2"
name: r
engine: exec
runtime: process
command: x
rollout:
  max_unavailable: 2
  drain_timeout: 90s
router:
  port: 9100
)");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rollout.max_unavailable, 2);
  EXPECT_EQ(r->rollout.drain_timeout, absl::Seconds(90));
  EXPECT_EQ(r->router.port, 9100u);

  absl::Status bad = engine::ParseRecipe("r.yaml", R"(recipe_version: "2"
name: r
engine: exec
runtime: process
command: x
rollout:
  max_unavailble: 2
)")
                         .status();
  EXPECT_TRUE(
      absl::StrContains(bad.message(), "r.yaml:7:3: unknown key \"rollout.max_unavailble\""))
      << bad;
  EXPECT_TRUE(absl::StrContains(bad.message(), "did you mean \"max_unavailable\"")) << bad;
  bad = engine::ParseRecipe("r.yaml",
                            "recipe_version: \"2\"\nname: r\nengine: exec\nruntime: "
                            "process\ncommand: x\nrouter: {port: 70000}\n")
            .status();
  EXPECT_TRUE(absl::StrContains(bad.message(),
                                "r.yaml:6:16: \"router.port\" must be an integer "
                                "from 1 to 65535, found \"70000\""))
      << bad;
  bad = engine::ParseRecipe("r.yaml",
                            "recipe_version: \"2\"\nname: r\nengine: exec\nruntime: "
                            "process\ncommand: x\nrollout: {drain_timeout: soon}\n")
            .status();
  EXPECT_TRUE(absl::StrContains(
      bad.message(), "r.yaml:6:26: \"rollout.drain_timeout\" must be a positive duration"))
      << bad;
}

// Two replicas rolled one at a time: each drains, restarts, comes back, and only then the next.
TEST(RollTest, OneAtATimeDrainRestartReadyBackIn) {
  FakeClock clock;
  Roll roll(2, {.max_unavailable = 1, .drain_timeout = absl::Seconds(60)});
  std::vector<RollReplica> r = {{"a-0", 1, true, true, 2}, {"a-1", 1, true, true, 0}};
  RollActions a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.drain, std::vector<int>{0});  // only one at a time
  EXPECT_TRUE(a.restart.empty());
  r[0].in_rotation = false;
  clock.Advance(absl::Seconds(1));
  a = roll.Step(clock.Now(), r);  // 2 requests still running: wait
  EXPECT_TRUE(a.restart.empty());
  r[0].requests_running = 0;
  a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.restart, std::vector<int>{0});
  r[0].ready = false;
  a = roll.Step(clock.Now(), r);
  EXPECT_TRUE(a.put_back.empty());
  EXPECT_TRUE(a.drain.empty()) << "replica 1 must wait until replica 0 serves again";
  r[0] = {"a-0", 2, true, false, 0};
  a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.put_back, std::vector<int>{0});
  EXPECT_TRUE(a.drain.empty());
  r[0].in_rotation = true;
  a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.drain, std::vector<int>{1});
  r[1].in_rotation = false;
  a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.restart, std::vector<int>{1});
  r[1] = {"a-1", 2, true, false, 0};
  a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.put_back, std::vector<int>{1});
  EXPECT_FALSE(a.done);
  r[1].in_rotation = true;
  a = roll.Step(clock.Now(), r);
  EXPECT_TRUE(a.done);
  EXPECT_TRUE(a.failed.ok());
}

TEST(RollTest, DrainTimeoutRestartsAnywayAndAReplicaThatDoesNotReturnStopsTheRoll) {
  FakeClock clock;
  Roll roll(2, {.max_unavailable = 1,
                .drain_timeout = absl::Seconds(10),
                .ready_timeout = absl::Seconds(30)});
  std::vector<RollReplica> r = {{"a-0", 1, true, true, 5}, {"a-1", 1, true, true, 0}};
  roll.Step(clock.Now(), r);
  clock.Advance(absl::Seconds(9));
  EXPECT_TRUE(roll.Step(clock.Now(), r).restart.empty());
  clock.Advance(absl::Seconds(1));
  RollActions a = roll.Step(clock.Now(), r);
  EXPECT_EQ(a.restart, std::vector<int>{0});
  ASSERT_FALSE(a.steps.empty());
  EXPECT_TRUE(absl::StrContains(a.steps.back(), "still had 5 requests")) << a.steps.back();
  r[0].ready = false;
  clock.Advance(absl::Seconds(29));
  EXPECT_TRUE(roll.Step(clock.Now(), r).failed.ok());
  clock.Advance(absl::Seconds(1));
  a = roll.Step(clock.Now(), r);
  ASSERT_FALSE(a.failed.ok());
  EXPECT_TRUE(absl::StrContains(a.failed.message(), "a-0 did not come back Ready")) << a.failed;
  EXPECT_TRUE(absl::StrContains(a.failed.message(), "not touched: a-1")) << a.failed;
}

TEST(RollTest, MaxUnavailableTwoRollsTwoAtOnceAndAFailedRestartStops) {
  FakeClock clock;
  Roll roll(3, {.max_unavailable = 2});
  std::vector<RollReplica> r = {
      {"a-0", 1, true, true, 0}, {"a-1", 1, true, true, 0}, {"a-2", 1, true, true, 0}};
  EXPECT_EQ(roll.Step(clock.Now(), r).drain, (std::vector<int>{0, 1}));
  EXPECT_EQ(roll.Step(clock.Now(), r).restart, (std::vector<int>{0, 1}));
  roll.RestartFailed(1, absl::UnavailableError("node-2 did not confirm"));
  RollActions a = roll.Step(clock.Now(), r);
  ASSERT_FALSE(a.failed.ok());
  EXPECT_TRUE(absl::StrContains(a.failed.message(), "node-2 did not confirm")) << a.failed;
}

v1::Group MakeGroup(const std::string& name, v1::GroupState state, const std::string& ip,
                    uint64_t generation = 1) {
  v1::Group g;
  g.set_name(name);
  g.set_application("app");
  g.set_state(state);
  g.set_generation(generation);
  g.set_endpoint("http://" + ip + ":8000");
  v1::GroupRank& rank = *g.add_ranks();
  rank.set_node_id("id-" + ip);
  rank.set_node_name("node-" + ip);
  rank.set_node_address(ip + ":7101");
  return g;
}

class RouterManagerTest : public ::testing::Test {
 protected:
  RouterManagerTest()
      : routers_(
            {}, &clock_, &store_, &agents_, &metrics_, &executor_, [this] { return groups_; },
            [this] { return lost_; },
            [this](const std::string& g) {
              restarted_.push_back(g);
              for (v1::Group& group : groups_) {
                if (group.name() == g) group.set_generation(group.generation() + 1);
              }
              return absl::OkStatus();
            },
            [this](absl::Duration d) { clock_.Advance(d); }) {}

  v1::RouterServerState SlotState(uint32_t slot) {
    absl::StatusOr<v1::RouterCommandResponse> shown = Show();
    for (const v1::RouterServer& s : shown->servers()) {
      if (s.slot() == slot) return s.state();
    }
    return v1::ROUTER_SERVER_STATE_UNSPECIFIED;
  }
  absl::StatusOr<v1::RouterCommandResponse> Show() {
    v1::RouterCommandRequest show;
    show.set_group("app.router");
    show.mutable_show();
    return agents_.RouterCommand("10.0.0.2:7101", "", show, absl::Seconds(1));
  }

  FakeClock clock_;
  FakeStore store_;
  FakeAgentClient agents_;
  FakeEngineMetrics metrics_;
  FakeExecutor executor_;
  std::vector<v1::Group> groups_ = {MakeGroup("app-0", v1::GROUP_STATE_READY, "10.0.0.2"),
                                    MakeGroup("app-1", v1::GROUP_STATE_STARTING, "10.0.0.3")};
  std::vector<std::string> restarted_;
  absl::flat_hash_set<std::string> lost_;
  RouterManager routers_;
};

TEST_F(RouterManagerTest, StartsOnTheFirstHeadAndSlotsFollowTheGroups) {
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  std::vector<FakeAgentClient::Call<v1::StartShardRequest>> starts = agents_.starts();
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].address, "10.0.0.2:7101");
  const v1::ShardSpec& spec = starts[0].request.spec();
  EXPECT_EQ(spec.group(), "app.router");
  EXPECT_EQ(spec.argv(0), "haproxy");
  ASSERT_EQ(spec.files_size(), 1);
  EXPECT_TRUE(absl::StrContains(spec.files(0).content(), "bind 10.0.0.2:8100"));
  EXPECT_TRUE(absl::StrContains(spec.files(0).content(), "server-template r 1-2 "));

  ASSERT_TRUE(routers_.Reconcile("app").ok());
  EXPECT_EQ(SlotState(1), v1::ROUTER_SERVER_STATE_READY);
  EXPECT_EQ(SlotState(2), v1::ROUTER_SERVER_STATE_MAINT);  // not Ready yet
  absl::StatusOr<std::vector<v1::Service>> services = routers_.List("");
  ASSERT_TRUE(services.ok());
  ASSERT_EQ(services->size(), 1u);
  EXPECT_EQ((*services)[0].endpoint(), "http://10.0.0.2:8100");
  EXPECT_EQ((*services)[0].replicas_ready(), 1u);
  EXPECT_EQ((*services)[0].replicas_total(), 2u);

  groups_[1].set_state(v1::GROUP_STATE_READY);
  groups_[0].set_state(v1::GROUP_STATE_STARTING);  // its head died: out of rotation
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  EXPECT_EQ(SlotState(1), v1::ROUTER_SERVER_STATE_MAINT);
  EXPECT_EQ(SlotState(2), v1::ROUTER_SERVER_STATE_READY);
  // Nothing changed: only a `show` is sent.
  const size_t before = agents_.router_commands().size();
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  EXPECT_EQ(agents_.router_commands().size(), before + 1);
}

TEST_F(RouterManagerTest, ARouterThatWentAwayIsStartedAgainOnANewerGeneration) {
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  v1::StopShardsRequest stop;
  stop.set_group("app.router");
  ASSERT_TRUE(agents_.StopShards("10.0.0.2:7101", "", stop, absl::Seconds(1)).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  EXPECT_EQ(agents_.starts().size(), 1u) << "started again within restart_interval (2 s)";
  clock_.Advance(absl::Seconds(2));
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  std::vector<FakeAgentClient::Call<v1::StartShardRequest>> starts = agents_.starts();
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_GT(starts[1].request.spec().generation(), starts[0].request.spec().generation());
}

TEST_F(RouterManagerTest, StoppedApplicationStopsItsRouter) {
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  for (v1::Group& g : groups_) g.set_state(v1::GROUP_STATE_STOPPED);
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  ASSERT_FALSE(agents_.stops().empty());
  EXPECT_EQ(agents_.stops().back().request.group(), "app.router");
  EXPECT_TRUE(absl::IsNotFound(routers_.List("app").status()));
}

TEST_F(RouterManagerTest, ARouterWhoseNodeIsLostMovesAndTheOldOneStopsWhenItReturns) {
  groups_[1].set_state(v1::GROUP_STATE_READY);
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  ASSERT_EQ(routers_.List("app")->at(0).endpoint(), "http://10.0.0.2:8100");

  lost_ = {"id-10.0.0.2"};
  groups_[0].set_state(v1::GROUP_STATE_STARTING);  // being placed again elsewhere
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  std::vector<FakeAgentClient::Call<v1::StartShardRequest>> starts = agents_.starts();
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[1].address, "10.0.0.3:7101");
  EXPECT_TRUE(absl::StrContains(starts[1].request.spec().files(0).content(), "bind 10.0.0.3:8100"));
  EXPECT_GT(starts[1].request.spec().generation(), starts[0].request.spec().generation());
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  absl::StatusOr<std::vector<v1::Service>> services = routers_.List("app");
  ASSERT_TRUE(services.ok());
  EXPECT_EQ(services->at(0).endpoint(), "http://10.0.0.3:8100");
  EXPECT_EQ(services->at(0).node_name(), "node-10.0.0.3");
  EXPECT_EQ(services->at(0).replicas_ready(), 1u);
  EXPECT_TRUE(agents_.stops().empty()) << "nothing is sent to a Lost node";

  // The node answers again: its old router is stopped; the endpoint stays where it moved.
  lost_.clear();
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  std::vector<FakeAgentClient::Call<v1::StopShardsRequest>> stops = agents_.stops();
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].address, "10.0.0.2:7101");
  EXPECT_EQ(stops[0].request.group(), "app.router");
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  EXPECT_EQ(agents_.stops().size(), 1u) << "stopped once";
  EXPECT_EQ(routers_.List("app")->at(0).endpoint(), "http://10.0.0.3:8100");
}

TEST_F(RouterManagerTest, ARestartedControllerAdoptsItsRouterAndStopsTheOneLeftOnALostNode) {
  groups_[1].set_state(v1::GROUP_STATE_READY);
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  lost_ = {"id-10.0.0.2"};
  ASSERT_TRUE(routers_.Reconcile("app").ok());  // moved to 10.0.0.3
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  ASSERT_EQ(agents_.starts().size(), 2u);

  // A new controller on the same store and agents, while 10.0.0.2 is still Lost.
  RouterManager restarted(
      {}, &clock_, &store_, &agents_, &metrics_, &executor_, [this] { return groups_; },
      [this] { return lost_; }, [](const std::string&) { return absl::OkStatus(); },
      [](absl::Duration) {});
  ASSERT_TRUE(restarted.Load().ok());
  ASSERT_TRUE(restarted.Reconcile("app").ok());
  EXPECT_EQ(agents_.starts().size(), 2u) << "the running router is adopted, not started again";
  EXPECT_EQ(restarted.List("app")->at(0).endpoint(), "http://10.0.0.3:8100");
  EXPECT_TRUE(agents_.stops().empty());
  lost_.clear();
  ASSERT_TRUE(restarted.Reconcile("app").ok());
  ASSERT_EQ(agents_.stops().size(), 1u);
  EXPECT_EQ(agents_.stops()[0].address, "10.0.0.2:7101");

  // Stopping the application forgets the placement.
  for (v1::Group& g : groups_) g.set_state(v1::GROUP_STATE_STOPPED);
  ASSERT_TRUE(restarted.Reconcile("app").ok());
  EXPECT_TRUE(store_.LoadRouters()->empty());
}

TEST_F(RouterManagerTest, RollDrainsRestartsAndReturnsEachReplica) {
  groups_[1].set_state(v1::GROUP_STATE_READY);
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  ASSERT_TRUE(routers_.Reconcile("app").ok());
  metrics_.Set("http://10.0.0.2:8000", 0);
  metrics_.Set("http://10.0.0.3:8000", 0);
  absl::StatusOr<v1::RollGroupResponse> rolled = routers_.Roll("app");
  ASSERT_TRUE(rolled.ok()) << rolled.status();
  EXPECT_EQ(restarted_, (std::vector<std::string>{"app-0", "app-1"}));
  bool drained_first = false;
  for (const auto& call : agents_.router_commands()) {
    for (const v1::RouterServer& s : call.request.set_servers().servers()) {
      if (s.slot() == 1 && s.state() == v1::ROUTER_SERVER_STATE_DRAIN) drained_first = true;
    }
  }
  EXPECT_TRUE(drained_first);
  EXPECT_EQ(SlotState(1), v1::ROUTER_SERVER_STATE_READY);
  EXPECT_EQ(SlotState(2), v1::ROUTER_SERVER_STATE_READY);
  ASSERT_EQ(rolled->groups_size(), 2);
  EXPECT_EQ(rolled->groups(0).generation(), 2u);
}

TEST(EngineMetricsTest, SumsVllmRequestsRunning) {
  EXPECT_EQ(*controller::SumRequestsRunning(
                "# HELP x\nvllm:num_requests_running{model_name=\"m\"} 2\n"
                "vllm:num_requests_running_total 9\nvllm:num_requests_running{engine=\"1\"} 1.0\n"),
            3);
  EXPECT_TRUE(absl::IsNotFound(controller::SumRequestsRunning("up 1\n").status()));
}

}  // namespace
}  // namespace fleet
