// PlanGroup and the engine adapters: the exact argv, environment, waits and probes of every
// rank, the errors a recipe or a placement can cause, and golden plans of the repo's recipes.
#include "launch/plan.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/adapters/adapter.h"
#include "launch/adapters/shell_script.h"
#include "launch/docker_run.h"

namespace fleet::engine {
namespace {

using ::testing::_;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;
using ::testing::Not;
using ::testing::Pair;

NodeView Spark(int index) {
  return NodeView{.name = absl::StrCat("spark-", index),
                  .node_id = absl::StrCat("node-", index),
                  .address = absl::StrCat("10.0.0.", 10 + index),
                  .fabric_interface = "enp1s0f1np1",
                  .fabric_address = absl::StrCat("192.168.100.", 10 + index),
                  .rdma_devices = {"rocep1s0f1", "roceP2p1s0f1"},
                  .has_gpus = true,
                  .has_infiniband = true};
}

GroupContext Sparks(int count, const std::string& group = "ds4") {
  GroupContext context{
      .group = group, .generation = 3, .master_addr = "192.168.100.11", .master_port = 29501};
  for (int i = 1; i <= count; ++i) context.nodes.push_back(Spark(i));
  return context;
}

// A version-1 recipe in the community's shape: vLLM over Ray, TP across two Sparks.
Recipe VllmRecipe() {
  Recipe recipe;
  recipe.path = "ds4.yaml";
  recipe.name = "ds4";
  recipe.container = "vllm-node";
  recipe.defaults = {{"port", "8000"}, {"host", "0.0.0.0"}, {"tensor_parallel", "2"}};
  recipe.env = {{"NCCL_DEBUG", "WARN"}};
  recipe.command =
      "vllm serve deepseek-ai/DeepSeek-V4-Flash --host {host} --port {port} \\\n"
      "  --tensor-parallel-size {tensor_parallel} --distributed-executor-backend ray";
  return recipe;
}

std::vector<std::string> Argv(const v1::ShardSpec& spec) {
  return {spec.argv().begin(), spec.argv().end()};
}

std::vector<std::pair<std::string, std::string>> Env(const v1::ShardSpec& spec) {
  std::vector<std::pair<std::string, std::string>> env;
  for (const v1::EnvVar& var : spec.env()) env.emplace_back(var.name(), var.value());
  return env;
}

std::vector<std::string> EnvNames(const v1::ShardSpec& spec) {
  std::vector<std::string> names;
  for (const v1::EnvVar& var : spec.env()) names.push_back(var.name());
  return names;
}

TEST(PlanVllmTest, TwoSparksGetTheMultiNodeFlagsOfTheirRank) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(VllmRecipe(), {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->ranks.size(), 2u);
  EXPECT_EQ(plan->launch_order, LaunchOrder::kHeadFirst);
  EXPECT_THAT(Argv(plan->ranks[0]),
              ElementsAre("vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--host", "0.0.0.0",
                          "--port", "8000", "--tensor-parallel-size", "2",
                          "--distributed-executor-backend", "mp", "--nnodes", "2", "--node-rank",
                          "0", "--master-addr", "192.168.100.11", "--master-port", "29501"));
  EXPECT_THAT(
      Argv(plan->ranks[1]),
      ElementsAre("vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--host", "0.0.0.0", "--port",
                  "8000", "--tensor-parallel-size", "2", "--distributed-executor-backend", "mp",
                  "--nnodes", "2", "--node-rank", "1", "--master-addr", "192.168.100.11",
                  "--master-port", "29501", "--headless"));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("rewrote --distributed-executor-backend ray to mp")));
}

TEST(PlanVllmTest, FourSparksNumberTheirRanksInPlacementOrder) {
  Recipe recipe = VllmRecipe();
  recipe.defaults[2].second = "4";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(4));
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int rank = 0; rank < 4; ++rank) {
    const std::vector<std::string> argv = Argv(plan->ranks[rank]);
    std::vector<std::string> tail(argv.end() - (rank == 0 ? 8 : 9), argv.end());
    std::vector<std::string> expected = {"--nnodes",      "4",
                                         "--node-rank",   absl::StrCat(rank),
                                         "--master-addr", "192.168.100.11",
                                         "--master-port", "29501"};
    if (rank > 0) expected.push_back("--headless");
    EXPECT_THAT(tail, ElementsAreArray(expected)) << "rank " << rank;
    EXPECT_EQ(plan->ranks[rank].rank(), static_cast<uint32_t>(rank));
    EXPECT_EQ(plan->ranks[rank].world_size(), 4u);
  }
}

TEST(PlanVllmTest, RayInAVersion2RecipeIsRefusedNotHalfRun) {
  Recipe recipe = VllmRecipe();
  recipe.version = 2;
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("does not launch Ray clusters"));
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("--distributed-executor-backend mp"));
}

