// A serving group in Docker containers, end to end through the controller and the agents:
// `fleet apply` of a docker recipe reaches Ready with one container per rank (labelled with
// group, generation and rank), `fleet logs` reads a container's output, `fleet stop` leaves no
// container; a recipe asking for the default unlimited memlock fails with the node named and
// the fix, since this machine's hard memlock limit (8 MiB) cannot be raised. Containers share
// the root network namespace, so the nodes are 127.0.0.x addresses. Skipped, saying why, where
// no Docker engine can be started.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"
#include "tests/support/docker_test_image.h"

namespace fleet::testing {
namespace {

std::string ShellOutput(const std::string& command) {
  return std::string(absl::StripAsciiWhitespace(Shell(command).value_or("")));
}

class DockerGroupTest : public ClusterFixture {
 protected:
  static void SetUpTestSuite() {
    image_ = absl::StrCat("fleet-test-group:", ::getpid());
    skip_reason_ = ImportBusyboxImage(FLEET_SOURCE_DIR, image_);
  }
  static void TearDownTestSuite() {
    if (!image_.empty()) Shell(absl::StrCat("docker rmi -f ", image_, " >/dev/null 2>&1"));
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_NO_FATAL_FAILURE(
        CreateCluster(TestNetwork::Create(3, {.use_namespaces = false}), FLEET_BINARY));
    ASSERT_NO_FATAL_FAILURE(StartCluster(2));
    ASSERT_TRUE(WaitForNodes([](const nlohmann::json& d) { return AllReady(d, AgentNames(2)); },
                             absl::Seconds(15)));
    group_ = absl::StrCat("dg", ::getpid());
  }

  void TearDown() override {
    if (!group_.empty()) {
      std::string left = ShellOutput(
          absl::StrCat("docker ps -aq --filter label=fleet.group=", group_, " | wc -l"));
      EXPECT_EQ(left, "0") << "containers left behind";
      Shell(absl::StrCat("docker ps -aq --filter label=fleet.group=", group_,
                         " | xargs -r docker rm -f >/dev/null 2>&1"));
    }
    ClusterFixture::TearDown();
  }

  // Rank 0 serves its master port with busybox httpd (the workers' agents wait for it); every
  // rank prints its rank. `memlock` is the requires line, empty for the default.
  std::string Recipe(const std::string& memlock) {
    std::string path = absl::StrCat(cluster_->temp_dir(), "/", group_, ".yaml");
    std::ofstream(path) << absl::StrCat(
        "recipe_version: \"2\"\nname: docker group\nengine: exec\nruntime: docker\ncontainer: ",
        image_, "\nnodes: 2\n", memlock,
        "health:\n  start_timeout: 60s\n"
        "command: sh -c 'echo rank $FLEET_RANK of $FLEET_WORLD_SIZE; if [ $FLEET_RANK = 0 ]; "
        "then exec httpd -f -p $FLEET_MASTER_ADDR:$FLEET_MASTER_PORT; else exec sleep 600; "
        "fi'\n");
    return path;
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args) {
    return cluster_->RunCli(args, absl::Seconds(90));
  }

