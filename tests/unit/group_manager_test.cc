// GroupManager with a real NodeRegistry, a fake store, a fake agent client and a fake clock:
// placement, start orders and their order, re-apply, replacement, reports folded into group
// state, stop, stale shards, lost nodes, start timeout, a controller restart, and applies and
// stops of one application in order while other applications go ahead.
#include "controller/groups/group_manager.h"

#include <optional>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "common/fake_clock.h"
#include "common/fake_executor.h"
#include "controller/groups/fake_agent_client.h"
#include "controller/store/fake_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kRecipe[] = R"(recipe_version: "2"
name: echo
engine: exec
runtime: process
nodes: 2
defaults:
  port: 8000
health:
  start_timeout: 60s
command: fleet-echo-engine --port {port}
)";

// The same group for fleet-engine, whose ranks meet in the controller's rendezvous store.
std::string NativeRecipe() {
  std::string yaml = kRecipe;
  yaml.replace(yaml.find("engine: exec"), 12, "engine: native");
  yaml.replace(yaml.find("fleet-echo-engine"), 17, "fleet-engine");
  return yaml;
}

// `yaml` with `restart.policy: never`: a rank's failure is final.
std::string NeverRestart(const std::string& yaml) {
  return absl::StrCat(yaml, "restart:\n  policy: never\n");
}

// The value of `name` in `spec`'s environment; nullopt when it is not set.
std::optional<std::string> EnvOf(const v1::ShardSpec& spec, absl::string_view name) {
  std::optional<std::string> value;
  for (const v1::EnvVar& e : spec.env()) {
    if (e.name() == name) value = e.value();
  }
  return value;
}

class GroupManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 3; ++i) AddNode(i);
  }

  void AddNode(int i) {
    v1::RegisterRequest r;
    r.mutable_identity()->set_node_id(absl::StrCat("id", i));
    r.mutable_identity()->set_name(absl::StrCat("spark-", i));
    r.set_advertise_address(absl::StrCat("10.0.0.", i, ":7101"));
    v1::NetworkInterface& itf = *r.mutable_facts()->add_interfaces();
    itf.set_name("enp1s0f1np1");
    itf.add_addresses(absl::StrCat("10.0.0.", i, "/24"));
    ASSERT_TRUE(registry_.Register(r).ok());
    registry_.SetReachability(absl::StrCat("id", i), absl::OkStatus());
    agents_.SetProbe(absl::StrCat("10.0.0.", i, ":7101"), HealthyProbe());
  }

  // What a node without RDMA or GPU whose agent may lock memory shows: preflight passes
  // an exec recipe on it.
  static v1::NodeProbe HealthyProbe() {
    v1::NodeProbe probe;
    v1::LimitsProbe& limits = *probe.mutable_limits();
    limits.set_memlock_soft(UINT64_MAX);
    limits.set_memlock_hard(UINT64_MAX);
    limits.set_shm_total_bytes(uint64_t{64} << 30);
    limits.set_memory_total_bytes(uint64_t{128} << 30);
    probe.add_unavailable("gpu: libnvidia-ml.so.1 not found: no NVIDIA driver on this node");
    return probe;
  }

  absl::StatusOr<v1::ApplyResponse> Apply(const std::vector<std::string>& overrides = {},
                                          const std::string& yaml = kRecipe) {
    v1::ApplyRequest request;
    request.set_recipe_path("recipes/echo.yaml");
    request.set_recipe_yaml(yaml);
    for (const std::string& o : overrides) request.add_overrides(o);
    return groups_.Apply(request);
  }

  // The agent of `node` reports every rank it runs of `group` in `state`.
  void Report(const std::string& node, uint64_t generation, uint32_t rank, v1::ShardState state,
              const std::string& group = "echo") {
    google::protobuf::RepeatedPtrField<v1::ShardStatus> shards;
    v1::ShardStatus& s = *shards.Add();
    s.set_group(group);
    s.set_generation(generation);
    s.set_rank(rank);
    s.set_state(state);
    if (state == v1::SHARD_STATE_FAILED) s.set_exit("exited with status 1");
    groups_.ReportShards(node, shards);
  }

  v1::Group Get(const std::string& name = "echo") {
    absl::StatusOr<v1::GetGroupResponse> r = groups_.Get(name);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->group() : v1::Group();
  }

  FakeClock clock_;
  FakeStore store_;
  NodeRegistry registry_{RegistryConfig{}, &clock_, &store_};
  FakeAgentClient agents_;
  RendezvousStore rendezvous_{&clock_};
  FakeExecutor executor_;
  GroupManager groups_{GroupManagerConfig{}, &clock_,   &store_, &registry_, &agents_,
                       &rendezvous_,         &executor_};
};

TEST_F(GroupManagerTest, ApplyPlacesOrdersHeadFirstAndStores) {
  absl::StatusOr<v1::ApplyResponse> r = Apply();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action(), "created");
  ASSERT_EQ(r->groups_size(), 1);
  const v1::Group& g = r->groups(0);
  EXPECT_EQ(g.name(), "echo");
  EXPECT_EQ(g.generation(), 1u);
  EXPECT_EQ(g.state(), v1::GROUP_STATE_STARTING);
  EXPECT_EQ(g.endpoint(), "http://10.0.0.1:8000");
  ASSERT_EQ(g.ranks_size(), 2);
  EXPECT_EQ(g.ranks(0).node_name(), "spark-1");
  EXPECT_EQ(g.ranks(1).node_name(), "spark-2");

  auto starts = agents_.starts();
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[0].address, "10.0.0.1:7101");
  EXPECT_EQ(starts[0].request.spec().rank(), 0u);
  EXPECT_EQ(starts[1].request.spec().rank(), 1u);
  // Workers hold their process until the head's master port accepts: no fixed sleep.
  EXPECT_EQ(starts[0].request.spec().wait_for_tcp(), "");
  EXPECT_EQ(starts[1].request.spec().wait_for_tcp(), "10.0.0.1:29500");
  EXPECT_EQ(starts[1].request.spec().generation(), 1u);

  absl::StatusOr<std::vector<v1::StoredGroup>> stored = store_.LoadGroups();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ((*stored)[0].recipe_yaml(), kRecipe);
}