TEST(PlanVllmTest, BackendThatCannotSpanNodesIsAnError) {
  Recipe recipe = VllmRecipe();
  recipe.command =
      "vllm serve m --port {port} -tp {tensor_parallel} "
      "--distributed-executor-backend=uni";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("uni cannot span 2 nodes"));
}

TEST(PlanVllmTest, ExistingRankFlagsAreReplacedInEveryForm) {
  Recipe recipe = VllmRecipe();
  recipe.command =
      "vllm serve m --nnodes=8 --node_rank 5 -r 4 -n 3 --master-addr 1.2.3.4 "
      "--master_port=1 --headless --distributed-executor-backend=mp -tp {tensor_parallel}";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Argv(plan->ranks[0]),
              ElementsAre("vllm", "serve", "m", "--distributed-executor-backend=mp", "-tp", "2",
                          "--nnodes", "2", "--node-rank", "0", "--master-addr", "192.168.100.11",
                          "--master-port", "29501"));
  EXPECT_THAT(Argv(plan->ranks[1]),
              ElementsAre("vllm", "serve", "m", "--distributed-executor-backend=mp", "-tp", "2",
                          "--nnodes", "2", "--node-rank", "1", "--master-addr", "192.168.100.11",
                          "--master-port", "29501", "--headless"));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("replaced the command's --nnodes")));
}

TEST(PlanVllmTest, HeadlessRanksLoseApiServerCountWhichVllmRefusesThere) {
  Recipe recipe = VllmRecipe();
  recipe.command = "vllm serve m --api-server-count 2 -tp {tensor_parallel}";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Argv(plan->ranks[0]), Contains("--api-server-count"));
  EXPECT_THAT(
      Argv(plan->ranks[1]),
      ElementsAre("vllm", "serve", "m", "-tp", "2", "--nnodes", "2", "--node-rank", "1",
                  "--master-addr", "192.168.100.11", "--master-port", "29501", "--headless"));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("dropped --api-server-count")));
}

TEST(PlanVllmTest, OneNodeGetsNoMultiNodeFlagsAndKeepsItsBackend) {
  Recipe recipe = VllmRecipe();
  recipe.defaults[2].second = "1";
  recipe.command += " --nnodes 2 --headless";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(1));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(
      Argv(plan->ranks[0]),
      ElementsAre("vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--host", "0.0.0.0", "--port",
                  "8000", "--tensor-parallel-size", "1", "--distributed-executor-backend", "ray"));
  EXPECT_EQ(plan->ranks[0].wait_for_tcp(), "");
}

TEST(PlanVllmTest, EnvironmentIsFabricThenMasterThenRecipeWithOneEntryPerName) {
  Recipe recipe = VllmRecipe();
  recipe.env = {{"NCCL_DEBUG", "WARN"}, {"NCCL_IB_DISABLE", "0"}, {"GLOO_SOCKET_IFNAME", "eth0"}};
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(
      Env(plan->ranks[1]),
      ElementsAre(Pair("NCCL_SOCKET_IFNAME", "enp1s0f1np1"), Pair("GLOO_SOCKET_IFNAME", "eth0"),
                  Pair("TP_SOCKET_IFNAME", "enp1s0f1np1"),
                  Pair("NCCL_IB_HCA", "=rocep1s0f1,roceP2p1s0f1"), Pair("NCCL_IB_DISABLE", "0"),
                  Pair("VLLM_HOST_IP", "192.168.100.12"), Pair("MASTER_ADDR", "192.168.100.11"),
                  Pair("MASTER_PORT", "29501"), Pair("NCCL_DEBUG", "INFO"),
                  Pair("NCCL_DEBUG_SUBSYS", "INIT,NET")));
  EXPECT_THAT(plan->notes, Contains("recipe env GLOO_SOCKET_IFNAME=eth0 replaces enp1s0f1np1 on "
                                    "spark-2"));
}

