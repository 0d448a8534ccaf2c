// `fleet stage model` for real: a controller and four agents, each in its own network namespace
// (127.0.0.x without namespaces). node-1 holds a synthetic model; the others receive it through
// the agents' chain, each writing under its own --stage-prefix (they share this file system).
// Copies are checked with sha256sum, which the project does not implement.
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/support/random_file.h"

namespace fleet::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kAgents = 4;  // node-1 is the source, node-2..4 the targets
constexpr const char* kDest = "/models/synthetic";

// relative path -> sha256sum's hash, for every regular file under `dir` (partial copies too).
std::map<std::string, std::string> Sha256sums(const std::string& dir) {
  std::map<std::string, std::string> sums;
  std::vector<std::string> argv = {"sha256sum"};
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) argv.push_back(e.path().string());
  }
  if (argv.size() == 1) return sums;
  absl::StatusOr<CommandResult> run = RunCommand(argv, std::chrono::seconds(120));
  EXPECT_TRUE(run.ok() && run->exit_code == 0) << (run.ok() ? run->stderr_text : "");
  if (!run.ok()) return sums;
  for (absl::string_view line : absl::StrSplit(run->stdout_text, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits("  ", 1));
    sums[std::filesystem::path(kv.second).lexically_relative(dir).string()] = kv.first;
  }
  return sums;
}

class StageTest : public ClusterFixture {
 protected:
  // Starts the cluster; agent i gets `extra[i]` after its --stage-prefix.
  void Start(std::map<int, std::vector<std::string>> extra = {}) {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kAgents + 1), FLEET_BINARY));
    extra_ = std::move(extra);
    for (int i = 1; i <= kAgents; ++i) std::filesystem::create_directories(Prefix(i));
    if (before_agents_) {
      ASSERT_NO_FATAL_FAILURE(before_agents_());
      if (::testing::Test::IsSkipped()) return;
    }
    ASSERT_TRUE(cluster_->StartController().ok());
    for (int i = 1; i <= kAgents; ++i) {
      ASSERT_TRUE(StartAgent(i).ok());
    }
    ASSERT_EQ(WaitAllReady(kAgents, absl::Seconds(30)).size(), static_cast<size_t>(kAgents));
    source_ = cluster_->temp_dir() + "/source-model";
  }
  absl::Status StartAgent(int i) {
    AgentStartOptions options{.extra_flags = {"--stage-prefix", Prefix(i)}};
    for (const std::string& f : extra_[i]) options.extra_flags.push_back(f);
    return cluster_->StartAgent(i, options);
  }
  void TearDown() override {
    ClusterFixture::TearDown();
    if (!mounted_.empty()) ::umount2(mounted_.c_str(), MNT_DETACH);
  }

  std::string Prefix(int i) const { return absl::StrCat(cluster_->temp_dir(), "/stage-", i); }
  std::string Dest(int i) const { return Prefix(i) + kDest; }

  // `fleet stage model` from node-1 to `to`, -o json; the parsed document.
  nlohmann::json Stage(const std::string& to, int* exit_code = nullptr,
                       absl::Duration timeout = absl::Seconds(240)) {
    absl::StatusOr<CommandResult> run = cluster_->RunCli(
        {"stage", "model", source_, "--from", "node-1", "--to", to, "--dest", kDest, "-o", "json"},
        timeout);
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return nlohmann::json();
    if (exit_code != nullptr) *exit_code = run->exit_code;
    nlohmann::json doc = nlohmann::json::parse(run->stdout_text, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << run->stdout_text << run->stderr_text;
    return doc;
  }
  static const nlohmann::json& Node(const nlohmann::json& doc, const std::string& name) {
    for (const nlohmann::json& n : doc["nodes"]) {
      if (n["node"] == name) return n;
    }
    static const nlohmann::json kNone;
    ADD_FAILURE() << name << " not in " << doc.dump();
    return kNone;
  }
  // Waits up to 60 s until the run in flight has brought part of its file to `node` (the
  // partial copy exists from the start, reserved, so bytes_done tells); on failure, what
  // `fleet stage status` last showed.
  ::testing::AssertionResult AwaitPartOf(const std::string& node) {
    std::string last = "(no answer)";
    const bool seen = TestCluster::WaitFor(
        [&] {
          absl::StatusOr<CommandResult> s = cluster_->RunCli({"stage", "status", "-o", "json"});
          if (!s.ok()) return false;
          last = s->stdout_text + s->stderr_text;
          nlohmann::json doc = nlohmann::json::parse(s->stdout_text, nullptr, false);
          if (doc.is_discarded() || doc["state"] != "copying") return false;
          const nlohmann::json& n = Node(doc, node);
          return n["bytes_done"].get<uint64_t>() > 0 &&
                 n["bytes_done"].get<uint64_t>() < n["bytes_needed"].get<uint64_t>();
        },
        absl::Seconds(60));
    if (seen) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "no run was seen copying to " << node << "; stage status last said: " << last;
  }
  void ExpectSameTree(int i) {
    std::map<std::string, std::string> want = Sha256sums(source_);
    ASSERT_FALSE(want.empty());
    EXPECT_EQ(Sha256sums(Dest(i)), want) << "node-" << i;
  }

  std::map<int, std::vector<std::string>> extra_;
  std::function<void()> before_agents_;
  std::string source_;
  std::string mounted_;
};