TEST_F(GroupManagerTest, GroupIsReadyOnlyWhenEveryRankIsReady) {
  ASSERT_TRUE(Apply().ok());
  Report("id1", 1, 0, v1::SHARD_STATE_READY);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_STARTING);
  Report("id2", 1, 1, v1::SHARD_STATE_RUNNING);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_STARTING);
  EXPECT_THAT(Get().message(), HasSubstr("rank 1 on spark-2: Running"));
  clock_.Advance(absl::Milliseconds(300));
  Report("id2", 1, 1, v1::SHARD_STATE_READY);
  v1::Group g = Get();
  EXPECT_EQ(g.state(), v1::GROUP_STATE_READY);
  EXPECT_TRUE(g.has_ready_at());
  EXPECT_EQ(store_.events().back().kind, "group-ready");
  EXPECT_THAT(store_.events().back().message, HasSubstr("Ready in 300ms"));
}

TEST_F(GroupManagerTest, ReportFromTheWrongNodeOrGenerationIsNotTaken) {
  ASSERT_TRUE(Apply().ok());
  Report("id3", 1, 1, v1::SHARD_STATE_READY);  // rank 1 runs on spark-2, not spark-3
  EXPECT_EQ(Get().ranks(1).status().state(), v1::SHARD_STATE_STARTING);
}

TEST_F(GroupManagerTest, ReapplyingAnUnchangedRecipeChangesNothing) {
  ASSERT_TRUE(Apply().ok());
  absl::StatusOr<v1::ApplyResponse> again = Apply();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->action(), "unchanged");
  EXPECT_EQ(agents_.starts().size(), 2u);
  EXPECT_TRUE(agents_.stops().empty());
  EXPECT_EQ(Get().generation(), 1u);
}

TEST_F(GroupManagerTest, ChangedRecipeStopsTheOldGenerationThenStartsANewOne) {
  ASSERT_TRUE(Apply().ok());
  absl::StatusOr<v1::ApplyResponse> changed = Apply({"port=9000"});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->action(), "replaced");
  // Not Ready yet, so nothing serves that a roll would keep serving.
  EXPECT_THAT(changed->notes(),
              ::testing::Contains(HasSubstr("replaced, not rolled: echo is Starting, not Ready")));
  auto stops = agents_.stops();
  ASSERT_EQ(stops.size(), 2u);
  EXPECT_EQ(stops[0].request.group(), "echo");
  auto starts = agents_.starts();
  ASSERT_EQ(starts.size(), 4u);
  EXPECT_EQ(starts[2].request.spec().generation(), 2u);
  EXPECT_EQ(Get().endpoint(), "http://10.0.0.1:9000");
  // Same nodes as before: a re-apply stays put.
  EXPECT_EQ(Get().ranks(0).node_name(), "spark-1");
}

TEST_F(GroupManagerTest, TooFewNodesNamesTheNumbersAndTheRecipeLine) {
  absl::StatusOr<v1::ApplyResponse> r = Apply({}, absl::StrCat(kRecipe, "replicas: 2\n"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("recipes/echo.yaml:5:"));
  EXPECT_THAT(r.status().message(), HasSubstr("needs 4 nodes"));
  EXPECT_THAT(r.status().message(), HasSubstr("3 Ready and free"));
  EXPECT_TRUE(agents_.starts().empty());
}

TEST_F(GroupManagerTest, NodesOfAnotherGroupAreBusy) {
  ASSERT_TRUE(Apply().ok());
  v1::ApplyRequest other;
  other.set_recipe_path("recipes/other.yaml");
  other.set_recipe_yaml(kRecipe);
  absl::StatusOr<v1::ApplyResponse> r = groups_.Apply(other);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("busy with other groups: spark-1 (echo), spark-2 (echo)"));
}

TEST_F(GroupManagerTest, FailedRankFailsTheGroupAndPointsAtItsLogs) {
  ASSERT_TRUE(Apply({}, NeverRestart(kRecipe)).ok());
  Report("id2", 1, 1, v1::SHARD_STATE_FAILED);
  v1::Group g = Get();
  EXPECT_EQ(g.state(), v1::GROUP_STATE_FAILED);
  EXPECT_THAT(g.message(), HasSubstr("rank 1 on spark-2 ended (exited with status 1)"));
  EXPECT_THAT(g.message(), HasSubstr("fleet logs echo --rank 1"));
  // An unchanged re-apply of a failed group starts a new generation.
  absl::StatusOr<v1::ApplyResponse> again = Apply({}, NeverRestart(kRecipe));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->action(), "restarted");
  EXPECT_EQ(Get().generation(), 2u);
}

TEST_F(GroupManagerTest, RefusedStartStopsTheStartedRanksAndFailsTheGroup) {
  agents_.FailStarts("10.0.0.2:7101", absl::FailedPreconditionError("no Docker engine on spark-2"));
  absl::StatusOr<v1::ApplyResponse> r = Apply();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(),
              HasSubstr("rank 1 on spark-2 did not start: no Docker engine on spark-2"));
  EXPECT_EQ(agents_.stops().size(), 2u);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_FAILED);
}

