// The process and docker shard runtimes over a fake process runner: what they ask the runner to
// start and run, how they read exits, stop, re-adopt, and explain failures. No process starts.
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/shards/docker_runtime.h"
#include "agent/shards/process_runtime.h"
#include "common/process/fake_process_runner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Rank 1 of generation 2 of ds4: `sh -c "exec sleep 30"` with FLEET_X=world, or the same argv
// in busybox:1 for the docker runtime.
v1::ShardSpec Spec(v1::ShardRuntime runtime) {
  v1::ShardSpec spec;
  spec.set_group("ds4");
  spec.set_generation(2);
  spec.set_rank(1);
  spec.set_runtime(runtime);
  if (runtime == v1::SHARD_RUNTIME_DOCKER) spec.set_image("busybox:1");
  for (const char* a : {"sh", "-c", "exec sleep 30"}) spec.add_argv(a);
  v1::EnvVar* env = spec.add_env();
  env->set_name("FLEET_X");
  env->set_value("world");
  return spec;
}

v1::ShardSpec ProcessSpec() { return Spec(v1::SHARD_RUNTIME_PROCESS); }

// A memlock the agent may grant whatever its hard limit: the hard limit itself.
uint64_t GrantableMemlock() {
  struct rlimit current = {};
  ::getrlimit(RLIMIT_MEMLOCK, &current);
  return current.rlim_max == RLIM_INFINITY ? UINT64_MAX : current.rlim_max;
}

TEST(ProcessRuntimeTest, LaunchStartsTheResolvedProgramInItsOwnSessionWithMemlockAndLog) {
  FakeProcessRunner runner;
  ProcessRuntime runtime("spark-1", &runner);
  v1::ShardSpec spec = ProcessSpec();
  spec.set_memlock_bytes(GrantableMemlock());
  auto shard = runtime.Launch(spec, "/var/log/ds4-1.log");
  ASSERT_TRUE(shard.ok()) << shard.status();
  ASSERT_EQ(runner.started().size(), 1u);
  const SpawnOptions& options = runner.started()[0]->options();
  EXPECT_THAT(options.argv, ElementsAre("sh", "-c", "exec sleep 30"));
  EXPECT_TRUE(absl::EndsWith(options.program, "/sh")) << options.program;
  EXPECT_THAT(options.env, ElementsAre("FLEET_X=world"));
  EXPECT_EQ(options.output_path, "/var/log/ds4-1.log");
  EXPECT_TRUE(options.new_session);
  ASSERT_EQ(options.limits.size(), 1u);
  EXPECT_EQ(options.limits[0].resource, RLIMIT_MEMLOCK);
  EXPECT_EQ(options.limits[0].hard,
            GrantableMemlock() == UINT64_MAX ? RLIM_INFINITY : GrantableMemlock());
  EXPECT_EQ((*shard)->pid(), runner.started()[0]->pid());
}

TEST(ProcessRuntimeTest, RecipeUlimitsReachTheRunnerBesideMemlock) {
  FakeProcessRunner runner;
  ProcessRuntime runtime("spark-1", &runner);
  v1::ShardSpec spec = ProcessSpec();
  v1::Ulimit* stack = spec.add_ulimits();
  stack->set_name("stack");
  stack->set_soft(67108864);
  stack->set_hard(UINT64_MAX);
  ASSERT_TRUE(runtime.Launch(spec, "/var/log/x.log").ok());
  const SpawnOptions& options = runner.started()[0]->options();
  ASSERT_EQ(options.limits.size(), 2u);
  EXPECT_EQ(options.limits[0].resource, RLIMIT_STACK);
  EXPECT_EQ(options.limits[0].soft, 67108864u);
  EXPECT_EQ(options.limits[0].hard, RLIM_INFINITY);
  EXPECT_EQ(options.limits[1].resource, RLIMIT_MEMLOCK);
  stack->set_name("wings");
  EXPECT_THAT(std::string(runtime.Check(spec).message()), HasSubstr("ulimit \"wings\""));
}