TEST(PlanVllmTest, NcclLogsItsSetupSoLaunchChecksSeeIt) {
  auto env_of = [](std::vector<std::pair<std::string, std::string>> env, int nodes) {
    Recipe recipe = VllmRecipe();
    recipe.env = std::move(env);
    recipe.defaults = {
        {"port", "8000"}, {"host", "0.0.0.0"}, {"tensor_parallel", absl::StrCat(nodes)}};
    absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(nodes));
    EXPECT_TRUE(plan.ok()) << plan.status();
    return plan.ok() ? std::make_pair(Env(plan->ranks[0]), plan->notes)
                     : std::make_pair(std::vector<std::pair<std::string, std::string>>{},
                                      std::vector<std::string>{});
  };
  auto [warn, warn_notes] = env_of({{"NCCL_DEBUG", "WARN"}}, 2);
  EXPECT_THAT(warn,
              IsSupersetOf({Pair("NCCL_DEBUG", "INFO"), Pair("NCCL_DEBUG_SUBSYS", "INIT,NET")}));
  EXPECT_THAT(warn_notes, Contains(HasSubstr("the recipe had NCCL_DEBUG=WARN")));
  // A recipe that chose its subsystems, logs at INFO already, or writes to a file keeps it.
  auto [subsys, subsys_notes] = env_of({{"NCCL_DEBUG", "WARN"}, {"NCCL_DEBUG_SUBSYS", "NET"}}, 2);
  EXPECT_THAT(subsys, IsSupersetOf({Pair("NCCL_DEBUG", "WARN"), Pair("NCCL_DEBUG_SUBSYS", "NET")}));
  auto [info, info_notes] = env_of({{"NCCL_DEBUG", "info"}}, 2);
  EXPECT_THAT(info, Not(Contains(Pair("NCCL_DEBUG_SUBSYS", _))));
  auto [file, file_notes] = env_of({{"NCCL_DEBUG_FILE", "/tmp/nccl.%h"}}, 2);
  EXPECT_THAT(file, Not(Contains(Pair("NCCL_DEBUG", _))));
  EXPECT_THAT(file_notes,
              Contains(HasSubstr("report the NCCL version and transport as not checked")));
  // One node: no NCCL between nodes to check.
  auto [solo, solo_notes] = env_of({{"NCCL_DEBUG", "WARN"}}, 1);
  EXPECT_THAT(solo, Contains(Pair("NCCL_DEBUG", "WARN")));
}

TEST(PlanVllmTest, NodeWithoutFabricFactsGetsNoGuessesAndANote) {
  GroupContext group = Sparks(2);
  group.nodes[1].fabric_interface.clear();
  group.nodes[1].fabric_address.clear();
  group.nodes[1].rdma_devices.clear();
  absl::StatusOr<GroupPlan> plan = PlanGroup(VllmRecipe(), {}, group);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(EnvNames(plan->ranks[1]),
              ElementsAre("MASTER_ADDR", "MASTER_PORT", "NCCL_DEBUG", "NCCL_DEBUG_SUBSYS"));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("spark-2 has no RDMA device")));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("spark-2's fabric interface is unknown")));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("spark-2's fabric address is unknown")));
}

TEST(PlanVllmTest, WorkersWaitForTheHeadsMasterPortAndOnlyTheHeadIsProbed) {
  Recipe recipe = VllmRecipe();
  recipe.health.path = "/ping";
  recipe.health.check_completion = false;
  recipe.health.start_timeout = absl::Minutes(45);
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {{"port", "9000"}}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->endpoint, "http://192.168.100.11:9000");
  const v1::ShardSpec& head = plan->ranks[0];
  EXPECT_EQ(head.wait_for_tcp(), "");
  EXPECT_EQ(head.readiness().host(), "192.168.100.11");
  EXPECT_EQ(head.readiness().port(), 9000u);
  EXPECT_EQ(head.readiness().health_path(), "/ping");
  EXPECT_TRUE(head.readiness().check_models());
  EXPECT_FALSE(head.readiness().check_completion());
  EXPECT_EQ(head.readiness().period().nanos(), 100'000'000);
  EXPECT_EQ(head.readiness().request_timeout().seconds(), 2);
  const v1::ShardSpec& worker = plan->ranks[1];
  EXPECT_EQ(worker.wait_for_tcp(), "192.168.100.11:29501");
  EXPECT_EQ(worker.wait_timeout().seconds(), 45 * 60);
  EXPECT_FALSE(worker.has_readiness());
}

TEST(PlanVllmTest, HealthPortWinsOverDefaultsAndNoPortMeansNoProbe) {
  Recipe recipe = VllmRecipe();
  recipe.health.port = 8080;
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->ranks[0].readiness().port(), 8080u);
  EXPECT_EQ(plan->endpoint, "http://192.168.100.11:8080");

  recipe.health.port.reset();
  recipe.defaults[0].second = "auto";
  plan = PlanGroup(recipe, {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->ranks[0].has_readiness());
  EXPECT_EQ(plan->endpoint, "");
  EXPECT_THAT(plan->notes, Contains(HasSubstr("the head serves no known port")));
}