TEST_F(GroupManagerTest, StopConfirmsEveryNodeAndKeepsTheRecord) {
  ASSERT_TRUE(Apply().ok());
  absl::StatusOr<std::vector<v1::Group>> stopped = groups_.Stop("echo");
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(agents_.stops().size(), 2u);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_STOPPED);
  // A shard of a stopped group that a node still reports is ordered to stop.
  Report("id1", 1, 0, v1::SHARD_STATE_RUNNING);
  ASSERT_EQ(executor_.pending(), 1u);
  executor_.RunNext();
  EXPECT_EQ(agents_.stops().size(), 3u);
  EXPECT_EQ(agents_.stops().back().request.up_to_generation(), 1u);
}

TEST_F(GroupManagerTest, StopThatCannotReachANodeFailsAndSaysWhatToDo) {
  ASSERT_TRUE(Apply().ok());
  agents_.FailStops("10.0.0.2:7101", absl::UnavailableError("agent at 10.0.0.2:7101: timeout"));
  absl::StatusOr<std::vector<v1::Group>> stopped = groups_.Stop("echo");
  ASSERT_FALSE(stopped.ok());
  EXPECT_THAT(stopped.status().message(), HasSubstr("rank 1 on spark-2"));
  EXPECT_THAT(stopped.status().message(), HasSubstr("fleet stop echo"));
  EXPECT_NE(Get().state(), v1::GROUP_STATE_STOPPED);
}

TEST_F(GroupManagerTest, OlderGenerationReportedAfterAReplaceIsStopped) {
  ASSERT_TRUE(Apply().ok());
  ASSERT_TRUE(Apply({"port=9000"}).ok());
  size_t stops = agents_.stops().size();
  Report("id2", 1, 1, v1::SHARD_STATE_RUNNING);
  ASSERT_EQ(executor_.pending(), 1u);
  executor_.RunNext();
  ASSERT_EQ(agents_.stops().size(), stops + 1);
  EXPECT_EQ(agents_.stops().back().address, "10.0.0.2:7101");
  EXPECT_EQ(agents_.stops().back().request.up_to_generation(), 1u);
}

TEST_F(GroupManagerTest, LostNodeDegradesTheGroupAndItsReturnRestoresIt) {
  ASSERT_TRUE(Apply().ok());
  Report("id1", 1, 0, v1::SHARD_STATE_READY);
  Report("id2", 1, 1, v1::SHARD_STATE_READY);
  ASSERT_EQ(Get().state(), v1::GROUP_STATE_READY);
  clock_.Advance(absl::Seconds(4));
  ASSERT_TRUE(registry_.Heartbeat("id1").ok());
  clock_.Advance(absl::Seconds(2));
  registry_.Tick();
  groups_.Tick();
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_DEGRADED);
  EXPECT_THAT(Get().message(), HasSubstr("node spark-2 (rank 1) is Lost"));
  ASSERT_TRUE(registry_.Heartbeat("id2").ok());
  groups_.Tick();
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_READY);
}

TEST_F(GroupManagerTest, GroupNotReadyWithinItsStartTimeoutFails) {
  ASSERT_TRUE(Apply().ok());
  clock_.Advance(absl::Seconds(59));
  groups_.Tick();
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_STARTING);
  clock_.Advance(absl::Seconds(2));
  groups_.Tick();
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_FAILED);
  EXPECT_THAT(Get().message(), HasSubstr("not Ready 1m after the start orders"));
}

TEST_F(GroupManagerTest, RestartedControllerKnowsItsGroups) {
  ASSERT_TRUE(Apply().ok());
  GroupManager restarted(GroupManagerConfig{}, &clock_, &store_, &registry_, &agents_, &rendezvous_,
                         &executor_);
  ASSERT_TRUE(restarted.Load().ok());
  ASSERT_EQ(restarted.List().size(), 1u);
  google::protobuf::RepeatedPtrField<v1::ShardStatus> shards;
  v1::ShardStatus& s = *shards.Add();
  s.set_group("echo");
  s.set_generation(1);
  s.set_rank(0);
  s.set_state(v1::SHARD_STATE_READY);
  restarted.ReportShards("id1", shards);
  EXPECT_EQ(restarted.List()[0].ranks(0).status().state(), v1::SHARD_STATE_READY);
  // Nothing was stopped or started again by the restart.
  EXPECT_EQ(agents_.starts().size(), 2u);
  EXPECT_TRUE(agents_.stops().empty());
}

TEST_F(GroupManagerTest, BadRecipeAndBadNameAreInvalidArgument) {
  absl::StatusOr<v1::ApplyResponse> r = Apply({}, "recipe_version: \"2\"\nname: [\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("recipes/echo.yaml:"));
  v1::ApplyRequest request;
  request.set_recipe_path("x.yaml");
  request.set_recipe_yaml(kRecipe);
  request.set_name("Bad Name");
  r = groups_.Apply(request);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not usable"));
}

TEST_F(GroupManagerTest, FailedPreflightStartsNothingAndForceLaunchesAnyway) {
  constexpr char kNeedsShm[] = R"(recipe_version: "2"
name: echo
engine: exec
runtime: process
nodes: 2
requires:
  shm: 128g
command: fleet-echo-engine
)";
  absl::StatusOr<v1::ApplyResponse> r = Apply({}, kNeedsShm);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("preflight failed"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("spark-1 shm"));
  EXPECT_TRUE(agents_.starts().empty());
  EXPECT_FALSE(groups_.Get("echo").ok());

  v1::ApplyRequest forced;
  forced.set_recipe_path("recipes/echo.yaml");
  forced.set_recipe_yaml(kNeedsShm);
  forced.set_force(true);
  absl::StatusOr<v1::PreflightResponse> judged = groups_.Preflight(forced);
  ASSERT_TRUE(judged.ok()) << judged.status();
  EXPECT_FALSE(judged->failed());
  r = groups_.Apply(forced);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(agents_.starts().size(), 2u);
  bool warned = false;
  for (const v1::PreflightRow& row : r->preflight()) {
    warned |= absl::StartsWith(row.check(), "shm") && row.verdict() == "warn";
  }
  EXPECT_TRUE(warned);
}