TEST(ProcessRuntimeTest, ExitIsReportedOnceTheGroupIsKilledAndTheLeaderReaped) {
  FakeProcessRunner runner;
  ProcessRuntime runtime("spark-1", &runner);
  auto shard = runtime.Launch(ProcessSpec(), "/tmp/log");
  ASSERT_TRUE(shard.ok()) << shard.status();
  std::shared_ptr<FakeProcessState> process = runner.started()[0];
  EXPECT_EQ((*shard)->OnExitReady(), std::nullopt);
  process->Exit(3 << 8);
  EXPECT_EQ((*shard)->OnExitReady(), "exited with status 3");
  EXPECT_TRUE(process->reaped());
  // Engines' workers must not outlive their leader.
  EXPECT_THAT(process->signals(), ElementsAre(-SIGKILL));
}

TEST(ProcessRuntimeTest, StopSignalsTheGroupAndEscalatesToSigkill) {
  FakeProcessRunner runner;
  ProcessRuntime runtime("spark-1", &runner);
  auto polite = runtime.Launch(ProcessSpec(), "/tmp/log");
  ASSERT_TRUE(polite.ok());
  ASSERT_TRUE((*polite)->Stop(absl::Seconds(1)).ok());
  EXPECT_THAT(runner.started()[0]->signals(), ElementsAre(-SIGTERM));

  auto stubborn = runtime.Launch(ProcessSpec(), "/tmp/log");
  ASSERT_TRUE(stubborn.ok());
  runner.started()[1]->set_ignores_sigterm(true);
  ASSERT_TRUE((*stubborn)->Stop(absl::Seconds(1)).ok());
  EXPECT_THAT(runner.started()[1]->signals(), ElementsAre(-SIGTERM, -SIGKILL));
}

TEST(ProcessRuntimeTest, DroppingTheHandleLeavesTheShardRunningForTheNextAgent) {
  FakeProcessRunner runner;
  ProcessRuntime runtime("spark-1", &runner);
  ShardRecord record;
  {
    auto shard = runtime.Launch(ProcessSpec(), "/tmp/log");
    ASSERT_TRUE(shard.ok());
    (*shard)->FillRecord(record);
  }
  std::shared_ptr<FakeProcessState> process = runner.started()[0];
  EXPECT_TRUE(process->released());
  EXPECT_THAT(process->signals(), IsEmpty());

  auto adopted = runtime.Adopt(record, "/tmp/log");
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ((*adopted)->pid(), process->pid());
  process->Exit(0);
  EXPECT_EQ((*adopted)->OnExitReady(), "exited (status unknown: started by a previous agent)");

  record.start_ticks += 1;  // the pid now names another process
  EXPECT_TRUE(absl::IsNotFound(runtime.Adopt(record, "/tmp/log").status()));
}

TEST(ProcessRuntimeTest, RunnerErrorsReachTheCaller) {
  FakeProcessRunner runner;
  ProcessRuntime runtime("spark-1", &runner);
  runner.FailNextStart(absl::FailedPreconditionError("memlock 1 GiB cannot be set"));
  auto shard = runtime.Launch(ProcessSpec(), "/tmp/log");
  EXPECT_TRUE(absl::IsFailedPrecondition(shard.status())) << shard.status();
  EXPECT_THAT(shard.status().message(), HasSubstr("memlock 1 GiB"));
}

class DockerRuntimeFakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The docker runtime writes env files (STATE_DIR/shards) and creates cache directories.
    state_dir_ = absl::StrCat(::testing::TempDir(), "fleet-runtimes-", ::getpid());
    std::filesystem::remove_all(state_dir_);
    ASSERT_TRUE(std::filesystem::create_directories(state_dir_ + "/shards"));
    runtime_ =
        std::make_unique<DockerRuntime>(DockerRuntimeOptions{.docker = "docker",
                                                             .node_name = "spark-1",
                                                             .state_dir = state_dir_,
                                                             .cache_root = state_dir_ + "/cache",
                                                             .runner = &runner_});
  }
  void TearDown() override { std::filesystem::remove_all(state_dir_); }

  // Answers `docker image inspect` with `inspect`, `docker run` with `run` and `docker inspect`
  // of a container with `state`.
  void Answer(RunResult inspect, RunResult run, RunResult state = {}) {
    runner_.set_run_handler([=](const SpawnOptions& o) -> absl::StatusOr<RunResult> {
      if (o.argv.size() > 2 && o.argv[1] == "image") return inspect;
      if (o.argv.size() > 1 && o.argv[1] == "run") return run;
      if (o.argv.size() > 1 && o.argv[1] == "inspect") return state;
      return RunResult{};
    });
  }

  std::vector<std::string> Commands() {
    std::vector<std::string> commands;
    for (const SpawnOptions& o : runner_.runs()) commands.push_back(absl::StrJoin(o.argv, " "));
    return commands;
  }

  FakeProcessRunner runner_;
  std::string state_dir_;
  std::unique_ptr<DockerRuntime> runtime_;
};

