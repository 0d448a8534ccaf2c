// The Supervisor's docker runtime against a real Docker engine (started by scripts/dockerd.sh
// when none answers; the tests are skipped, saying why, when none can be started). The image is
// imported from a busybox rootfs, so no registry is needed. Containers and images are named
// fleet-test-* and removed afterwards.
#include "agent/shards/docker_runtime.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/probes/probe_all.h"
#include "agent/shards/supervisor_impl.h"
#include "common/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/docker_run.h"
#include "tests/support/docker_test_image.h"
#include "tests/support/eventually.h"

namespace fleet::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using ::fleet::testing::Eventually;
using ::fleet::testing::ImportBusyboxImage;
using ::fleet::testing::Shell;

// Waits for containers: up to 20 s, asking every 50 ms (a log read runs `docker logs`).
constexpr absl::Duration kDockerWait = absl::Seconds(20);
constexpr absl::Duration kDockerPoll = absl::Milliseconds(50);

class DockerRuntimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    image_ = absl::StrCat("fleet-test-busybox:", ::getpid());
    skip_reason_ = ImportBusyboxImage(FLEET_SOURCE_DIR, image_);
  }
  static void TearDownTestSuite() {
    if (!image_.empty()) Shell(absl::StrCat("docker rmi -f ", image_, " >/dev/null 2>&1"));
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    char tmpl[] = "/tmp/fleet-docker-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    state_dir_ = tmpl;
    group_ = absl::StrCat("test-", ::getpid());  // containers fleet-test-PID-g1-r0
  }
  void TearDown() override {
    if (!group_.empty()) {
      Shell(absl::StrCat("docker ps -aq --filter label=fleet.group=", group_,
                         " | xargs -r docker rm -f >/dev/null 2>&1"));
    }
  }

  std::unique_ptr<SupervisorImpl> NewSupervisor(const std::string& docker = "docker",
                                                const std::string& home = "") {
    SupervisorDeps deps = {
        .docker_runtime = std::make_unique<DockerRuntime>(
            DockerRuntimeOptions{.docker = docker,
                                 .node_name = "spark-1",
                                 .state_dir = state_dir_,
                                 .cache_root = state_dir_ + "/cache",
                                 .home = home}),
        .dial = DialTcp,
    };
    auto s =
        SupervisorImpl::Create({.state_dir = state_dir_, .node_name = "spark-1"}, std::move(deps));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  v1::ShardSpec Spec(std::optional<uint64_t> memlock) {
    v1::ShardSpec spec;
    spec.set_group(group_);
    spec.set_generation(1);
    spec.set_rank(0);
    spec.set_world_size(1);
    spec.set_runtime(v1::SHARD_RUNTIME_DOCKER);
    spec.set_image(image_);
    for (const char* a : {"/bin/sh", "-c", "echo hello from the container; exec sleep 60"}) {
      spec.add_argv(a);
    }
    spec.add_cache_dirs("/root/.cache/test");
    spec.mutable_stop_grace()->set_seconds(1);
    if (memlock) spec.set_memlock_bytes(*memlock);
    return spec;
  }

  // A docker CLI that writes down, for `docker run`, its argv (one word a line) in
  // STATE_DIR/run-argv and the mode of its --env-file as docker finds it in STATE_DIR/env-mode.
  std::string RecordingDocker() {
    std::string path = state_dir_ + "/docker";
    EXPECT_TRUE(
        WriteFileAtomically(path,
                            absl::StrCat("#!/bin/sh\n"
                                         "if [ \"$1\" = run ]; then\n"
                                         "  printf '%s\\n' \"$@\" > ",
                                         state_dir_,
                                         "/run-argv\n"
                                         "  prev=\n"
                                         "  for word in \"$@\"; do\n"
                                         "    if [ \"$prev\" = --env-file ]; then stat -c %a "
                                         "\"$word\" > ",
                                         state_dir_,
                                         "/env-mode; fi\n"
                                         "    prev=$word\n"
                                         "  done\n"
                                         "fi\n"
                                         "exec docker \"$@\"\n"),
                            0755)
            .ok());
    return path;
  }

  std::optional<v1::ShardStatus> Status(Supervisor& s) {
    for (const v1::ShardStatus& st : s.List()) return st;
    return std::nullopt;
  }

  static std::string skip_reason_;
  static std::string image_;
  std::string state_dir_;
  std::string group_;
};