TEST_F(GroupManagerTest, PreflightProbesEveryPlacedNodeWithoutSideEffects) {
  v1::ApplyRequest request;
  request.set_recipe_path("recipes/echo.yaml");
  request.set_recipe_yaml(kRecipe);
  absl::StatusOr<v1::PreflightResponse> judged = groups_.Preflight(request);
  ASSERT_TRUE(judged.ok()) << judged.status();
  EXPECT_FALSE(judged->failed());
  std::set<std::string> nodes;
  for (const v1::PreflightRow& row : judged->rows()) nodes.insert(row.node());
  EXPECT_EQ(nodes, (std::set<std::string>{"spark-1", "spark-2"}));
  EXPECT_TRUE(agents_.starts().empty());
  EXPECT_TRUE(groups_.List().empty());
}

TEST_F(GroupManagerTest, LogsComeFromTheRanksNode) {
  ASSERT_TRUE(Apply().ok());
  v1::GroupLogsRequest request;
  request.set_name("echo");
  request.set_rank(1);
  absl::StatusOr<v1::GroupLogsResponse> r = groups_.Logs(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->data(), "log of echo rank 1 at 10.0.0.2:7101\n");
  EXPECT_EQ(r->node_name(), "spark-2");
  request.set_rank(2);
  EXPECT_THAT(groups_.Logs(request).status().message(), HasSubstr("has ranks 0 to 1"));
}

// What a rank of generation `generation` of "echo" gets from the store with `token`.
absl::Status SetKey(RendezvousStore& store, uint64_t generation, const std::string& token) {
  return store.Set({.group = "echo", .generation = generation, .rank = 0, .token = token},
                   "nccl-id", "bytes");
}

TEST_F(GroupManagerTest, NativeRanksGetAGenerationTokenThatNoViewShows) {
  absl::StatusOr<v1::ApplyResponse> r = Apply({}, NativeRecipe());
  ASSERT_TRUE(r.ok()) << r.status();
  auto starts = agents_.starts();
  ASSERT_EQ(starts.size(), 2u);
  std::optional<std::string> token = EnvOf(starts[0].request.spec(), kRendezvousTokenEnv);
  ASSERT_TRUE(token.has_value());
  EXPECT_EQ(token->size(), 64u);  // 32 random bytes in hex
  EXPECT_EQ(token->find_first_not_of("0123456789abcdef"), std::string::npos) << *token;
  EXPECT_EQ(EnvOf(starts[1].request.spec(), kRendezvousTokenEnv), token);
  // The scope of generation 1 is open to holders of the token only.
  EXPECT_TRUE(SetKey(rendezvous_, 1, *token).ok());
  EXPECT_TRUE(absl::IsPermissionDenied(SetKey(rendezvous_, 1, std::string(64, '0'))));

  // Every view shows the variable with a stand-in: apply's answer, describe, list, the record's
  // group, and no event holds the value.
  EXPECT_EQ(EnvOf(r->groups(0).ranks(1).spec(), kRendezvousTokenEnv), "<secret>");
  EXPECT_EQ(EnvOf(Get().ranks(0).spec(), kRendezvousTokenEnv), "<secret>");
  EXPECT_THAT(groups_.List()[0].SerializeAsString(), Not(HasSubstr(*token)));
  EXPECT_THAT(r->SerializeAsString(), Not(HasSubstr(*token)));
  absl::StatusOr<std::vector<v1::StoredGroup>> stored = store_.LoadGroups();
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ((*stored)[0].rendezvous_token(), *token);
  EXPECT_THAT((*stored)[0].group().SerializeAsString(), Not(HasSubstr(*token)));
  for (const FakeStore::Event& e : store_.events()) EXPECT_THAT(e.message, Not(HasSubstr(*token)));
}

TEST_F(GroupManagerTest, ExecAndVllmGroupsGetNoToken) {
  ASSERT_TRUE(Apply().ok());
  for (const auto& start : agents_.starts()) {
    EXPECT_EQ(EnvOf(start.request.spec(), kRendezvousTokenEnv), std::nullopt);
  }
  EXPECT_EQ(store_.LoadGroups()->at(0).rendezvous_token(), "");
  EXPECT_TRUE(absl::IsNotFound(SetKey(rendezvous_, 1, "")));

  std::string vllm = kRecipe;
  vllm.replace(vllm.find("engine: exec"), 12, "engine: vllm");
  vllm.replace(vllm.find("fleet-echo-engine"), 17, "vllm serve m");
  ASSERT_TRUE(groups_.Stop("echo").ok());
  // Preflight wants a GPU for vLLM, which these nodes lack: forced, the orders are what count.
  v1::ApplyRequest request;
  request.set_recipe_path("recipes/echo.yaml");
  request.set_recipe_yaml(vllm);
  request.set_force(true);
  absl::StatusOr<v1::ApplyResponse> r = groups_.Apply(request);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(agents_.starts().size(), 4u);
  for (const auto& start : agents_.starts()) {
    EXPECT_EQ(EnvOf(start.request.spec(), kRendezvousTokenEnv), std::nullopt);
  }
}

