// `fleet bench GROUP` end to end: a controller and an agent on their own hosts of a TestNetwork,
// a one-rank `exec` group of fleet-bench-standin (an OpenAI-compatible server with fixed
// rates), measured through the real `fleet` CLI. The controller keeps each sweep under the
// group's recipe revision; a re-applied recipe that serves slower shows as a drop.

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/engine_pids.h"
#include "tests/integration/haproxy_present.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

constexpr int kHosts = 3;  // the controller's host and two agents
constexpr char kGroup[] = "bench-demo";

class BenchGroupTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kHosts), FLEET_BINARY));
    port_ = 24000 + static_cast<int>(absl::ToUnixMicros(absl::Now()) % 2000) * 2;
    ASSERT_NO_FATAL_FAILURE(StartCluster(kHosts - 1));
    ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kHosts - 1)); },
                             absl::Seconds(15)));
  }

  void TearDown() override {
    if (cluster_ != nullptr) (void)Fleet({"stop", kGroup});
    std::vector<pid_t> left = EnginePids("fleet-bench-sta", kGroup);
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    EXPECT_TRUE(left.empty()) << left.size() << " stand-in processes left after the test";
    ClusterFixture::TearDown();
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args,
                                      absl::Duration timeout = absl::Seconds(60)) {
    return cluster_->RunCli(args, timeout);
  }

  // Applies the group serving `decode_tps` tokens a second per request and waits until it is
  // Ready with that recipe (its fingerprint no longer `previous`); returns the fingerprint ("" on
  // failure).
  std::string ApplyServing(int decode_tps, const std::string& previous = "") {
    std::string path = absl::StrCat(cluster_->temp_dir(), "/", kGroup, ".yaml");
    std::ofstream(path) << absl::StrCat(R"(recipe_version: "2"
name: bench-demo
engine: exec
runtime: process
nodes: 1
defaults:
  port: )",
                                        port_, R"(
command: fleet-bench-standin --port {port} --first-token-ms 5 --prefill-tps 20000 --decode-tps )",
                                        decode_tps, "\n");
    absl::StatusOr<CommandResult> r = Fleet({"apply", path});
    EXPECT_TRUE(r.ok() && r->exit_code == 0)
        << (r.ok() ? r->stdout_text + r->stderr_text : r.status().ToString());
    std::string fingerprint;
    bool ready = TestCluster::WaitFor(
        [&] {
          absl::StatusOr<CommandResult> d = Fleet({"describe", "group", kGroup, "-o", "json"});
          if (!d.ok() || d->exit_code != 0) return false;
          Json doc = Json::parse(d->stdout_text, nullptr, false);
          if (!doc.contains("group") || doc["group"].value("state", "") != "Ready") return false;
          // Ready with the new recipe, not the old generation still Ready.
          fingerprint = doc["group"].value("fingerprint", "");
          return fingerprint != previous;
        },
        absl::Seconds(30));
    EXPECT_TRUE(ready) << "group " << kGroup << " not Ready";
    return ready ? fingerprint : "";
  }

  // `fleet bench kGroup -o json` with a small sweep; the parsed document (null on failure).
  Json Bench() {
    absl::StatusOr<CommandResult> r =
        Fleet({"bench", kGroup, "--pp", "64", "--tg", "32", "--depth", "0", "--concurrency", "1,2",
               "--runs", "1", "-o", "json"},
              absl::Seconds(60));
    EXPECT_TRUE(r.ok() && r->exit_code == 0)
        << (r.ok() ? r->stdout_text + r->stderr_text : r.status().ToString());
    if (!r.ok() || r->exit_code != 0) return Json();
    return Json::parse(r->stdout_text, nullptr, false);
  }

  int port_ = 0;
};

