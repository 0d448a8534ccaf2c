// `fleet stage image` against real Docker engines: a controller and five agents in network
// namespaces, and one dockerd per node (own --data-root, --exec-root, socket), so "a node lacks
// the image" is real; each agent's docker CLI reaches its node's engine through DOCKER_HOST.
// node-1 holds a busybox image with a 32 MiB random layer; node-2 and node-3 lack it, node-4
// has it already, node-5's DOCKER_HOST names no engine. Skipped, with the reason, when dockerd
// is missing or a second engine cannot start here.
#include <signal.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/support/docker_test_image.h"

namespace fleet::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kAgents = 5;
constexpr int kEngines = 4;  // node-1..node-4; node-5 has none
constexpr const char* kImage = "fleet-test/stage-image:1";

// One node's own Docker engine, stopped and its directories removed when destroyed.
class NodeEngine {
 public:
  // Why it could not start, or "" when it answers.
  std::string Start(const std::string& dir) {
    dir_ = dir;
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    absl::StatusOr<Process> daemon =
        Process::Start({.argv = {"dockerd", "--data-root", dir_ + "/data", "--exec-root",
                                 dir_ + "/exec", "--pidfile", dir_ + "/dockerd.pid", "-H", host(),
                                 "--iptables=false", "--bridge=none"},
                        .output_path = dir_ + "/dockerd.log",
                        .die_with_parent = true});
    if (!daemon.ok()) return absl::StrCat("dockerd cannot start: ", daemon.status().message());
    daemon_ = *std::move(daemon);
    // dockerd answers within a second or two; 300 tries of `docker info`, each quick.
    for (int i = 0; i < 300 && daemon_->Running(); ++i) {
      if (Docker("info >/dev/null 2>&1").has_value()) return "";
      ::usleep(100'000);
    }
    return absl::StrCat("a second dockerd did not answer on ", host(), " within 30 s: ",
                        Shell(absl::StrCat("tail -n 5 ", dir_, "/dockerd.log")).value_or(""));
  }
  ~NodeEngine() {
    if (daemon_.has_value()) daemon_->Stop(absl::Seconds(15)).IgnoreError();
    if (dir_.empty()) return;
    // A daemon that stopped cleanly unmounted its layers; a killed one may not have.
    Shell(absl::StrCat("umount -R ", dir_, "/exec ", dir_, "/data 2>/dev/null; rm -rf ", dir_));
  }

  std::string host() const { return absl::StrCat("unix://", dir_, "/docker.sock"); }
  // `docker ARGS` against this engine, as a shell command line; its stdout or nullopt.
  std::optional<std::string> Docker(const std::string& args) const {
    return Shell(absl::StrCat("DOCKER_HOST=", host(), " docker ", args));
  }
  std::string ImageId(const std::string& ref) const {
    return std::string(absl::StripAsciiWhitespace(
        Docker(absl::StrCat("image inspect --format '{{.Id}}' ", ref, " 2>/dev/null"))
            .value_or("")));
  }

 private:
  std::string dir_;
  std::optional<Process> daemon_;
};

class StageImageTest : public ClusterFixture {
 protected:
  void SetUp() override {
    if (!Shell("command -v dockerd >/dev/null")) {
      GTEST_SKIP() << "dockerd is not installed (apt-get install docker.io)";
    }
    // Short paths: a unix socket's path must fit 108 bytes.
    for (int i = 1; i <= kEngines; ++i) {
      std::string why = engines_[i].Start(absl::StrCat("/tmp/fsi-", ::getpid(), "-", i));
      if (!why.empty()) GTEST_SKIP() << why;
    }
    // The image: busybox plus a 32 MiB layer of random bytes, made on node-1's engine (the
    // helper's docker CLI follows DOCKER_HOST); node-4 gets the same image, the same ID, by a
    // plain save | load outside SparkFleet.
    ::setenv("DOCKER_HOST", engines_[1].host().c_str(), 1);
    const std::string made = ImportBusyboxImage(FLEET_SOURCE_DIR, kImage,
                                                "head -c 33554432 /dev/urandom > $ROOT/blob.bin;");
    ::unsetenv("DOCKER_HOST");
    ASSERT_EQ(made, "") << made;
    ASSERT_TRUE(engines_[1].Docker(absl::StrCat(
        "save ", kImage, " | DOCKER_HOST=", engines_[4].host(), " docker load >/dev/null")));
    source_id_ = engines_[1].ImageId(kImage);
    ASSERT_THAT(source_id_, ::testing::StartsWith("sha256:"));
    ASSERT_EQ(engines_[4].ImageId(kImage), source_id_);
    ASSERT_EQ(engines_[2].ImageId(kImage), "");

    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kAgents + 1), FLEET_BINARY));
    ASSERT_TRUE(cluster_->StartController().ok());
    for (int i = 1; i <= kAgents; ++i) {
      const std::string docker_host =
          i <= kEngines ? engines_[i].host()
                        : absl::StrCat("unix://", cluster_->temp_dir(), "/no-engine.sock");
      absl::Status started =
          cluster_->StartAgent(i, {.env = {absl::StrCat("DOCKER_HOST=", docker_host)}});
      ASSERT_TRUE(started.ok()) << started;
    }
    ASSERT_EQ(WaitAllReady(kAgents, absl::Seconds(30)).size(), static_cast<size_t>(kAgents));
  }
  void TearDown() override {
    ClusterFixture::TearDown();
    cluster_.reset();  // the agents go before their engines
  }

  // `fleet stage image REF --from node-1 --to TO -o json`.
  nlohmann::json StageImage(const std::string& ref, const std::string& to, int* exit_code,
                            std::string* err = nullptr) {
    absl::StatusOr<CommandResult> run = cluster_->RunCli(
        {"stage", "image", ref, "--from", "node-1", "--to", to, "-o", "json"}, absl::Seconds(120));
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return nlohmann::json();
    *exit_code = run->exit_code;
    if (err != nullptr) *err = run->stderr_text;
    return nlohmann::json::parse(run->stdout_text, nullptr, false);
  }
  static const nlohmann::json& Node(const nlohmann::json& doc, const std::string& name) {
    for (const nlohmann::json& n : doc["nodes"]) {
      if (n["node"] == name) return n;
    }
    static const nlohmann::json kNone;
    ADD_FAILURE() << name << " not in " << doc.dump();
    return kNone;
  }

  // Index 0 unused; engines_[i] is node-i's.
  NodeEngine engines_[kEngines + 1];
  std::string source_id_;
};