TEST(PlanVllmTest, DockerShardCarriesImageDevicesLimitsAndDefaultCaches) {
  Recipe recipe = VllmRecipe();
  recipe.version = 2;
  recipe.command = "vllm serve m --port {port} -tp {tensor_parallel}";
  recipe.requirements.memlock_bytes = UINT64_MAX;
  recipe.requirements.shm_bytes = uint64_t{16} << 30;
  recipe.mounts = {{.source = "~/models", .target = "/models", .read_only = true}};
  GroupContext group = Sparks(2);
  group.nodes[1].has_infiniband = false;
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, group);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const v1::ShardSpec& worker = plan->ranks[1];
  EXPECT_EQ(worker.runtime(), v1::SHARD_RUNTIME_DOCKER);
  EXPECT_EQ(worker.image(), "vllm-node");
  EXPECT_TRUE(worker.gpus());
  EXPECT_FALSE(worker.infiniband());
  EXPECT_EQ(worker.memlock_bytes(), UINT64_MAX);
  EXPECT_EQ(worker.shm_bytes(), uint64_t{16} << 30);
  ASSERT_EQ(worker.mounts_size(), 1);
  EXPECT_EQ(worker.mounts(0).source(), "~/models");
  EXPECT_TRUE(worker.mounts(0).read_only());
  EXPECT_THAT(worker.cache_dirs(), ElementsAre("/root/.cache/vllm", "/root/.triton/cache",
                                               "/root/.cache/flashinfer", "/root/.cache/torch"));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("kept vLLM's JIT caches")));
}

TEST(PlanVllmTest, VersionOneDockerRecipesFindTheirModelInTheHostsHuggingFaceCache) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(VllmRecipe(), {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->ranks[1].mounts_size(), 1);
  EXPECT_EQ(plan->ranks[1].mounts(0).source(), "~/.cache/huggingface");
  EXPECT_EQ(plan->ranks[1].mounts(0).target(), "/root/.cache/huggingface");
  EXPECT_FALSE(plan->ranks[1].has_memlock_bytes());
}

TEST(PlanVllmTest, RelativeMountSourceIsRefused) {
  Recipe recipe = VllmRecipe();
  recipe.version = 2;
  recipe.mounts = {{.source = "models", .target = "/models"}};
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("mount source \"models\" is relative"));
}

// A compose-style command: the script reads its rank from the environment and names its own
// master port. Appending flags would hand them to bash as positional arguments.
Recipe ScriptRecipe(const std::string& script) {
  Recipe recipe = VllmRecipe();
  recipe.defaults = {{"port", "8000"}, {"tensor_parallel", "2"}};
  recipe.command = absl::StrCat("bash -lc '", script, "'");
  return recipe;
}

constexpr char kComposeScript[] =
    "exec vllm serve deepseek-ai/DeepSeek-V4-Flash --port {port} --tensor-parallel-size "
    "{tensor_parallel} --nnodes ${{NNODES}} --node-rank ${{NODE_RANK}} --master-addr "
    "${{MASTER_ADDR}} --master-port 25000 ${{HEADLESS:+--headless}}";

TEST(PlanShellScriptTest, ScriptGetsNothingAppendedAndItsRankInTheEnvironment) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(ScriptRecipe(kComposeScript), {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->ranks.size(), 2u);
  for (int rank = 0; rank < 2; ++rank) {
    const v1::ShardSpec& spec = plan->ranks[rank];
    std::vector<std::string> argv = Argv(spec);
    ASSERT_EQ(argv.size(), 3u) << absl::StrJoin(argv, " ");
    EXPECT_EQ(argv[0], "bash");
    EXPECT_EQ(argv[1], "-lc");
    EXPECT_THAT(argv[2], HasSubstr("--node-rank ${NODE_RANK}"));
    EXPECT_THAT(Env(spec), Contains(Pair("NODE_RANK", absl::StrCat(rank))));
    EXPECT_THAT(Env(spec), Contains(Pair("NNODES", "2")));
    EXPECT_THAT(Env(spec), Contains(Pair("MASTER_ADDR", "192.168.100.11")));
    EXPECT_THAT(Env(spec), Contains(Pair("MASTER_PORT", "25000")));
    EXPECT_THAT(Env(spec), Contains(Pair("HEADLESS", rank == 0 ? "" : "1")));
  }
  // Workers wait for the port the script's head listens on, not placement's 29501.
  EXPECT_EQ(plan->ranks[1].wait_for_tcp(), "192.168.100.11:25000");
  EXPECT_THAT(plan->notes, Contains(HasSubstr("appends no rank flags")));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("placement had chosen 29501")));
}

TEST(PlanShellScriptTest, ScriptThatTakesThePortFromTheEnvironmentKeepsPlacementsPort) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(
      ScriptRecipe("exec vllm serve m --nnodes $NNODES --node-rank $NODE_RANK --master-addr "
                   "$MASTER_ADDR --master-port $MASTER_PORT ${{HEADLESS:+--headless}}"),
      {}, Sparks(2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->ranks[1].wait_for_tcp(), "192.168.100.11:29501");
  EXPECT_THAT(Env(plan->ranks[1]), Contains(Pair("MASTER_PORT", "29501")));
}