TEST_F(BenchGroupTest, SweepsAreStoredPerRevisionAndASlowerRecipeIsFlagged) {
  const std::string fast = ApplyServing(200);
  ASSERT_FALSE(fast.empty());
  Json first = Bench();
  ASSERT_TRUE(first.contains("stored")) << first.dump();
  EXPECT_EQ(first["stored"]["group"], kGroup);
  EXPECT_EQ(first["stored"]["revision"], fast);
  EXPECT_TRUE(first["stored"]["drops"].empty()) << first.dump();
  ASSERT_EQ(first["rows"].size(), 2u);
  for (const Json& row : first["rows"]) {
    EXPECT_EQ(row["pp"], 64);  // confirmed by the stand-in's /tokenize
    ASSERT_TRUE(row["tg_tps"].is_number()) << row.dump();
    EXPECT_NEAR(row["tg_tps"].get<double>(), 200, 20) << row.dump();
  }

  // Half the decode rate: a new revision of the recipe, and every decode figure a drop.
  const std::string slow = ApplyServing(100, fast);
  ASSERT_FALSE(slow.empty());
  EXPECT_NE(slow, fast);
  Json second = Bench();
  ASSERT_TRUE(second.contains("stored")) << second.dump();
  EXPECT_EQ(second["stored"]["revision"], slow);
  std::string drops = second["stored"]["drops"].dump();
  // "d0 c1: tg_tps 200.71 -> 100.04 (-50.2%)": the figures themselves vary with the machine's load.
  EXPECT_TRUE(absl::StrContains(drops, "d0 c1: tg_tps ")) << drops;
  EXPECT_TRUE(absl::StrContains(drops, "d0 c2: tg_tps_total")) << drops;
  EXPECT_TRUE(
      absl::StrContains(drops, absl::StrCat("against run ", first["stored"]["run"].get<int>(),
                                            " (revision ", fast.substr(0, 12), ")")))
      << drops;

  absl::StatusOr<CommandResult> history = Fleet({"bench", "history", kGroup, "-o", "json"});
  ASSERT_TRUE(history.ok() && history->exit_code == 0)
      << (history.ok() ? history->stderr_text : history.status().ToString());
  Json runs = Json::parse(history->stdout_text, nullptr, false)["runs"];
  ASSERT_EQ(runs.size(), 2u) << history->stdout_text;
  EXPECT_EQ(runs[0]["revision"], fast);
  EXPECT_EQ(runs[1]["revision"], slow);
  EXPECT_TRUE(runs[0]["drops"].empty());
  EXPECT_FALSE(runs[1]["drops"].empty());
  absl::StatusOr<CommandResult> table = Fleet({"bench", "history", kGroup});
  ASSERT_TRUE(table.ok() && table->exit_code == 0);
  EXPECT_TRUE(absl::StrContains(table->stdout_text, fast.substr(0, 12))) << table->stdout_text;
  EXPECT_TRUE(absl::StrContains(table->stdout_text, "DROP run ")) << table->stdout_text;
}

// Two replicas behind their router: the application's name is a SERVICE target, measured
// through the router's endpoint and stored under the application with its replicas' revision.
TEST_F(BenchGroupTest, AServiceIsMeasuredThroughItsRouterAndStoredUnderItsName) {
  if (!HaveHaproxy()) GTEST_SKIP() << "haproxy is not installed (scripts/setup.sh installs it)";
  std::string path = absl::StrCat(cluster_->temp_dir(), "/", kGroup, ".yaml");
  std::ofstream(path) << absl::StrCat(R"(recipe_version: "2"
name: bench-demo
engine: exec
runtime: process
nodes: 1
replicas: 2
defaults:
  port: )",
                                      port_, R"(
command: fleet-bench-standin --port {port} --first-token-ms 5 --prefill-tps 20000 --decode-tps 200
)");
  absl::StatusOr<CommandResult> applied = Fleet({"apply", path});
  ASSERT_TRUE(applied.ok() && applied->exit_code == 0)
      << (applied.ok() ? applied->stdout_text + applied->stderr_text : applied.status().ToString());
  std::string endpoint;
  ASSERT_TRUE(TestCluster::WaitFor(
      [&] {
        absl::StatusOr<CommandResult> r = Fleet({"get", "services", "-o", "json"});
        if (!r.ok() || r->exit_code != 0) return false;
        Json doc = Json::parse(r->stdout_text, nullptr, false);
        if (!doc.contains("items") || doc["items"].size() != 1) return false;
        endpoint = doc["items"][0].value("endpoint", "");
        return doc["items"][0]["replicas"].value("ready", 0) == 2;
      },
      absl::Seconds(30)));
  Json report = Bench();
  ASSERT_TRUE(report.contains("stored")) << report.dump();
  EXPECT_EQ(report["stored"]["group"], kGroup);
  absl::StatusOr<CommandResult> d = Fleet({"describe", "group", "bench-demo-0", "-o", "json"});
  ASSERT_TRUE(d.ok() && d->exit_code == 0);
  EXPECT_EQ(report["stored"]["revision"],
            Json::parse(d->stdout_text, nullptr, false)["group"].value("fingerprint", "?"));
  for (const Json& row : report["rows"]) {
    ASSERT_TRUE(row["tg_tps"].is_number()) << row.dump();
    EXPECT_NEAR(row["tg_tps"].get<double>(), 200, 20) << row.dump();
  }
  absl::StatusOr<CommandResult> history = Fleet({"bench", "history", kGroup, "-o", "json"});
  ASSERT_TRUE(history.ok() && history->exit_code == 0);
  Json runs = Json::parse(history->stdout_text, nullptr, false)["runs"];
  ASSERT_EQ(runs.size(), 1u) << history->stdout_text;
  EXPECT_EQ(runs[0]["endpoint"], endpoint);  // measured through the router
  (void)Fleet({"stop", kGroup});
}

TEST_F(BenchGroupTest, HistoryOfAGroupNeverMeasuredSaysWhatToRun) {
  absl::StatusOr<CommandResult> r = Fleet({"bench", "history", "nothing-here"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r->stderr_text, "run `fleet bench nothing-here`"))
      << r->stderr_text;
}

}  // namespace
}  // namespace fleet::testing