TEST_F(GroupManagerTest, RendezvousScopeFollowsTheGeneration) {
  ASSERT_TRUE(Apply({}, NativeRecipe()).ok());
  std::string first = *EnvOf(agents_.starts()[0].request.spec(), kRendezvousTokenEnv);
  // Rank 1 of generation 1 waits for a key when the group is replaced.
  std::optional<absl::StatusOr<std::string>> waited;
  rendezvous_.Get({.group = "echo", .generation = 1, .rank = 1, .token = first}, "nccl-id",
                  clock_.Now() + absl::Seconds(10),
                  [&](absl::StatusOr<std::string> v) { waited = std::move(v); });
  EXPECT_FALSE(waited.has_value());

  ASSERT_TRUE(Apply({"port=9000"}, NativeRecipe()).ok());
  ASSERT_TRUE(waited.has_value());
  EXPECT_TRUE(absl::IsAborted(waited->status())) << waited->status();
  std::string second = *EnvOf(agents_.starts()[2].request.spec(), kRendezvousTokenEnv);
  EXPECT_NE(second, first);
  absl::Status old = SetKey(rendezvous_, 1, first);
  EXPECT_TRUE(absl::IsAborted(old)) << old;
  EXPECT_THAT(old.message(), HasSubstr("is from generation 1; the group is at generation 2"));
  EXPECT_TRUE(SetKey(rendezvous_, 2, second).ok());

  ASSERT_TRUE(groups_.Stop("echo").ok());
  absl::Status stopped = SetKey(rendezvous_, 2, second);
  EXPECT_TRUE(absl::IsAborted(stopped)) << stopped;
  EXPECT_THAT(stopped.message(), HasSubstr("generation 2 of group echo ended"));
}

TEST_F(GroupManagerTest, FailedGenerationClosesItsRendezvous) {
  ASSERT_TRUE(Apply({}, NeverRestart(NativeRecipe())).ok());
  std::string token = *EnvOf(agents_.starts()[0].request.spec(), kRendezvousTokenEnv);
  Report("id2", 1, 1, v1::SHARD_STATE_FAILED);
  ASSERT_EQ(Get().state(), v1::GROUP_STATE_FAILED);
  EXPECT_TRUE(absl::IsAborted(SetKey(rendezvous_, 1, token)));
}

TEST_F(GroupManagerTest, TokenSurvivesAControllerRestart) {
  ASSERT_TRUE(Apply({}, NativeRecipe()).ok());
  std::string token = *EnvOf(agents_.starts()[0].request.spec(), kRendezvousTokenEnv);
  // A new controller process: a new, empty store, and the groups read back from the database.
  RendezvousStore reopened(&clock_);
  GroupManager restarted(GroupManagerConfig{}, &clock_, &store_, &registry_, &agents_, &reopened,
                         &executor_);
  ASSERT_TRUE(restarted.Load().ok());
  EXPECT_TRUE(SetKey(reopened, 1, token).ok());
  EXPECT_TRUE(absl::IsPermissionDenied(SetKey(reopened, 1, std::string(64, 'f'))));
  // A stopped group's scope is not reopened.
  ASSERT_TRUE(restarted.Stop("echo").ok());
  RendezvousStore again(&clock_);
  GroupManager restarted_again(GroupManagerConfig{}, &clock_, &store_, &registry_, &agents_, &again,
                               &executor_);
  ASSERT_TRUE(restarted_again.Load().ok());
  EXPECT_TRUE(absl::IsNotFound(SetKey(again, 1, token)));
}

// kRecipe on `nodes` nodes.
std::string RecipeOnNodes(int nodes) {
  std::string yaml = kRecipe;
  yaml.replace(yaml.find("nodes: 2"), 8, absl::StrCat("nodes: ", nodes));
  return yaml;
}

v1::ApplyRequest ApplyRequestFor(const std::string& name, int nodes) {
  v1::ApplyRequest request;
  request.set_recipe_path("recipes/echo.yaml");
  request.set_recipe_yaml(RecipeOnNodes(nodes));
  request.set_name(name);
  return request;
}

TEST_F(GroupManagerTest, OneApplicationsWorkStaysInOrderWhileAnotherGoesAhead) {
  std::vector<std::string> finished;
  groups_.ApplyAsync(ApplyRequestFor("alpha", 1), [&](absl::StatusOr<v1::ApplyResponse> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    finished.push_back("apply alpha");
  });
  groups_.StopAsync("alpha", [&](absl::StatusOr<std::vector<v1::Group>> r) {
    // Behind the apply: there is a group to stop.
    EXPECT_TRUE(r.ok()) << r.status();
    finished.push_back("stop alpha");
  });
  groups_.ApplyAsync(ApplyRequestFor("beta", 1), [&](absl::StatusOr<v1::ApplyResponse> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    finished.push_back("apply beta");
  });
  // alpha's apply and beta's may run at once; alpha's stop waits for alpha's apply.
  ASSERT_EQ(executor_.pending(), 2u);
  ASSERT_TRUE(executor_.Run(1));
  EXPECT_THAT(finished, ::testing::ElementsAre("apply beta"));
  ASSERT_EQ(executor_.pending(), 1u);
  ASSERT_TRUE(executor_.RunNext());
  // The apply's end hands the stop to the executor.
  ASSERT_EQ(executor_.pending(), 1u);
  ASSERT_TRUE(executor_.RunNext());
  EXPECT_THAT(finished, ::testing::ElementsAre("apply beta", "apply alpha", "stop alpha"));
  EXPECT_EQ(Get("alpha").state(), v1::GROUP_STATE_STOPPED);
  EXPECT_EQ(Get("beta").state(), v1::GROUP_STATE_STARTING);
}

