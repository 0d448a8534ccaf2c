// ImageStager's reading of `docker image inspect` through a fake process runner: present (ID and
// size), absent, an engine that does not answer, no docker CLI, bad references. No process is
// started.
#include "agent/stage/image_stager.h"

#include "common/process/fake_process_runner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

RunResult Exited(int code, std::string out, std::string err = "") {
  return RunResult{.wait_status = code << 8, .out = std::move(out), .err = std::move(err)};
}

class ImageStagerTest : public ::testing::Test {
 protected:
  absl::StatusOr<v1::StageImageInspectResponse> Inspect(const std::string& ref) {
    v1::StageImageInspectRequest request;
    request.set_ref(ref);
    return stager_.Inspect(request);
  }

  FakeProcessRunner runner_;
  ImageStager stager_{{.node_name = "spark-2", .docker = "docker", .runner = &runner_}};
};

TEST_F(ImageStagerTest, APresentImageAnswersItsIdAndSize) {
  runner_.set_run_handler([](const SpawnOptions&) -> absl::StatusOr<RunResult> {
    return Exited(0, "sha256:0123abcd 1982256\n");
  });
  absl::StatusOr<v1::StageImageInspectResponse> got = Inspect("fleet/app:1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->present());
  EXPECT_EQ(got->image_id(), "sha256:0123abcd");
  EXPECT_EQ(got->size(), 1982256u);
  ASSERT_EQ(runner_.runs().size(), 1u);
  EXPECT_THAT(runner_.runs()[0].argv, ElementsAre("docker", "image", "inspect", "--format",
                                                  "{{.Id}} {{.Size}}", "fleet/app:1"));
}

TEST_F(ImageStagerTest, NoSuchImageIsAbsentNotAnError) {
  runner_.set_run_handler([](const SpawnOptions&) -> absl::StatusOr<RunResult> {
    return Exited(1, "[]\n",
                  "Error response from daemon: no such image: fleet/app:1: No such "
                  "image: fleet/app:1\n");
  });
  absl::StatusOr<v1::StageImageInspectResponse> got = Inspect("fleet/app:1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->present());
  EXPECT_EQ(got->image_id(), "");
}

TEST_F(ImageStagerTest, AnEngineThatDoesNotAnswerNamesTheNodeAndTheFix) {
  runner_.set_run_handler([](const SpawnOptions&) -> absl::StatusOr<RunResult> {
    return Exited(1, "[]\n",
                  "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the "
                  "docker daemon running?\n");
  });
  absl::Status st = Inspect("fleet/app:1").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("docker on node spark-2 cannot inspect fleet/app:1"));
  EXPECT_THAT(st.message(), HasSubstr("Cannot connect to the Docker daemon"));
  EXPECT_THAT(st.message(), HasSubstr("systemctl start docker"));
}

TEST_F(ImageStagerTest, NoDockerCliNamesTheNodeAndThePackage) {
  runner_.set_run_handler([](const SpawnOptions&) -> absl::StatusOr<RunResult> {
    return absl::NotFoundError("exec docker: No such file or directory");
  });
  absl::Status st = Inspect("fleet/app:1").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("no docker CLI on node spark-2"));
  EXPECT_THAT(st.message(), HasSubstr("install docker.io"));
}

TEST_F(ImageStagerTest, BadReferencesAndUnknownTransfersAreRefused) {
  EXPECT_EQ(Inspect("--all").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Inspect("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(runner_.runs().empty());
  v1::StageImageReceiveRequest receive;
  receive.set_ref("fleet/app:1");
  receive.set_token("short");
  EXPECT_THAT(stager_.Receive(receive).status().message(), HasSubstr("32 bytes"));
  v1::StageFinishRequest finish;
  finish.set_transfer_id("nope");
  EXPECT_EQ(stager_.Finish(finish).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fleet::agent