TEST_F(StageTest, AMultiGigabyteModelReachesThreeNodesByteIdentical) {
  ASSERT_NO_FATAL_FAILURE(Start());
  WriteRandomFile(source_ + "/model-00001-of-00002.safetensors", (2ull << 30) + 12345, 1);
  WriteRandomFile(source_ + "/model-00002-of-00002.safetensors", 96ull << 20, 2);
  WriteRandomFile(source_ + "/tokenizer/tokenizer.json", 3 << 20, 3);
  std::ofstream(source_ + "/config.json") << "{\"architectures\": [\"Synthetic\"]}\n";
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(source_)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  int code = -1;
  nlohmann::json doc = Stage("node-2,node-3,node-4", &code);
  ASSERT_EQ(code, 0) << doc.dump(2) << cluster_->LogTails();
  EXPECT_EQ(doc["state"], "done");
  EXPECT_EQ(doc["from"], "node-1");
  std::string tree;
  for (int i = 2; i <= 4; ++i) {
    const nlohmann::json& n = Node(doc, absl::StrCat("node-", i));
    EXPECT_EQ(n["dest"], Dest(i));
    EXPECT_EQ(n["files"], 4);
    EXPECT_EQ(n["bytes"], total);
    EXPECT_EQ(n["bytes_sent"], total);
    EXPECT_GT(n["seconds"].get<double>(), 0);
    EXPECT_EQ(n["state"], "done");
    ASSERT_EQ(n["tree_sha256"].get<std::string>().size(), 64u);
    if (i > 2) {
      EXPECT_EQ(n["tree_sha256"], tree);
    }
    tree = n["tree_sha256"];
    ASSERT_NO_FATAL_FAILURE(ExpectSameTree(i));
  }
}

TEST_F(StageTest, ARerunMovesNothingAndStatusShowsTheLastRun) {
  ASSERT_NO_FATAL_FAILURE(Start());
  WriteRandomFile(source_ + "/weights.bin", 40ull << 20, 4);
  WriteRandomFile(source_ + "/sub/extra.bin", 1 << 20, 5);
  int code = -1;
  nlohmann::json first = Stage("node-2,node-3,node-4", &code);
  ASSERT_EQ(code, 0) << first.dump(2);
  nlohmann::json second = Stage("node-2,node-3,node-4", &code);
  ASSERT_EQ(code, 0) << second.dump(2);
  for (int i = 2; i <= 4; ++i) {
    const nlohmann::json& n = Node(second, absl::StrCat("node-", i));
    EXPECT_EQ(n["bytes_sent"], 0) << n.dump();
    EXPECT_EQ(n["state"], "done");
    EXPECT_EQ(n["tree_sha256"], Node(first, absl::StrCat("node-", i))["tree_sha256"]);
    ASSERT_NO_FATAL_FAILURE(ExpectSameTree(i));
  }
  absl::StatusOr<CommandResult> status = cluster_->RunCli({"stage", "status", "-o", "json"});
  ASSERT_TRUE(status.ok());
  nlohmann::json shown = nlohmann::json::parse(status->stdout_text, nullptr, false);
  EXPECT_EQ(shown["id"], second["id"]) << status->stdout_text;
  status = cluster_->RunCli({"stage", "status"});
  ASSERT_TRUE(status.ok());
  EXPECT_THAT(status->stdout_text, HasSubstr("node-4"));
  EXPECT_THAT(status->stdout_text, HasSubstr("done"));
}