std::string DockerRuntimeTest::skip_reason_;
std::string DockerRuntimeTest::image_;

TEST_F(DockerRuntimeTest, RunsLogsReadoptsAndStops) {
  std::string name = absl::StrCat("fleet-", group_, "-g1-r0");
  {
    auto s = NewSupervisor();
    // 8 MiB: what this machine's dockerd may grant.
    ASSERT_TRUE(s->Start(Spec(8 << 20)).ok());
    ASSERT_TRUE(Eventually(
        kDockerWait,
        [&] {
          auto st = Status(*s);
          return st && st->state() == v1::SHARD_STATE_READY;
        },
        kDockerPoll))
        << Status(*s)->DebugString();
    EXPECT_EQ(Status(*s)->container(), name);
    ASSERT_TRUE(Eventually(
        kDockerWait,
        [&] {
          auto log = s->ReadLog(group_, 0, std::nullopt, 5, 0);
          return log.ok() && log->data == "hello from the container\n";
        },
        kDockerPoll));
  }
  // The container outlives the supervisor, and the next one adopts it.
  EXPECT_THAT(Shell("docker ps --format '{{.Names}}'").value_or(""), HasSubstr(name));
  auto s = NewSupervisor();
  auto adopted = Status(*s);
  ASSERT_TRUE(adopted.has_value());
  EXPECT_NE(adopted->state(), v1::SHARD_STATE_FAILED) << adopted->DebugString();
  auto again = s->Start(Spec(8 << 20));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->container(), name);
  auto log = s->ReadLog(group_, 0, 0, 0, 0);
  ASSERT_TRUE(log.ok());
  EXPECT_THAT(log->data, HasSubstr("hello from the container\n"));

  auto stopped = s->Stop(group_, 0);
  ASSERT_TRUE(stopped.ok());
  ASSERT_EQ(stopped->size(), 1u);
  EXPECT_EQ((*stopped)[0].state(), v1::SHARD_STATE_EXITED) << (*stopped)[0].DebugString();
  EXPECT_THAT(Shell("docker ps -a --format '{{.Names}}'").value_or(name), Not(HasSubstr(name)));
}

TEST_F(DockerRuntimeTest, EnvironmentReachesTheContainerThroughAnEnvFileNeverArgv) {
  const std::string secret = absl::StrCat("s3cret-", ::getpid());
  auto s = NewSupervisor(RecordingDocker());
  v1::ShardSpec spec = Spec(8 << 20);
  spec.set_argv(2, "echo secret=$FLEET_SECRET_TEST; exec sleep 60");
  v1::EnvVar* var = spec.add_env();
  var->set_name("FLEET_SECRET_TEST");
  var->set_value(secret);
  ASSERT_TRUE(s->Start(spec).ok());
  ASSERT_TRUE(Eventually(
      kDockerWait,
      [&] {
        auto log = s->ReadLog(group_, 0, 0, 0, 0);
        return log.ok() && absl::StrContains(log->data, absl::StrCat("secret=", secret, "\n"));
      },
      kDockerPoll))
      << Status(*s)->DebugString();

  const std::string env_file = engine::EnvFilePath(state_dir_, spec);
  absl::StatusOr<std::string> argv = ReadFileToString(state_dir_ + "/run-argv");
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_THAT(*argv, HasSubstr(absl::StrCat("\n--env-file\n", env_file, "\n")));
  EXPECT_THAT(*argv, Not(HasSubstr(secret)));
  EXPECT_EQ(ReadFileToString(state_dir_ + "/env-mode").value_or(""), "600\n");
  // The log shows the container runs, so `docker run` has returned and the file is gone.
  EXPECT_NE(::access(env_file.c_str(), F_OK), 0) << env_file << " outlived `docker run`";
}

