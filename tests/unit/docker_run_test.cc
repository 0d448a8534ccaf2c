// RenderDockerRun: the exact `docker run` argv of a shard, the ENTRYPOINT rules that keep
// `vllm serve` from being doubled, and the env file that keeps the environment out of argv.
#include "launch/docker_run.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::engine {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::testing::Not;

v1::ShardSpec WorkerSpec() {
  v1::ShardSpec spec;
  spec.set_group("ds4");
  spec.set_generation(7);
  spec.set_rank(1);
  spec.set_world_size(2);
  spec.set_runtime(v1::SHARD_RUNTIME_DOCKER);
  spec.set_image("vllm-node:latest");
  for (const char* word : {"vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--headless"}) {
    spec.add_argv(word);
  }
  return spec;
}

// The part of a docker run argv after IMAGE.
std::vector<std::string> ArgsAfterImage(const std::vector<std::string>& run,
                                        const std::string& image) {
  auto it = std::find(run.begin(), run.end(), image);
  EXPECT_NE(it, run.end()) << "no image " << image;
  return {it + 1, run.end()};
}

TEST(DockerRunTest, RendersEveryOptionInDocumentedOrder) {
  v1::ShardSpec spec = WorkerSpec();
  spec.set_gpus(true);
  spec.set_infiniband(true);
  spec.set_memlock_bytes(std::numeric_limits<uint64_t>::max());
  spec.set_shm_bytes(uint64_t{64} << 30);
  v1::Mount* models = spec.add_mounts();
  models->set_source("/srv/models");
  models->set_target("/models");
  models->set_read_only(true);
  v1::Mount* hf = spec.add_mounts();
  hf->set_source("/root/.cache/huggingface");
  hf->set_target("/root/.cache/huggingface");
  spec.add_cache_dirs("/root/.cache/vllm");
  spec.add_cache_dirs("/root/.triton/cache");
  v1::EnvVar* var = spec.add_env();
  var->set_name("NCCL_IB_HCA");
  var->set_value("=rocep1s0f1,roceP2p1s0f1");

  EXPECT_THAT(
      RenderDockerRun(spec, "/var/lib/fleet/cache/ds4/", EnvFilePath("/var/lib/fleet", spec),
                      std::nullopt),
      ElementsAre("docker", "run", "--detach", "--name", "fleet-ds4-g7-r1", "--label",
                  "fleet.group=ds4", "--label", "fleet.generation=7", "--label", "fleet.rank=1",
                  "--network", "host", "--ipc", "host", "--gpus", "all", "--device",
                  "/dev/infiniband", "--cap-add", "IPC_LOCK", "--ulimit", "memlock=-1:-1",
                  "--shm-size", "68719476736", "-v", "/srv/models:/models:ro", "-v",
                  "/root/.cache/huggingface:/root/.cache/huggingface", "-v",
                  "/var/lib/fleet/cache/ds4/root_.cache_vllm:/root/.cache/vllm", "-v",
                  "/var/lib/fleet/cache/ds4/root_.triton_cache:/root/.triton/cache", "--env-file",
                  "/var/lib/fleet/shards/ds4.r1.g7.env", "vllm-node:latest", "vllm", "serve",
                  "deepseek-ai/DeepSeek-V4-Flash", "--headless"));
}

TEST(DockerRunTest, LeavesOutGpusInfinibandAndShmWhenTheSpecHasNone) {
  const std::vector<std::string> run =
      RenderDockerRun(WorkerSpec(), "/cache", "/env", std::nullopt);
  EXPECT_THAT(run, Not(IsSupersetOf({"--gpus"})));
  EXPECT_THAT(run, Not(IsSupersetOf({"--device"})));
  EXPECT_THAT(run, Not(IsSupersetOf({"--shm-size"})));
}