TEST_F(GroupManagerTest, StopOfAReplicaWaitsBehindItsApplicationsApply) {
  std::string yaml = RecipeOnNodes(1);
  yaml += "replicas: 2\n";
  v1::ApplyRequest request = ApplyRequestFor("app", 1);
  request.set_recipe_yaml(yaml);
  ASSERT_TRUE(groups_.Apply(request).ok());
  std::vector<std::string> finished;
  groups_.ApplyAsync(request, [&](absl::StatusOr<v1::ApplyResponse> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    finished.push_back("apply app");
  });
  // "app-1" is a replica of "app": its stop is queued under the application.
  groups_.StopAsync("app-1", [&](absl::StatusOr<std::vector<v1::Group>> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    finished.push_back("stop app-1");
  });
  ASSERT_EQ(executor_.pending(), 1u);
  EXPECT_EQ(executor_.RunAll(), 2);
  EXPECT_THAT(finished, ::testing::ElementsAre("apply app", "stop app-1"));
}

// Real threads: an apply held in preflight (its agents hashing a model) keeps its nodes from
// other applies, and holds up no other application's apply or stop.
TEST_F(GroupManagerTest, ApplyHeldInPreflightReservesItsNodesAndBlocksNoOtherGroup) {
  agents_.HoldProbes({"10.0.0.1:7101", "10.0.0.2:7101"});
  absl::StatusOr<v1::ApplyResponse> held;
  std::thread apply([&] { held = groups_.Apply(ApplyRequestFor("held", 2)); });
  ASSERT_TRUE(agents_.AwaitHeldProbes(2, absl::Seconds(10)));

  // Its two nodes are taken: a 2-node apply finds one free node and says who holds the rest.
  absl::StatusOr<v1::ApplyResponse> crowded = groups_.Apply(ApplyRequestFor("crowded", 2));
  EXPECT_FALSE(crowded.ok());
  EXPECT_THAT(crowded.status().message(), HasSubstr("held, being applied"));
  // A 1-node apply, and its stop, complete on the third node meanwhile.
  absl::StatusOr<v1::ApplyResponse> small = groups_.Apply(ApplyRequestFor("small", 1));
  ASSERT_TRUE(small.ok()) << small.status();
  ASSERT_EQ(small->groups_size(), 1);
  EXPECT_EQ(small->groups(0).ranks(0).node_name(), "spark-3");
  EXPECT_TRUE(groups_.Stop("small").ok());
  EXPECT_EQ(agents_.probes_waiting(), 2);

  agents_.ReleaseProbes();
  apply.join();
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->groups(0).ranks(0).node_name(), "spark-1");
  EXPECT_EQ(held->groups(0).ranks(1).node_name(), "spark-2");
  // Once applied, the group itself holds the nodes; the reservation is gone.
  absl::StatusOr<v1::ApplyResponse> again = groups_.Apply(ApplyRequestFor("crowded", 2));
  EXPECT_THAT(again.status().message(), HasSubstr("held"));
  EXPECT_THAT(again.status().message(), Not(HasSubstr("being applied")));
}

// ---------------------------------------------------------------------------------------------
// After Ready: restarts, their backoff and budget, log signatures, unconfirmed stops, events.

// Ranks of generation `generation` that were ordered to start, in order.
std::vector<uint32_t> StartedRanks(const FakeAgentClient& agents, uint64_t generation) {
  std::vector<uint32_t> ranks;
  for (const auto& call : agents.starts()) {
    if (call.request.spec().generation() == generation) ranks.push_back(call.request.spec().rank());
  }
  return ranks;
}

TEST_F(GroupManagerTest, DeadHeadStopsEveryRankThenStartsTheNextGenerationInOrder) {
  ASSERT_TRUE(Apply().ok());
  Report("id1", 1, 0, v1::SHARD_STATE_READY);
  Report("id2", 1, 1, v1::SHARD_STATE_READY);
  ASSERT_EQ(Get().state(), v1::GROUP_STATE_READY);
  Report("id1", 1, 0, v1::SHARD_STATE_FAILED);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_STARTING);
  EXPECT_THAT(Get().message(), HasSubstr("rank 0 on spark-1 ended (exited with status 1)"));
  EXPECT_TRUE(agents_.stops().empty());
  executor_.RunAll();
  // Both nodes were told to stop the group (the worker is still running) before any start.
  auto stops = agents_.stops();
  ASSERT_EQ(stops.size(), 2u);
  EXPECT_EQ(stops[0].address, "10.0.0.1:7101");
  EXPECT_EQ(stops[1].address, "10.0.0.2:7101");
  EXPECT_EQ(Get().generation(), 2u);
  EXPECT_THAT(StartedRanks(agents_, 2), ::testing::ElementsAre(0u, 1u));
  EXPECT_EQ(Get().ranks(1).spec().generation(), 2u);
  // Rendered again for the new generation: the adapter's variables say 2 as well.
  EXPECT_EQ(EnvOf(agents_.starts().back().request.spec(), "FLEET_GENERATION"), "2");
  // Reports of the old generation change nothing; the new one becomes Ready.
  Report("id2", 1, 1, v1::SHARD_STATE_EXITED);
  Report("id1", 2, 0, v1::SHARD_STATE_READY);
  Report("id2", 2, 1, v1::SHARD_STATE_READY);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_READY);
}