TEST(PlanShellScriptTest, MultiNodeScriptThatIgnoresItsRankIsRefusedWithTheLineToWrite) {
  absl::StatusOr<GroupPlan> plan =
      PlanGroup(ScriptRecipe("exec vllm serve m --tensor-parallel-size 2"), {}, Sparks(2));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("never reads $NODE_RANK, $MASTER_ADDR, $HEADLESS"));
  EXPECT_THAT(plan.status().message(), HasSubstr("--node-rank ${NODE_RANK}"));
}

TEST(PlanShellScriptTest, OneNodeScriptRunsAsWritten) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(ScriptRecipe("exec vllm serve m --port {port}"),
                                             {{"tensor_parallel", "1"}}, Sparks(1));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Argv(plan->ranks[0]), ElementsAre("bash", "-lc", "exec vllm serve m --port 8000"));
}

TEST(PlanShellScriptTest, GarbledMasterPortIsRefused) {
  absl::StatusOr<GroupPlan> plan =
      PlanGroup(ScriptRecipe("vllm serve m --node-rank $NODE_RANK --master-addr $MASTER_ADDR "
                             "--master-port banana ${{HEADLESS:+--headless}}"),
                {}, Sparks(2));
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(plan.status().message(), HasSubstr("--master-port is \"banana\""));
}

TEST(ShellScriptTest, RecognisesShellsAndTheirCommandOption) {
  EXPECT_EQ(ShellScriptOf({"bash", "-lc", "x"}), "x");
  EXPECT_EQ(ShellScriptOf({"/bin/sh", "-c", "y", "name"}), "y");
  EXPECT_EQ(ShellScriptOf({"bash", "-l", "-c", "z"}), "z");
  EXPECT_EQ(ShellScriptOf({"vllm", "serve", "m"}), std::nullopt);
  EXPECT_EQ(ShellScriptOf({"bash", "script.sh", "-c"}), std::nullopt);
  EXPECT_EQ(ShellScriptOf({"bash", "-c"}), std::nullopt);
}

TEST(PlanErrorsTest, GroupSizeMustMatchTheNodes) {
  Recipe recipe = VllmRecipe();
  recipe.defaults[2].second = "4";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("tensor_parallel × pipeline_parallel = 4 needs 4 nodes, the group has 2"));

  recipe.version = 2;
  recipe.nodes = 3;
  plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("nodes: 3 needs 3 nodes, the group has 2"));
}

TEST(PlanErrorsTest, UnknownEngineNamesTheKnownOnes) {
  Recipe recipe = VllmRecipe();
  recipe.version = 2;
  recipe.engine = "sglang";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("knows are exec, llamacpp, native, vllm"));
}

TEST(PlanErrorsTest, DockerRuntimeNeedsAContainer) {
  Recipe recipe = VllmRecipe();
  recipe.container.clear();
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("runtime docker needs `container:`"));
}

TEST(PlanErrorsTest, EmptyCommandIsAnError) {
  Recipe recipe = VllmRecipe();
  recipe.command = "  \\\n  ";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("empty"));
}

TEST(PlanErrorsTest, PlacementMustChooseAMaster) {
  GroupContext group = Sparks(2);
  group.master_port = 0;
  absl::StatusOr<GroupPlan> plan = PlanGroup(VllmRecipe(), {}, group);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("placement must choose"));
}

Recipe ProcessRecipe(const std::string& engine) {
  Recipe recipe;
  recipe.path = "demo.yaml";
  recipe.version = 2;
  recipe.name = "demo";
  recipe.engine = engine;
  recipe.nodes = 2;
  recipe.runtime = RuntimeKind::kProcess;
  recipe.defaults = {{"port", "8000"}};
  recipe.command = "fleet-engine --port {port} --layers 4";
  return recipe;
}

TEST(PlanExecTest, CommandRunsAsIsWithFleetVariablesAndWorkersWaitForTheHead) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(ProcessRecipe("exec"), {}, Sparks(2, "demo"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->launch_order, LaunchOrder::kHeadFirst);
  const v1::ShardSpec& worker = plan->ranks[1];
  EXPECT_EQ(worker.runtime(), v1::SHARD_RUNTIME_PROCESS);
  EXPECT_THAT(Argv(worker), ElementsAre("fleet-engine", "--port", "8000", "--layers", "4"));
  EXPECT_THAT(
      Env(worker),
      ElementsAre(
          Pair("NCCL_SOCKET_IFNAME", "enp1s0f1np1"), Pair("GLOO_SOCKET_IFNAME", "enp1s0f1np1"),
          Pair("TP_SOCKET_IFNAME", "enp1s0f1np1"), Pair("NCCL_IB_HCA", "=rocep1s0f1,roceP2p1s0f1"),
          Pair("NCCL_IB_DISABLE", "0"), Pair("MASTER_ADDR", "192.168.100.11"),
          Pair("MASTER_PORT", "29501"), Pair("FLEET_RANK", "1"), Pair("FLEET_WORLD_SIZE", "2"),
          Pair("FLEET_MASTER_ADDR", "192.168.100.11"), Pair("FLEET_MASTER_PORT", "29501"),
          Pair("FLEET_GROUP", "demo"), Pair("FLEET_GENERATION", "3")));
  EXPECT_EQ(worker.wait_for_tcp(), "192.168.100.11:29501");
  EXPECT_EQ(worker.image(), "");
  EXPECT_FALSE(worker.gpus());
  EXPECT_THAT(worker.cache_dirs(), IsEmpty());
}