TEST_F(StageTest, AnAgentKilledMidCopyResumesOnTheNextRun) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t size = 768ull << 20;
  WriteRandomFile(source_ + "/weights.bin", size, 6);
  int code = -1;
  nlohmann::json first;
  std::thread stage([&] { first = Stage("node-2,node-3,node-4", &code); });
  // node-4 is killed once it holds part of the file.
  ASSERT_TRUE(AwaitPartOf("node-4"));
  ASSERT_TRUE(cluster_->KillAgent(4).ok());
  stage.join();
  EXPECT_EQ(code, 1) << first.dump(2);
  EXPECT_EQ(Node(first, "node-4")["state"], "failed") << first.dump(2);
  EXPECT_EQ(Node(first, "node-2")["state"], "done") << first.dump(2);
  EXPECT_FALSE(std::filesystem::exists(Dest(4) + "/weights.bin"));

  ASSERT_TRUE(StartAgent(4).ok());
  ASSERT_EQ(WaitAllReady(kAgents, absl::Seconds(30)).size(), static_cast<size_t>(kAgents));
  nlohmann::json second = Stage("node-2,node-3,node-4", &code);
  ASSERT_EQ(code, 0) << second.dump(2) << cluster_->LogTails();
  EXPECT_EQ(Node(second, "node-2")["bytes_sent"], 0);
  EXPECT_EQ(Node(second, "node-3")["bytes_sent"], 0);
  EXPECT_LT(Node(second, "node-4")["bytes_sent"].get<uint64_t>(), size) << second.dump(2);
  ASSERT_NO_FATAL_FAILURE(ExpectSameTree(4));
}