TEST(DockerRunTest, MemlockIsUnlimitedWhenUnsetOrUnlimitedAndExactOtherwise) {
  v1::ShardSpec spec = WorkerSpec();
  EXPECT_THAT(RenderDockerRun(spec, "/cache", "/env", std::nullopt),
              IsSupersetOf({"memlock=-1:-1"}));
  spec.set_memlock_bytes(std::numeric_limits<uint64_t>::max());
  EXPECT_THAT(RenderDockerRun(spec, "/cache", "/env", std::nullopt),
              IsSupersetOf({"memlock=-1:-1"}));
  spec.set_memlock_bytes(8 << 20);
  EXPECT_THAT(RenderDockerRun(spec, "/cache", "/env", std::nullopt),
              IsSupersetOf({"memlock=8388608:8388608"}));
}

TEST(DockerRunTest, RecipeUlimitsBecomeUlimitFlags) {
  v1::ShardSpec spec = WorkerSpec();
  v1::Ulimit* stack = spec.add_ulimits();
  stack->set_name("stack");
  stack->set_soft(67108864);
  stack->set_hard(67108864);
  v1::Ulimit* core = spec.add_ulimits();
  core->set_name("core");
  core->set_soft(0);
  core->set_hard(std::numeric_limits<uint64_t>::max());
  std::vector<std::string> run = RenderDockerRun(spec, "/cache", "/env", std::nullopt);
  EXPECT_THAT(run, IsSupersetOf({"stack=67108864:67108864", "core=0:-1", "memlock=-1:-1"}));
}

TEST(DockerRunTest, ContainerNameCarriesGroupGenerationAndRank) {
  EXPECT_EQ(ContainerName(WorkerSpec()), "fleet-ds4-g7-r1");
}

TEST(DockerRunTest, UnknownImagePassesTheCommandAsIs) {
  EXPECT_THAT(ArgsAfterImage(RenderDockerRun(WorkerSpec(), "/cache", "/env", std::nullopt),
                             "vllm-node:latest"),
              ElementsAre("vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--headless"));
  EXPECT_THAT(ArgsAfterImage(RenderDockerRun(WorkerSpec(), "/cache", "/env", ImageInfo{}),
                             "vllm-node:latest"),
              ElementsAre("vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--headless"));
}

TEST(DockerRunTest, EntrypointThatIsTheCommandsFirstWordsIsNotRepeated) {
  EXPECT_THAT(ArgsAfterImage(RenderDockerRun(WorkerSpec(), "/cache", "/env",
                                             ImageInfo{.entrypoint = {"vllm", "serve"}}),
                             "vllm-node:latest"),
              ElementsAre("deepseek-ai/DeepSeek-V4-Flash", "--headless"));
  EXPECT_THAT(ArgsAfterImage(RenderDockerRun(WorkerSpec(), "/cache", "/env",
                                             ImageInfo{.entrypoint = {"vllm"}}),
                             "vllm-node:latest"),
              ElementsAre("serve", "deepseek-ai/DeepSeek-V4-Flash", "--headless"));
}

TEST(DockerRunTest, WrapperEntrypointGetsTheWholeCommand) {
  EXPECT_THAT(
      ArgsAfterImage(RenderDockerRun(WorkerSpec(), "/cache", "/env",
                                     ImageInfo{.entrypoint = {"/opt/nvidia/nvidia_entrypoint.sh"}}),
                     "vllm-node:latest"),
      ElementsAre("vllm", "serve", "deepseek-ai/DeepSeek-V4-Flash", "--headless"));
}

TEST(DockerRunTest, ShellEntrypointGetsOneQuotedScriptThatExecsTheEngine) {
  v1::ShardSpec spec = WorkerSpec();
  spec.add_argv("--compilation-config");
  spec.add_argv(R"({"cudagraph_mode":"FULL"})");
  spec.add_argv("--chat-template-kwargs");
  spec.add_argv("it's");
  EXPECT_THAT(ArgsAfterImage(RenderDockerRun(spec, "/cache", "/env",
                                             ImageInfo{.entrypoint = {"/bin/bash", "-c"}}),
                             "vllm-node:latest"),
              ElementsAre(R"(exec vllm serve deepseek-ai/DeepSeek-V4-Flash --headless )"
                          R"(--compilation-config '{"cudagraph_mode":"FULL"}' )"
                          R"(--chat-template-kwargs 'it'\''s')"));
}