TEST_F(StageImageTest, ReachesNodesThatLackItAndSkipsTheOneThatHasIt) {
  int code = -1;
  nlohmann::json doc = StageImage(kImage, "node-2,node-3,node-4", &code);
  ASSERT_EQ(code, 0) << doc.dump(2) << cluster_->LogTails();
  EXPECT_EQ(doc["stage"], "image");
  EXPECT_EQ(doc["from"], "node-1");
  EXPECT_EQ(doc["state"], "done");
  for (int i : {2, 3}) {
    const nlohmann::json& n = Node(doc, absl::StrCat("node-", i));
    EXPECT_EQ(n["image_id"], source_id_);
    EXPECT_EQ(n["skipped"], false);
    // The save of a 32 MiB layer plus busybox is more than 32 MiB.
    EXPECT_GT(n["bytes_sent"].get<uint64_t>(), 32u << 20);
    // Asked of the node's engine directly, not through SparkFleet.
    EXPECT_EQ(engines_[i].ImageId(kImage), source_id_) << "node-" << i;
  }
  const nlohmann::json& had = Node(doc, "node-4");
  EXPECT_EQ(had["skipped"], true);
  EXPECT_EQ(had["image_id"], source_id_);
  EXPECT_EQ(had["bytes_sent"], 0);
  std::cout << "staged " << kImage << " to node-2 and node-3 (node-4 skipped) in " << doc["seconds"]
            << " s, " << Node(doc, "node-2")["bytes_sent"] << " bytes per node\n";

  // The table a terminal user gets for the same run (printed for the README).
  absl::StatusOr<CommandResult> table = cluster_->RunCli({"stage", "status"});
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT(table->stdout_text, HasSubstr("staging image fleet-test/stage-image:1 from node-1"));
  EXPECT_THAT(table->stdout_text, HasSubstr("had it already"));
  std::cout << table->stdout_text;

  // Again: everyone has it now.
  nlohmann::json again = StageImage(kImage, "node-2,node-3", &code);
  ASSERT_EQ(code, 0) << again.dump(2);
  for (const nlohmann::json& n : again["nodes"]) {
    EXPECT_EQ(n["skipped"], true) << n.dump();
    EXPECT_EQ(n["bytes_sent"], 0) << n.dump();
  }
  absl::StatusOr<CommandResult> status = cluster_->RunCli({"stage", "status", "-o", "json"});
  ASSERT_TRUE(status.ok()) << status.status();
  nlohmann::json last = nlohmann::json::parse(status->stdout_text, nullptr, false);
  EXPECT_EQ(last["stage"], "image") << status->stdout_text;
  EXPECT_EQ(last["source"], kImage);
}

TEST_F(StageImageTest, AMissingImageOrEngineIsAClearError) {
  int code = -1;
  std::string err;
  StageImage("fleet-test/absent:1", "node-2", &code, &err);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(err, HasSubstr("image fleet-test/absent:1 not found on node node-1; pull or build "
                             "it there, or name another --from"));

  nlohmann::json doc = StageImage(kImage, "node-2,node-5", &code);
  EXPECT_EQ(code, 1) << doc.dump(2);
  EXPECT_EQ(Node(doc, "node-2")["state"], "done");
  const nlohmann::json& none = Node(doc, "node-5");
  EXPECT_EQ(none["state"], "failed");
  EXPECT_THAT(none["error"].get<std::string>(), HasSubstr("docker on node node-5 cannot inspect"));
  EXPECT_THAT(none["error"].get<std::string>(), HasSubstr("is dockerd running there?"));
  EXPECT_THAT(doc["error"].get<std::string>(), HasSubstr("not staged on node-5"));
}

}  // namespace
}  // namespace fleet::testing