  static std::string skip_reason_;
  static std::string image_;
  std::string group_;
};

std::string DockerGroupTest::skip_reason_;
std::string DockerGroupTest::image_;

TEST_F(DockerGroupTest, ApplyRunsOneLabelledContainerPerRankAndStopRemovesThem) {
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", Recipe("requires:\n  memlock: 8m\n"), "--name", group_});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  EXPECT_TRUE(absl::StrContains(applied->stdout_text, "Ready in")) << applied->stdout_text;

  EXPECT_EQ(ShellOutput(absl::StrCat("docker ps -q --filter label=fleet.group=", group_,
                                     " --filter label=fleet.generation=1 | wc -l")),
            "2");
  EXPECT_EQ(ShellOutput(absl::StrCat("docker ps -q --filter label=fleet.group=", group_,
                                     " --filter label=fleet.rank=1 | wc -l")),
            "1");
  absl::StatusOr<CommandResult> logs = Fleet({"logs", group_, "--rank", "1"});
  ASSERT_TRUE(logs.ok());
  EXPECT_TRUE(absl::StrContains(logs->stdout_text, "rank 1 of 2")) << logs->stdout_text;

  absl::StatusOr<CommandResult> stopped = Fleet({"stop", group_});
  ASSERT_TRUE(stopped.ok());
  ASSERT_EQ(stopped->exit_code, 0) << stopped->stderr_text;
  EXPECT_EQ(
      ShellOutput(absl::StrCat("docker ps -aq --filter label=fleet.group=", group_, " | wc -l")),
      "0");
}

// A live `fleet plan` asks each chosen node's agent for its directories and the image, so the
// docker line it prints is the one that agent runs: its own state directory, and after the
// image exactly the words the container runs.
TEST_F(DockerGroupTest, LivePlanShowsTheLineEachAgentRuns) {
  const std::string recipe = Recipe("requires:\n  memlock: 8m\n");
  absl::StatusOr<CommandResult> planned = Fleet({"plan", recipe, "--name", group_, "-o", "json"});
  ASSERT_TRUE(planned.ok()) << planned.status();
  ASSERT_EQ(planned->exit_code, 0) << planned->stdout_text << planned->stderr_text;
  const nlohmann::json plan = nlohmann::json::parse(planned->stdout_text, nullptr, false);
  ASSERT_TRUE(plan.contains("groups")) << planned->stdout_text;
  const nlohmann::json& group = plan["groups"][0];
  // Every node answered: nothing of the line is assumed.
  for (const nlohmann::json& note : group["notes"]) {
    EXPECT_FALSE(absl::StrContains(note.get<std::string>(), "is not known")) << note;
  }
  std::vector<std::vector<std::string>> lines;
  for (const nlohmann::json& rank : group["ranks"]) {
    ASSERT_TRUE(rank.contains("dockerRun")) << rank.dump();
    lines.push_back(rank["dockerRun"].get<std::vector<std::string>>());
  }
  ASSERT_EQ(lines.size(), 2u);

  absl::StatusOr<CommandResult> applied = Fleet({"apply", recipe, "--name", group_});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  for (int rank = 0; rank < 2; ++rank) {
    const std::vector<std::string>& line = lines[rank];
    // Rank k runs on node-(k+1) (nodes sorted by name, none busy).
    auto env_file = std::find(line.begin(), line.end(), "--env-file");
    ASSERT_NE(env_file, line.end());
    EXPECT_EQ(*(env_file + 1), absl::StrCat(cluster_->agent_state_dir(rank + 1), "/shards/", group_,
                                            ".r", rank, ".g1.env"));
    // The imported image has no ENTRYPOINT, so the container's Cmd is the words after it.
    auto image = std::find(line.begin(), line.end(), image_);
    ASSERT_NE(image, line.end());
    const std::string container = absl::StrCat("fleet-", group_, "-g1-r", rank);
    const nlohmann::json cmd = nlohmann::json::parse(
        ShellOutput(absl::StrCat("docker inspect --format '{{json .Config.Cmd}}' ", container)),
        nullptr, false);
    EXPECT_EQ(cmd, nlohmann::json(std::vector<std::string>(image + 1, line.end()))) << container;
  }
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", group_});
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->exit_code, 0) << stopped->stderr_text;
}

TEST_F(DockerGroupTest, UnlimitedMemlockThisMachineCannotGrantFailsWithTheFix) {
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", Recipe(""), "--name", group_, "--timeout", "30s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->exit_code, 1) << applied->stdout_text;
  EXPECT_TRUE(absl::StrContains(applied->stderr_text, "memlock")) << applied->stderr_text;
  EXPECT_TRUE(absl::StrContains(applied->stderr_text, "LimitMEMLOCK")) << applied->stderr_text;
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", group_});
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->exit_code, 0) << stopped->stderr_text;
}

}  // namespace
}  // namespace fleet::testing