TEST_F(DockerRuntimeFakeTest, LaunchRunsTheContainerThenWaitsAndFollowsItsLogs) {
  Answer({.out = "[\"/bin/sh\"]\tsha256:abc\n"}, {.out = "0123abcd\n"}, {.out = "false 7\n"});
  auto shard = runtime_->Launch(Spec(v1::SHARD_RUNTIME_DOCKER), "/tmp/ds4-0.log");
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_THAT(Commands()[0], HasSubstr("docker image inspect"));
  EXPECT_THAT(Commands()[1], HasSubstr("docker run"));
  ASSERT_EQ(runner_.started().size(), 2u);
  std::string name = (*shard)->container();
  EXPECT_THAT(runner_.started()[0]->options().argv, ElementsAre("docker", "wait", name));
  EXPECT_EQ(runner_.started()[0]->options().stdout_to, OutputTo::kPipe);
  EXPECT_THAT(runner_.started()[1]->options().argv,
              ElementsAre("docker", "logs", "--follow", name));
  EXPECT_EQ(runner_.started()[1]->options().output_path, "/tmp/ds4-0.log");

  EXPECT_EQ((*shard)->OnExitReady(), std::nullopt);
  // `docker wait` ends without printing a code: the container's state decides.
  runner_.started()[0]->Exit(1 << 8);
  EXPECT_EQ((*shard)->OnExitReady(), "exited with status 7");
  EXPECT_THAT(Commands(), Contains(absl::StrCat("docker inspect --format "
                                                "{{.State.Running}} {{.State.ExitCode}} ",
                                                name)));
  shard->reset();
  // The helpers end with the handle; the container does not.
  EXPECT_THAT(runner_.started()[1]->signals(), ElementsAre(SIGTERM));
}

TEST_F(DockerRuntimeFakeTest, MissingImageAndAbsentDaemonAreRefusedWithTheFix) {
  Answer({.wait_status = 1 << 8, .err = "Error: No such image: busybox:1\n"}, {});
  absl::Status missing = runtime_->Check(Spec(v1::SHARD_RUNTIME_DOCKER));
  EXPECT_TRUE(absl::IsFailedPrecondition(missing)) << missing;
  EXPECT_THAT(missing.message(), HasSubstr("image busybox:1 not present on spark-1: docker pull"));

  Answer({.wait_status = 1 << 8,
          .err = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n"},
         {});
  absl::Status absent = runtime_->Check(Spec(v1::SHARD_RUNTIME_DOCKER));
  EXPECT_TRUE(absl::IsFailedPrecondition(absent)) << absent;
  EXPECT_THAT(absent.message(), HasSubstr("no Docker engine on spark-1: start dockerd"));
}

TEST_F(DockerRuntimeFakeTest, MemlockDockerCannotGrantIsExplainedAndTheContainerRemoved) {
  Answer({.out = "null\tsha256:abc\n"},
         {.wait_status = 126 << 8,
          .err = "docker: Error response from daemon: failed to create shim task: error setting "
                 "rlimit type 8: operation not permitted: unknown.\n"});
  auto shard = runtime_->Launch(Spec(v1::SHARD_RUNTIME_DOCKER), "/tmp/ds4-0.log");
  ASSERT_FALSE(shard.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(shard.status())) << shard.status();
  EXPECT_THAT(shard.status().message(),
              HasSubstr("memlock unlimited could not be granted to container"));
  EXPECT_THAT(shard.status().message(), HasSubstr("LimitMEMLOCK=infinity"));
  EXPECT_THAT(Commands().back(), HasSubstr("docker rm --force"));
  EXPECT_THAT(runner_.started(), IsEmpty());
}

}  // namespace
}  // namespace fleet::agent