TEST_F(StageTest, ACancelledCopyLeavesNothingHalfNamedAndTheNextRunResumesIt) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const uint64_t size = 768ull << 20;
  WriteRandomFile(source_ + "/weights.bin", size, 10);
  int code = -1;
  nlohmann::json first;
  std::thread stage([&] { first = Stage("node-2,node-3", &code); });
  // Cancelled once the last hop holds part of the file.
  ASSERT_TRUE(AwaitPartOf("node-3"));
  absl::StatusOr<CommandResult> cancel = cluster_->RunCli({"stage", "cancel", "-o", "json"});
  stage.join();
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_EQ(cancel->exit_code, 0) << cancel->stderr_text << cluster_->LogTails();
  nlohmann::json cancelled = nlohmann::json::parse(cancel->stdout_text, nullptr, false);
  EXPECT_EQ(cancelled["state"], "cancelled") << cancel->stdout_text;
  EXPECT_EQ(code, 1) << first.dump(2);
  EXPECT_EQ(first["state"], "cancelled") << first.dump(2);
  EXPECT_EQ(Node(first, "node-3")["state"], "cancelled") << first.dump(2);
  // Nothing under the final name; what was verified waits under the temporary one.
  for (int i = 2; i <= 3; ++i) {
    EXPECT_FALSE(std::filesystem::exists(Dest(i) + "/weights.bin")) << "node-" << i;
  }
  EXPECT_TRUE(std::filesystem::exists(Dest(3) + "/.weights.bin.fleet-partial"));
  absl::StatusOr<CommandResult> again = cluster_->RunCli({"stage", "cancel"});
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->exit_code, 0);
  EXPECT_THAT(again->stderr_text, HasSubstr("no stage run in flight"));

  // Ctrl-C on `fleet stage model` cancels the same way. The partial copies go first, so this
  // run has the whole file to send again: a resumed run may have so little left that it ends
  // between two looks at `fleet stage status` (CI saw that under load).
  for (int i = 2; i <= 3; ++i) {
    ASSERT_TRUE(std::filesystem::remove(Dest(i) + "/.weights.bin.fleet-partial"));
  }
  const std::string output = cluster_->temp_dir() + "/ctrl-c.out";
  absl::StatusOr<Process> cli = Process::Start(
      {.argv = network_->Wrap(0, {"env", "FLEET_CONFIG=" + cluster_->admin_config_path(),
                                  FLEET_BINARY, "stage", "model", source_, "--from", "node-1",
                                  "--to", "node-2,node-3", "--dest", kDest, "-o", "json"}),
       .output_path = output});
  ASSERT_TRUE(cli.ok()) << cli.status();
  ASSERT_TRUE(AwaitPartOf("node-3"));
  ASSERT_TRUE(cli->Signal(SIGINT).ok());
  absl::StatusOr<int> interrupted = cli->Wait(absl::Seconds(60));
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  ASSERT_TRUE(WIFEXITED(*interrupted)) << *interrupted;
  EXPECT_EQ(WEXITSTATUS(*interrupted), 1);
  absl::StatusOr<std::string> text = ReadFileToString(output);
  ASSERT_TRUE(text.ok());
  EXPECT_THAT(*text, HasSubstr("fleet: cancelling the stage run"));
  nlohmann::json stopped = nlohmann::json::parse(text->substr(text->find('{')), nullptr, false);
  EXPECT_EQ(stopped["state"], "cancelled") << *text;
  EXPECT_FALSE(std::filesystem::exists(Dest(3) + "/weights.bin"));

  nlohmann::json second = Stage("node-2,node-3", &code);
  ASSERT_EQ(code, 0) << second.dump(2) << cluster_->LogTails();
  EXPECT_LT(Node(second, "node-3")["bytes_sent"].get<uint64_t>(), size) << second.dump(2);
  ASSERT_NO_FATAL_FAILURE(ExpectSameTree(2));
  ASSERT_NO_FATAL_FAILURE(ExpectSameTree(3));
}

// A cancel while the source hashes a tree it has never seen (node-1 reads it as from a slow
// disk: 1 s a chunk, 20 one-chunk files, so a whole scan takes 20 s) stops the scan there: the
// run ends cancelled at once, and node-1 keeps what it hashed (its manifest cache is written
// when the scan stops, not 20 s later).
TEST_F(StageTest, ACancelDuringTheFirstScanStopsTheScan) {
  ASSERT_NO_FATAL_FAILURE(Start({{1, {"--stage-test-scan-chunk-ms", "1000"}}}));
  for (int i = 0; i < 20; ++i) {
    WriteRandomFile(absl::StrCat(source_, "/shard-", i, ".bin"), 4096, 20 + i);
  }
  int code = -1;
  nlohmann::json first;
  std::thread stage([&] { first = Stage("node-2", &code); });
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] {
        absl::StatusOr<CommandResult> s = cluster_->RunCli({"stage", "status", "-o", "json"});
        if (!s.ok()) return false;
        nlohmann::json doc = nlohmann::json::parse(s->stdout_text, nullptr, false);
        return !doc.is_discarded() && doc["state"] == "planning";
      },
      absl::Seconds(30)));
  const absl::Time scanning = absl::Now();
  absl::StatusOr<CommandResult> cancel = cluster_->RunCli({"stage", "cancel", "-o", "json"});
  stage.join();
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_EQ(cancel->exit_code, 0) << cancel->stderr_text << cluster_->LogTails();
  EXPECT_EQ(code, 1) << first.dump(2);
  EXPECT_EQ(first["state"], "cancelled") << first.dump(2);
  EXPECT_EQ(Node(first, "node-2")["state"], "cancelled") << first.dump(2);
  const std::string cache = cluster_->temp_dir() + "/node-1/stage-cache";
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] { return std::filesystem::exists(cache) && !std::filesystem::is_empty(cache); },
      absl::Seconds(30)));
  EXPECT_LT(absl::Now() - scanning, absl::Seconds(12)) << "node-1 went on hashing after the cancel";
  EXPECT_FALSE(std::filesystem::exists(Dest(2)));
}