TEST_F(GroupManagerTest, RestartsBackOffAndTheBudgetEndsThem) {
  const std::string yaml = absl::StrCat(
      kRecipe, "restart:\n  initial_backoff: 5s\n  max_backoff: 8s\n  max_restarts: 3\n");
  ASSERT_TRUE(Apply({}, yaml).ok());
  // Generation 1 fails: the first restart is immediate.
  Report("id2", 1, 1, v1::SHARD_STATE_FAILED);
  executor_.RunAll();
  ASSERT_EQ(Get().generation(), 2u);
  // Generation 2 fails: 5 s of backoff.
  Report("id2", 2, 1, v1::SHARD_STATE_FAILED);
  executor_.RunAll();
  EXPECT_EQ(Get().generation(), 2u);
  EXPECT_THAT(Get().message(), HasSubstr("generation 3 starts in 5s (restart backoff)"));
  clock_.Advance(absl::Milliseconds(4900));
  groups_.Tick();
  executor_.RunAll();
  EXPECT_EQ(Get().generation(), 2u);
  EXPECT_TRUE(StartedRanks(agents_, 3).empty());
  clock_.Advance(absl::Milliseconds(100));
  groups_.Tick();
  executor_.RunAll();
  EXPECT_EQ(Get().generation(), 3u);
  // Generation 3 fails: twice the backoff, capped at max_backoff (8 s, not 10 s).
  Report("id1", 3, 0, v1::SHARD_STATE_FAILED);
  executor_.RunAll();
  EXPECT_THAT(Get().message(), HasSubstr("starts in 8s"));
  clock_.Advance(absl::Seconds(8));
  groups_.Tick();
  executor_.RunAll();
  ASSERT_EQ(Get().generation(), 4u);
  // Generation 4 fails: three restarts within 10 minutes were the budget.
  size_t stops = agents_.stops().size();
  Report("id1", 4, 0, v1::SHARD_STATE_FAILED);
  executor_.RunAll();
  v1::Group g = Get();
  EXPECT_EQ(g.state(), v1::GROUP_STATE_FAILED);
  EXPECT_THAT(g.message(), HasSubstr("restart budget spent: 3 restarts within 10m"));
  EXPECT_THAT(g.message(), HasSubstr("rank 0 on spark-1 ended (exited with status 1)"));
  EXPECT_THAT(g.message(), HasSubstr("Every rank is stopped"));
  EXPECT_EQ(agents_.stops().size(), stops + 2);
  EXPECT_TRUE(StartedRanks(agents_, 5).empty());
  // An operator's restart starts again with a fresh budget.
  absl::StatusOr<std::vector<v1::Group>> restarted = groups_.Restart("echo");
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_EQ(Get().generation(), 5u);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_STARTING);
}

TEST_F(GroupManagerTest, UnhealableOutputFailsTheGroupAtOnceWithTheFix) {
  ASSERT_TRUE(Apply().ok());
  agents_.AppendLog("10.0.0.2:7101", "echo", 1,
                    "NCCL INFO NET/IB : Using [0]rocep1s0f1:1/RoCE\n"
                    "misc/ibvwrap.cc:190 NCCL WARN Call to ibv_reg_mr failed with error "
                    "Cannot allocate memory\n");
  Report("id2", 1, 1, v1::SHARD_STATE_FAILED);
  executor_.RunAll();
  v1::Group g = Get();
  EXPECT_EQ(g.state(), v1::GROUP_STATE_FAILED);
  EXPECT_THAT(g.message(), HasSubstr("cannot heal: rank 1 on spark-2 printed `misc/ibvwrap.cc"));
  EXPECT_THAT(g.message(), HasSubstr("runtime.ulimits.memlock: unlimited"));
  EXPECT_THAT(g.message(), HasSubstr("LimitMEMLOCK=infinity"));
  EXPECT_EQ(agents_.stops().size(), 2u);
  EXPECT_TRUE(StartedRanks(agents_, 2).empty());
}