TEST(DockerRunTest, ShellEntrypointAlreadyInTheCommandIsDroppedNotQuoted) {
  v1::ShardSpec spec = WorkerSpec();
  spec.clear_argv();
  spec.add_argv("sh");
  spec.add_argv("-c");
  spec.add_argv("ulimit -l && exec vllm serve m");
  EXPECT_THAT(
      ArgsAfterImage(RenderDockerRun(spec, "/cache", "/env", ImageInfo{.entrypoint = {"sh", "-c"}}),
                     "vllm-node:latest"),
      ElementsAre("ulimit -l && exec vllm serve m"));
}

void AddEnv(v1::ShardSpec& spec, const std::string& name, const std::string& value) {
  v1::EnvVar* var = spec.add_env();
  var->set_name(name);
  var->set_value(value);
}

TEST(DockerRunTest, EnvironmentGoesThroughTheEnvFileAndNeverIntoArgv) {
  v1::ShardSpec spec = WorkerSpec();
  AddEnv(spec, "HF_TOKEN", "hf_secret");
  const std::vector<std::string> run = RenderDockerRun(spec, "/cache", "/env", std::nullopt);
  EXPECT_THAT(run, IsSupersetOf({"--env-file", "/env"}));
  EXPECT_THAT(run, Not(Contains("-e")));
  for (const std::string& word : run) EXPECT_THAT(word, Not(HasSubstr("hf_secret")));
}

TEST(DockerRunTest, EnvFileHoldsTheEnvironmentInTheSpecsOrderLaterDuplicatesLast) {
  v1::ShardSpec spec = WorkerSpec();
  AddEnv(spec, "NCCL_SOCKET_IFNAME", "enp1s0f1np1");
  AddEnv(spec, "NCCL_IB_HCA", "=rocep1s0f1,roceP2p1s0f1");
  AddEnv(spec, "VLLM_ARGS", R"( '{"a": "b c"}' $HOME # not a comment )");
  AddEnv(spec, "EMPTY", "");
  AddEnv(spec, "NCCL_SOCKET_IFNAME", "eth0");
  // Docker applies the lines in order, so the later NCCL_SOCKET_IFNAME wins as with -e.
  absl::StatusOr<std::string> file = RenderEnvFile(spec);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file,
            "NCCL_SOCKET_IFNAME=enp1s0f1np1\n"
            "NCCL_IB_HCA==rocep1s0f1,roceP2p1s0f1\n"
            R"(VLLM_ARGS= '{"a": "b c"}' $HOME # not a comment )"
            "\n"
            "EMPTY=\n"
            "NCCL_SOCKET_IFNAME=eth0\n");
  absl::StatusOr<std::string> empty = RenderEnvFile(WorkerSpec());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
}

TEST(DockerRunTest, EnvFileRefusesALineBreakInAValueNamingTheVariable) {
  for (const char* value : {"line one\nline two", "ends in CR\r", "\n"}) {
    v1::ShardSpec spec = WorkerSpec();
    AddEnv(spec, "OK", "1");
    AddEnv(spec, "HF_TOKEN", value);
    absl::StatusOr<std::string> file = RenderEnvFile(spec);
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << value;
    EXPECT_THAT(file.status().message(), HasSubstr("HF_TOKEN")) << value;
    EXPECT_THAT(file.status().message(), Not(HasSubstr(value)));
  }
}

TEST(DockerRunTest, EnvFileRefusesNamesDockerWouldMisread) {
  for (const char* name : {"", "#HF_TOKEN", "A=B", "HF TOKEN", " HF_TOKEN"}) {
    v1::ShardSpec spec = WorkerSpec();
    AddEnv(spec, name, "x");
    EXPECT_EQ(RenderEnvFile(spec).status().code(), absl::StatusCode::kInvalidArgument)
        << "'" << name << "'";
  }
}