// `fleet plan` renders a node's docker line from what the node's agent reports (its home,
// state and cache directories, the image's ENTRYPOINT); the runtime runs its own render. The
// two are the same words, so a pasted plan line is the line that ran.
TEST_F(DockerRuntimeTest, PlanLineIsByteForByteWhatTheAgentRuns) {
  // An image whose ENTRYPOINT already runs the command's first words, as vllm/vllm-openai's
  // runs `vllm serve`: the agent drops them, and so must the plan.
  const std::string image = absl::StrCat(image_, "-entry");
  ASSERT_TRUE(Shell(absl::StrCat("printf 'FROM ", image_,
                                 "\\nENTRYPOINT [\"/bin/sh\", \"-c\"]\\n' | "
                                 "DOCKER_BUILDKIT=0 docker build -q -t ",
                                 image, " - >/dev/null")))
      << "cannot build " << image;
  const std::string home = state_dir_ + "/home";
  ASSERT_TRUE(MakeDirectories(home + "/models").ok());
  v1::ShardSpec spec = Spec(8 << 20);
  spec.set_image(image);
  v1::Mount* mount = spec.add_mounts();
  mount->set_source("~/models");
  mount->set_target("/models");
  mount->set_read_only(true);

  const v1::AgentPaths paths = engine::AgentPathsFor(home, state_dir_);
  ProbeContext ctx{.node_name = "spark-1", .agent = paths};
  ctx.request.set_image(image);
  const v1::NodeProbe probe = RunProbes(ctx);
  ASSERT_EQ(probe.images_size(), 1);
  EXPECT_THAT(probe.images(0).entrypoint(), ::testing::ElementsAre("/bin/sh", "-c"));
  std::vector<std::string> planned =
      engine::RenderDockerRunOn(spec, probe.agent(), engine::ImageInfoFromProbe(probe.images(0)));

  auto s = NewSupervisor(RecordingDocker(), home);
  ASSERT_TRUE(s->Start(spec).ok());
  ASSERT_TRUE(Eventually(
      kDockerWait,
      [&] {
        auto log = s->ReadLog(group_, 0, 0, 0, 0);
        return log.ok() && absl::StrContains(log->data, "hello from the container\n");
      },
      kDockerPoll))
      << Status(*s)->DebugString();
  absl::StatusOr<std::string> ran = ReadFileToString(state_dir_ + "/run-argv");
  ASSERT_TRUE(ran.ok()) << ran.status();
  // Word 0 is the docker CLI's path, the recording script's here.
  planned.erase(planned.begin());
  EXPECT_EQ(*ran, absl::StrCat(absl::StrJoin(planned, "\n"), "\n"));
  EXPECT_THAT(*ran, HasSubstr(absl::StrCat("\n-v\n", home, "/models:/models:ro\n")));
  EXPECT_THAT(*ran, HasSubstr(absl::StrCat("\n", image, "\necho hello")));
  Shell(absl::StrCat("docker ps -aq --filter label=fleet.group=", group_,
                     " | xargs -r docker rm -f >/dev/null 2>&1; docker rmi -f ", image,
                     " >/dev/null 2>&1"));
}

TEST_F(DockerRuntimeTest, EnvValueWithANewlineIsRefusedAtStart) {
  auto s = NewSupervisor();
  v1::ShardSpec spec = Spec(8 << 20);
  v1::EnvVar* var = spec.add_env();
  var->set_name("FLEET_SECRET_TEST");
  var->set_value("two\nlines");
  auto st = s->Start(spec);
  ASSERT_TRUE(absl::IsInvalidArgument(st.status())) << st.status();
  EXPECT_THAT(st.status().message(), HasSubstr("FLEET_SECRET_TEST"));
}

TEST_F(DockerRuntimeTest, MemlockUnlimitedThatDockerCannotGrantIsExplained) {
  auto s = NewSupervisor();
  ASSERT_TRUE(s->Start(Spec(std::nullopt)).ok());
  ASSERT_TRUE(Eventually(
      kDockerWait,
      [&] {
        auto st = Status(*s);
        return st && st->state() == v1::SHARD_STATE_FAILED;
      },
      kDockerPoll));
  std::string message = Status(*s)->message();
  EXPECT_THAT(message, HasSubstr("memlock unlimited could not be granted to container"));
  EXPECT_THAT(message, HasSubstr("on spark-1"));
  EXPECT_THAT(message, HasSubstr("LimitMEMLOCK=infinity"));
}

TEST_F(DockerRuntimeTest, MissingImageIsRefusedWithTheFix) {
  auto s = NewSupervisor();
  v1::ShardSpec spec = Spec(8 << 20);
  spec.set_image("fleet-test-absent:none");
  auto st = s->Start(spec);
  ASSERT_TRUE(absl::IsFailedPrecondition(st.status())) << st.status();
  EXPECT_EQ(st.status().message(),
            "image fleet-test-absent:none not present on spark-1: docker pull "
            "fleet-test-absent:none (or fleet stage image fleet-test-absent:none)");
}

}  // namespace
}  // namespace fleet::agent