TEST(PlanNativeTest, RanksStartTogetherAndRendezvousThroughTheController) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(ProcessRecipe("native"), {}, Sparks(2, "demo"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->launch_order, LaunchOrder::kAllAtOnce);
  EXPECT_EQ(plan->ranks[1].wait_for_tcp(), "");
  EXPECT_THAT(Argv(plan->ranks[1]), ElementsAre("fleet-engine", "--port", "8000", "--layers", "4"));
  EXPECT_THAT(EnvNames(plan->ranks[1]), Contains("FLEET_RANK"));
  EXPECT_THAT(EnvNames(plan->ranks[1]), Not(Contains("VLLM_HOST_IP")));
  EXPECT_EQ(plan->ranks[0].readiness().port(), 8000u);
}

TEST(PlanErrorsTest, ProcessRuntimeHasNoMounts) {
  Recipe recipe = ProcessRecipe("exec");
  recipe.cache_dirs = {"/root/.cache/x"};
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(2, "demo"));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("the process runtime"));
}

// DeepSeek-V4-Flash as a GGUF through llama.cpp, as one owner runs it on a Spark.
Recipe LlamaCppRecipe() {
  Recipe recipe;
  recipe.path = "ds4-gguf.yaml";
  recipe.version = 2;
  recipe.name = "ds4-gguf";
  recipe.engine = "llamacpp";
  recipe.runtime = RuntimeKind::kProcess;
  recipe.defaults = {{"port", "8080"}};
  recipe.command =
      "llama-server -m /models/DeepSeek-V4-Flash-Q4_K_M.gguf --host 0.0.0.0 --port {port} "
      "-ngl 999 --slot-save-path /var/lib/llama/slots";
  return recipe;
}

TEST(PlanLlamaCppTest, OneNodeRunsLlamaServerWithMetrics) {
  absl::StatusOr<GroupPlan> plan = PlanGroup(LlamaCppRecipe(), {}, Sparks(1));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(Argv(plan->ranks[0]),
              ElementsAre("llama-server", "-m", "/models/DeepSeek-V4-Flash-Q4_K_M.gguf", "--host",
                          "0.0.0.0", "--port", "8080", "-ngl", "999", "--slot-save-path",
                          "/var/lib/llama/slots", "--metrics"));
  EXPECT_EQ(plan->ranks[0].wait_for_tcp(), "");
  EXPECT_EQ(plan->ranks[0].readiness().port(), 8080u);
  EXPECT_EQ(plan->endpoint, "http://192.168.100.11:8080");
}

TEST(PlanLlamaCppTest, GroupRunsRpcServersFirstOnTheFabricAndTheHeadWaitsForAll) {
  Recipe recipe = LlamaCppRecipe();
  recipe.command += " --rpc 10.9.9.9:1";
  recipe.nodes = 3;
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(3));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->launch_order, LaunchOrder::kWorkersFirst);
  std::vector<std::string> head = Argv(plan->ranks[0]);
  EXPECT_THAT(head, Not(Contains("10.9.9.9:1")));
  ASSERT_GE(head.size(), 2u);
  EXPECT_EQ(head[head.size() - 2], "--rpc");
  EXPECT_EQ(head.back(), "192.168.100.12:29501,192.168.100.13:29501");
  EXPECT_EQ(plan->ranks[0].wait_for_tcp(), "192.168.100.12:29501");
  EXPECT_THAT(plan->ranks[0].also_wait_for_tcp(), ElementsAre("192.168.100.13:29501"));
  for (int rank = 1; rank < 3; ++rank) {
    EXPECT_THAT(Argv(plan->ranks[rank]),
                ElementsAre("rpc-server", "--host", absl::StrCat("192.168.100.1", rank + 1),
                            "--port", "29501"));
    EXPECT_EQ(plan->ranks[rank].wait_for_tcp(), "");
    EXPECT_FALSE(plan->ranks[rank].has_readiness());
  }
  EXPECT_THAT(plan->notes, Contains(HasSubstr("rpc-server has no authentication")));
  EXPECT_THAT(plan->notes, Contains(HasSubstr("replaced the command's --rpc")));
}