TEST_F(GroupManagerTest, WedgeSignatureSeenEnoughTimesRestartsTheGroup) {
  std::string yaml = kRecipe;
  yaml.replace(yaml.find("  start_timeout"), 0,
               "  signatures:\n    - {pattern: \"no broadcast block\", count: 3, window: 3m}\n");
  ASSERT_TRUE(Apply({}, yaml).ok());
  Report("id1", 1, 0, v1::SHARD_STATE_READY);
  Report("id2", 1, 1, v1::SHARD_STATE_READY);
  const std::string line = "WARNING no broadcast block found in 60 seconds\n";
  for (int i = 0; i < 2; ++i) {
    // Counted per rank: four lines from two ranks are two sightings on each.
    agents_.AppendLog("10.0.0.1:7101", "echo", 0, line);
    agents_.AppendLog("10.0.0.2:7101", "echo", 1, line);
    clock_.Advance(absl::Minutes(1));
    groups_.Tick();
    executor_.RunAll();
    ASSERT_EQ(Get().state(), v1::GROUP_STATE_READY) << i;
  }
  agents_.AppendLog("10.0.0.1:7101", "echo", 0, line);
  clock_.Advance(absl::Minutes(1));
  groups_.Tick();
  executor_.RunAll();
  EXPECT_EQ(Get().generation(), 2u);
  EXPECT_THAT(StartedRanks(agents_, 2), ::testing::ElementsAre(0u, 1u));
  absl::StatusOr<std::vector<v1::GroupEventRecord>> events = groups_.Events("echo", 0, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_FALSE(events->empty());
  EXPECT_THAT(events->front().reason(), HasSubstr("printed `WARNING no broadcast block"));
  EXPECT_THAT(events->front().reason(), HasSubstr("(3 times)"));
  EXPECT_EQ(events->front().generation(), 1u);
  EXPECT_EQ(events->front().node(), "spark-1");
  EXPECT_EQ(events->front().rank(), 0);
  EXPECT_EQ(events->back().action(), "started generation 2");
}

TEST_F(GroupManagerTest, NodeWhoseRanksAreNotConfirmedGoneIsGivenToNoOtherGroup) {
  ASSERT_TRUE(Apply({}, NeverRestart(kRecipe)).ok());
  // spark-2's agent cannot confirm the stop (its worker hangs, the agent times out).
  agents_.FailStops("10.0.0.2:7101", absl::UnavailableError("deadline exceeded"));
  Report("id1", 1, 0, v1::SHARD_STATE_FAILED);
  executor_.RunAll();
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_FAILED);
  EXPECT_THAT(Get().message(), HasSubstr("not confirmed gone"));
  // spark-1 reports its rank gone; spark-2 still reports the worker running.
  groups_.ReportShards("id1", {});
  Report("id2", 1, 1, v1::SHARD_STATE_RUNNING);
  absl::StatusOr<v1::ApplyResponse> two = groups_.Apply(ApplyRequestFor("other", 2));
  ASSERT_TRUE(two.ok()) << two.status();
  for (const v1::GroupRank& rank : two->groups(0).ranks()) {
    EXPECT_NE(rank.node_name(), "spark-2");
  }
  ASSERT_TRUE(groups_.Stop("other").ok());
  // Once spark-2 reports no rank of the group, it is free again.
  absl::StatusOr<v1::ApplyResponse> three = groups_.Apply(ApplyRequestFor("third", 3));
  EXPECT_FALSE(three.ok());
  EXPECT_THAT(three.status().message(), HasSubstr("spark-2 (echo, ranks not confirmed gone)"));
  groups_.ReportShards("id2", {});
  three = groups_.Apply(ApplyRequestFor("third", 3));
  EXPECT_TRUE(three.ok()) << three.status();
}

TEST_F(GroupManagerTest, ChangedRecipeOverReadyReplicasWaitsForEachOnesRestartToRunIt) {
  ASSERT_TRUE(Apply().ok());
  Report("id1", 1, 0, v1::SHARD_STATE_READY);
  Report("id2", 1, 1, v1::SHARD_STATE_READY);
  const std::string old_revision = Get().fingerprint();
  absl::StatusOr<v1::ApplyResponse> changed = Apply({"port=9000"});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->action(), "rolling");
  // Nothing stopped or started by the apply itself: the roll restarts each replica in turn.
  EXPECT_TRUE(agents_.stops().empty());
  EXPECT_EQ(agents_.starts().size(), 2u);
  EXPECT_EQ(Get().generation(), 1u);
  EXPECT_EQ(Get().state(), v1::GROUP_STATE_READY);
  EXPECT_EQ(Get().endpoint(), "http://10.0.0.1:8000");
  EXPECT_EQ(Get().fingerprint(), old_revision);

  std::optional<absl::StatusOr<std::vector<v1::Group>>> restarted;
  groups_.RestartAsync("echo", [&](absl::StatusOr<std::vector<v1::Group>> r) { restarted = r; });
  executor_.RunAll();
  ASSERT_TRUE(restarted.has_value() && restarted->ok());
  v1::Group group = Get();
  EXPECT_EQ(group.generation(), 2u);
  EXPECT_EQ(group.endpoint(), "http://10.0.0.1:9000");
  EXPECT_NE(group.fingerprint(), old_revision);
  auto starts = agents_.starts();
  ASSERT_EQ(starts.size(), 4u);
  EXPECT_THAT(absl::StrJoin(starts[2].request.spec().argv(), " "), HasSubstr("--port 9000"));
  absl::StatusOr<std::vector<v1::GroupEventRecord>> events = groups_.Events("echo", 0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(std::any_of(events->begin(), events->end(), [](const v1::GroupEventRecord& e) {
    return absl::StrContains(e.reason(), "rolled to the applied recipe (revision ");
  }));
  // The recipe is now the running one: applying it again changes nothing.
  Report("id1", 2, 0, v1::SHARD_STATE_READY);
  Report("id2", 2, 1, v1::SHARD_STATE_READY);
  absl::StatusOr<v1::ApplyResponse> again = Apply({"port=9000"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->action(), "unchanged");
}

TEST_F(GroupManagerTest, OperatorRestartStopsAndStartsANewGeneration) {
  ASSERT_TRUE(Apply().ok());
  Report("id1", 1, 0, v1::SHARD_STATE_READY);
  Report("id2", 1, 1, v1::SHARD_STATE_READY);
  std::optional<absl::StatusOr<std::vector<v1::Group>>> result;
  groups_.RestartAsync("echo", [&](absl::StatusOr<std::vector<v1::Group>> r) { result = r; });
  executor_.RunAll();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status();
  EXPECT_EQ((**result)[0].generation(), 2u);
  EXPECT_EQ(agents_.stops().size(), 2u);
  EXPECT_THAT(StartedRanks(agents_, 2), ::testing::ElementsAre(0u, 1u));
  ASSERT_TRUE(groups_.Stop("echo").ok());
  absl::StatusOr<std::vector<v1::Group>> stopped = groups_.Restart("echo");
  EXPECT_TRUE(absl::IsFailedPrecondition(stopped.status())) << stopped.status();
  EXPECT_TRUE(absl::IsNotFound(groups_.Restart("nope").status()));
}

}  // namespace
}  // namespace fleet::controller