TEST(DockerRunTest, EnvFileLiesBesideTheShardsRecord) {
  EXPECT_EQ(EnvFilePath("/var/lib/fleet", WorkerSpec()), "/var/lib/fleet/shards/ds4.r1.g7.env");
}

TEST(DockerRunTest, ExpandHomeReplacesOnlyALeadingTilde) {
  EXPECT_EQ(ExpandHome("~/.cache/huggingface", "/root"), "/root/.cache/huggingface");
  EXPECT_EQ(ExpandHome("~", "/home/fleet"), "/home/fleet");
  EXPECT_EQ(ExpandHome("/srv/~/models", "/root"), "/srv/~/models");
  EXPECT_EQ(ExpandHome("~other/models", "/root"), "~other/models");
  EXPECT_THAT(ExpandHome("~/m", "/root"), Not(HasSubstr("~")));
}

TEST(DockerRunTest, ShellQuotingKeepsWordsAsTheyAre) {
  EXPECT_EQ(ShellQuote("--port"), "--port");
  EXPECT_EQ(ShellQuote(R"({"a":1})"), R"('{"a":1}')");
  EXPECT_EQ(ShellQuote("it's"), R"('it'\''s')");
  EXPECT_EQ(ShellQuote(""), "''");
}

TEST(DockerRunTest, ShellLineLeavesALeadingTildeForTheShellToExpand) {
  EXPECT_EQ(ShellLine({"-v", "~/.cache/hf:/root/.cache/hf", "~/a b", "x~/y", "~"}),
            "-v ~/.cache/hf:/root/.cache/hf ~/'a b' 'x~/y' '~'");
}

TEST(DockerRunTest, RenderOnAnAgentExpandsHomeAndUsesItsDirectories) {
  v1::ShardSpec spec = WorkerSpec();
  v1::Mount* mount = spec.add_mounts();
  mount->set_source("~/.cache/huggingface");
  mount->set_target("/root/.cache/huggingface");
  spec.add_cache_dirs("/root/.cache/vllm");
  v1::AgentPaths agent;
  agent.set_home("/home/op");
  agent.set_state_dir("/srv/fleet");
  agent.set_cache_root("/srv/fleet/cache/");
  const std::vector<std::string> run =
      RenderDockerRunOn(spec, agent, ImageInfo{.entrypoint = {"vllm", "serve"}});
  const std::string line = absl::StrJoin(run, " ");
  EXPECT_THAT(line, HasSubstr("-v /home/op/.cache/huggingface:/root/.cache/huggingface"));
  EXPECT_THAT(line, HasSubstr("-v /srv/fleet/cache/ds4/root_.cache_vllm:/root/.cache/vllm"));
  EXPECT_THAT(line, HasSubstr("--env-file /srv/fleet/shards/ds4.r1.g7.env"));
  EXPECT_THAT(ArgsAfterImage(run, spec.image()),
              ElementsAre("deepseek-ai/DeepSeek-V4-Flash", "--headless"));
  // Without a home (an offline plan) the mount stays under "~" for the pasting shell.
  agent.clear_home();
  EXPECT_THAT(absl::StrJoin(RenderDockerRunOn(spec, agent, std::nullopt), " "),
              HasSubstr("-v ~/.cache/huggingface:/root/.cache/huggingface"));
}

TEST(DockerRunTest, ImageInfoComesFromAPresentImageOnly) {
  v1::ImageProbe probe;
  probe.set_id("sha256:abc");
  probe.add_entrypoint("vllm");
  probe.add_entrypoint("serve");
  EXPECT_FALSE(ImageInfoFromProbe(probe).has_value());
  probe.set_present(true);
  std::optional<ImageInfo> info = ImageInfoFromProbe(probe);
  ASSERT_TRUE(info.has_value());
  EXPECT_THAT(info->entrypoint, ElementsAre("vllm", "serve"));
  EXPECT_EQ(info->id, "sha256:abc");
}

}  // namespace
}  // namespace fleet::engine