TEST_F(StageTest, ACorruptedChunkIsDetectedAndSentAgain) {
  // node-1 flips a byte in the first 2 chunks it sends (the agent's test-only hook).
  ASSERT_NO_FATAL_FAILURE(Start({{1, {"--stage-test-corrupt-chunks", "2"}}}));
  WriteRandomFile(source_ + "/weights.bin", 40ull << 20, 7);
  int code = -1;
  nlohmann::json doc = Stage("node-2,node-3", &code);
  ASSERT_EQ(code, 0) << doc.dump(2);
  EXPECT_EQ(doc["rounds"], 2);
  // node-2 forwarded both as they came (cut-through); each node caught both itself.
  EXPECT_EQ(Node(doc, "node-2")["chunks_rejected"], 2);
  EXPECT_EQ(Node(doc, "node-3")["chunks_rejected"], 2);
  EXPECT_EQ(Node(doc, "node-2")["bytes_sent"], 40ull << 20);
  ASSERT_NO_FATAL_FAILURE(ExpectSameTree(2));
  ASSERT_NO_FATAL_FAILURE(ExpectSameTree(3));
}

TEST_F(StageTest, AFullDiskIsAClearErrorAndNothingIsHalfNamed) {
  // node-3's prefix is a 32 MiB tmpfs; the model is 48 MiB.
  before_agents_ = [this] {
    const std::string where = Prefix(3);
    if (::mount("tmpfs", where.c_str(), "tmpfs", 0, "size=32m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << where << " (" << std::strerror(errno)
                   << "); the disk-full case needs root";
    }
    mounted_ = where;
  };
  ASSERT_NO_FATAL_FAILURE(Start());
  if (IsSkipped()) return;
  WriteRandomFile(source_ + "/a.bin", 24ull << 20, 8);
  WriteRandomFile(source_ + "/b.bin", 24ull << 20, 9);
  int code = -1;
  nlohmann::json doc = Stage("node-2,node-3", &code);
  EXPECT_EQ(code, 1) << doc.dump(2);
  const nlohmann::json& full = Node(doc, "node-3");
  EXPECT_EQ(full["state"], "failed");
  EXPECT_THAT(full["error"].get<std::string>(), HasSubstr(absl::StrCat("node-3: ", Dest(3))));
  EXPECT_THAT(full["error"].get<std::string>(), HasSubstr("free space there"));
  EXPECT_EQ(Node(doc, "node-2")["state"], "done");
  ASSERT_NO_FATAL_FAILURE(ExpectSameTree(2));
  EXPECT_FALSE(std::filesystem::exists(Dest(3) + "/a.bin"));
  EXPECT_FALSE(std::filesystem::exists(Dest(3) + "/b.bin"));
}

TEST_F(StageTest, BadRequestsFailWithTheFix) {
  ASSERT_NO_FATAL_FAILURE(Start());
  absl::StatusOr<CommandResult> run =
      cluster_->RunCli({"stage", "model", "models/x", "--to", "node-2"});
  ASSERT_TRUE(run.ok());
  EXPECT_NE(run->exit_code, 0);
  EXPECT_THAT(run->stderr_text, HasSubstr("must be absolute"));
  run = cluster_->RunCli({"stage", "model", "/nonexistent", "--to", "node-9"});
  ASSERT_TRUE(run.ok());
  EXPECT_THAT(run->stderr_text, HasSubstr("node node-9 is not Ready"));
  run = cluster_->RunCli({"stage", "model", "/nonexistent/model", "--to", "node-2"});
  ASSERT_TRUE(run.ok());
  EXPECT_NE(run->exit_code, 0);
  EXPECT_THAT(run->stderr_text, HasSubstr("no source for /nonexistent/model"));
}

}  // namespace
}  // namespace fleet::testing