TEST(PlanLlamaCppTest, RpcServerIsNeverBoundWithoutAFabricAddress) {
  GroupContext group = Sparks(2);
  group.nodes[1].fabric_address.clear();
  Recipe recipe = LlamaCppRecipe();
  recipe.nodes = 2;
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, group);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("only ever bound to the fabric"));
}

TEST(PlanLlamaCppTest, CommandThatIsNotLlamaServerIsRefused) {
  Recipe recipe = LlamaCppRecipe();
  recipe.command = "vllm serve m --port {port}";
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, Sparks(1));
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()),
              HasSubstr("the llamacpp engine runs llama-server"));
}

TEST(AdapterRegistryTest, FindsEveryAdapterByName) {
  EXPECT_THAT(AdapterNames(), ElementsAre("exec", "llamacpp", "native", "vllm"));
  for (const std::string& name : AdapterNames()) {
    absl::StatusOr<const EngineAdapter*> adapter = FindAdapter(name);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    EXPECT_EQ((*adapter)->name(), name);
  }
  EXPECT_EQ(FindAdapter("ray").status().code(), absl::StatusCode::kNotFound);
}

// Golden plans: the whole plan of a recipe file on Sparks, every rank's `docker run` included,
// compared with tests/fixtures/golden/plan/NAME.txt. Run the test with FLEET_UPDATE_GOLDEN=1 to
// rewrite the files, then read the diff: a golden is kept only when it is right.
int64_t Millis(const google::protobuf::Duration& duration) {
  return duration.seconds() * 1000 + duration.nanos() / 1'000'000;
}

std::string Describe(const GroupPlan& plan, const GroupContext& group, const std::string& path) {
  std::ostringstream out;
  out << "# Plan of " << path << " on " << group.nodes.size()
      << (group.nodes.size() == 1 ? " Spark" : " Sparks")
      << ", written by plan_test (FLEET_UPDATE_GOLDEN=1 rewrites it).\n";
  out << "group: " << plan.group << "\ngeneration: " << plan.generation
      << "\nlaunch order: " << LaunchOrderName(plan.launch_order) << "\nendpoint: " << plan.endpoint
      << "\nnotes:\n";
  for (const std::string& note : plan.notes) out << "  - " << note << "\n";
  for (const v1::ShardSpec& spec : plan.ranks) {
    out << "\nrank " << spec.rank() << " of " << spec.world_size() << " on "
        << group.nodes[spec.rank()].name << "\n  argv:\n";
    for (const std::string& word : spec.argv()) out << "    " << word << "\n";
    out << "  env:\n";
    for (const v1::EnvVar& var : spec.env())
      out << "    " << var.name() << "=" << var.value() << "\n";
    out << "  mounts:\n";
    for (const v1::Mount& mount : spec.mounts()) {
      out << "    " << mount.source() << " -> " << mount.target()
          << (mount.read_only() ? " (read-only)" : "") << "\n";
    }
    out << "  cache_dirs: " << absl::StrJoin(spec.cache_dirs(), " ") << "\n";
    out << "  wait_for_tcp: " << spec.wait_for_tcp();
    for (const std::string& also : spec.also_wait_for_tcp()) out << " " << also;
    if (spec.has_wait_timeout()) out << " (up to " << spec.wait_timeout().seconds() << " s)";
    out << "\n  readiness: ";
    if (spec.has_readiness()) {
      const v1::ReadinessProbe& probe = spec.readiness();
      out << "http://" << probe.host() << ":" << probe.port() << probe.health_path()
          << " models=" << probe.check_models() << " completion=" << probe.check_completion()
          << " period=" << Millis(probe.period()) << "ms"
          << " timeout=" << Millis(probe.request_timeout()) << "ms";
      if (probe.has_watch()) {
        const v1::HeadWatch& w = probe.watch();
        out << "\n  head watch: every " << Millis(w.period()) << "ms, " << w.failure_threshold()
            << " failures, " << w.metrics_path() << " stall " << Millis(w.stall_timeout())
            << "ms, one token after " << Millis(w.idle_probe_after()) << "ms idle within "
            << Millis(w.idle_probe_timeout()) << "ms";
      }
    }
    out << "\n";
    if (spec.runtime() != v1::SHARD_RUNTIME_DOCKER) {
      out << "  runtime: process\n";
      continue;
    }
    // An agent with the default state directory and HOME /root. With the image not inspected,
    // the words after IMAGE are the argv above (checked here).
    out << "  docker run, up to the image:\n";
    const v1::AgentPaths agent = AgentPathsFor("/root", kAgentDefaultStateDir);
    const std::vector<std::string> run = RenderDockerRunOn(spec, agent, std::nullopt);
    const size_t args = run.size() - static_cast<size_t>(spec.argv_size());
    EXPECT_THAT(
        std::vector<std::string>(run.begin() + static_cast<std::ptrdiff_t>(args), run.end()),
        ElementsAreArray(spec.argv()));
    for (size_t i = 0; i < args; ++i) out << "    " << run[i] << "\n";
  }
  return out.str();
}

struct GoldenCase {
  std::string recipe;  // relative to the source tree
  std::string golden;  // file name under tests/fixtures/golden/plan
};

class GoldenPlanTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenPlanTest, MatchesTheGoldenFile) {
  const std::string root = FLEET_SOURCE_DIR;
  absl::StatusOr<Recipe> recipe = LoadRecipe(absl::StrCat(root, "/", GetParam().recipe));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  recipe->path = GetParam().recipe;
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> values =
      EffectiveValues(*recipe, {});
  ASSERT_TRUE(values.ok()) << values.status();
  absl::StatusOr<int> size = GroupSize(*recipe, *values);
  ASSERT_TRUE(size.ok()) << size.status();
  const GroupContext group = Sparks(*size, GetParam().golden);
  absl::StatusOr<GroupPlan> plan = PlanGroup(*recipe, {}, group);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::string actual = Describe(*plan, group, GetParam().recipe);

  const std::string golden_path =
      absl::StrCat(root, "/tests/fixtures/golden/plan/", GetParam().golden, ".txt");
  const char* update = std::getenv("FLEET_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    ASSERT_TRUE(WriteFileAtomically(golden_path, actual).ok());
    return;
  }
  absl::StatusOr<std::string> expected = ReadFileToString(golden_path);
  ASSERT_TRUE(expected.ok()) << expected.status()
                             << "; run with FLEET_UPDATE_GOLDEN=1 to create it, then review it";
  EXPECT_EQ(actual, *expected) << "plan of " << GetParam().recipe << " differs from " << golden_path
                               << "; if the change is intended, rerun with FLEET_UPDATE_GOLDEN=1 "
                                  "and review the diff";
}

std::string GoldenName(const ::testing::TestParamInfo<GoldenCase>& info) {
  std::string name = info.param.golden;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

// Every recipe shipped in recipes/: a new one without a golden fails until its plan is reviewed.
std::vector<GoldenCase> RepoRecipes() {
  std::vector<GoldenCase> cases;
  for (const auto& entry :
       std::filesystem::directory_iterator(absl::StrCat(FLEET_SOURCE_DIR, "/recipes"))) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string stem = entry.path().stem().string();
    cases.push_back({absl::StrCat("recipes/", stem, ".yaml"), stem});
  }
  std::sort(cases.begin(), cases.end(),
            [](const GoldenCase& a, const GoldenCase& b) { return a.golden < b.golden; });
  return cases;
}

INSTANTIATE_TEST_SUITE_P(RepoRecipes, GoldenPlanTest, ::testing::ValuesIn(RepoRecipes()),
                         GoldenName);

// llama.cpp over several nodes (the single-node case is recipes/deepseek-v4-flash-gguf.yaml).
INSTANTIATE_TEST_SUITE_P(LlamaCppRpc, GoldenPlanTest,
                         ::testing::Values(GoldenCase{"tests/fixtures/recipes/llamacpp-rpc.yaml",
                                                      "llamacpp-rpc"}),
                         GoldenName);

INSTANTIATE_TEST_SUITE_P(
    VersionOneFixtures, GoldenPlanTest,
    ::testing::Values(
        GoldenCase{"tests/fixtures/recipes/deepseek-v4-flash.yaml", "deepseek-v4-flash"},
        GoldenCase{"tests/fixtures/recipes/deepseek-v4.1-flash-4x.yaml", "deepseek-v4.1-flash-4x"},
        GoldenCase{"tests/fixtures/recipes/diffusion-gemma-bf16-thinking.yaml",
                   "diffusion-gemma-bf16-thinking"},
        GoldenCase{"tests/fixtures/recipes/gemma4-26b-a4b-fp8-speculative.yaml",
                   "gemma4-26b-a4b-fp8-speculative"},
        GoldenCase{"tests/fixtures/recipes/gemma4-26b-a4b-nvfp4-solo.yaml",
                   "gemma4-26b-a4b-nvfp4-solo"},
        GoldenCase{"tests/fixtures/recipes/glm-4.7-flash-awq.yaml", "glm-4.7-flash-awq"},
        GoldenCase{"tests/fixtures/recipes/nemotron-3-nano-nvfp4.yaml", "nemotron-3-nano-nvfp4"}),
    GoldenName);

}  // namespace
}  // namespace fleet::engine
