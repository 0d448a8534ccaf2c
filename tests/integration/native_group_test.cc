// fleet-engine groups end to end on CPUs: a controller and four agents, each on its own host of
// a TestNetwork, and `native` recipes whose ranks rendezvous through the controller's
// rendezvous service and run their collectives over Gloo between the hosts. Driven through the
// real `fleet` CLI: a 4-rank tensor + expert parallel group reaches Ready, passes its reference
// check against a single-rank model, answers completions (streamed and not) with metrics that
// move; stop leaves no process; and a group whose rank 0 dies fails instead of leaving headless
// workers hanging.

#include <signal.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/engine_pids.h"
#include "tests/integration/node_listing.h"
#include "tests/integration/test_network.h"

#ifndef FLEET_BINARY
#error "FLEET_BINARY must name the fleet executable (set by tests/integration/CMakeLists.txt)"
#endif

namespace fleet::testing {
namespace {

using Json = nlohmann::json;

constexpr int kHosts = 5;  // the controller's host and four agents
constexpr int kAgents = kHosts - 1;

// A small MoE geometry split over `nodes` ranks: heads, experts and vocabulary divide by 4.
std::string NativeRecipe(const std::string& name, int nodes, int port) {
  return absl::StrCat(R"(recipe_version: "2"
name: )",
                      name, R"(
engine: native
runtime: process
nodes: )",
                      nodes, R"(
defaults:
  port: )",
                      port, R"(
health:
  start_timeout: 60s
command: >-
  fleet-engine serve --device cpu --port {port} --hidden-size 128 --num-layers 2
  --num-heads 8 --num-experts 8 --experts-per-token 2 --expert-ffn-size 64 --vocab-size 256
  --max-seq-len 128 --max-num-seqs 8 --verify-steps 3 --collective-timeout 5
)");
}

class NativeGroupTest : public ClusterFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(CreateCluster(CreateTestNetwork(kHosts), FLEET_BINARY));
    port_ = 20000 + static_cast<int>(absl::ToUnixMicros(absl::Now()) % 2000) * 2;
    ASSERT_NO_FATAL_FAILURE(StartCluster(kAgents));
    ASSERT_TRUE(WaitForNodes([](const Json& d) { return AllReady(d, AgentNames(kAgents)); },
                             absl::Seconds(15)));
  }

  void TearDown() override {
    for (const char* group : {"moe4", "moe2"}) {
      std::vector<pid_t> left = EnginePids("fleet-engine", group);
      for (pid_t pid : left) ::kill(pid, SIGKILL);
      EXPECT_TRUE(left.empty()) << left.size() << " engine processes of " << group
                                << " left after the test";
    }
    ClusterFixture::TearDown();
  }

  // `extra`: YAML appended to the recipe.
  std::string WriteRecipe(const std::string& name, int nodes, const std::string& extra = "") {
    std::string path = absl::StrCat(cluster_->temp_dir(), "/", name, ".yaml");
    std::ofstream(path) << NativeRecipe(name, nodes, port_) << extra;
    return path;
  }

  absl::StatusOr<CommandResult> Fleet(const std::vector<std::string>& args,
                                      absl::Duration timeout = absl::Seconds(90)) {
    return cluster_->RunCli(args, timeout);
  }

  // curl from the controller's host (another host than the head).
  absl::StatusOr<CommandResult> Curl(const std::vector<std::string>& args) {
    std::vector<std::string> command = {"curl", "-sS", "--noproxy", "*", "-m", "20"};
    command.insert(command.end(), args.begin(), args.end());
    return RunCommand(network_->Wrap(0, command), std::chrono::seconds(30));
  }

  Json Describe(const std::string& group) {
    absl::StatusOr<CommandResult> r = Fleet({"describe", "group", group, "-o", "json"});
    if (!r.ok() || r->exit_code != 0) return Json();
    return Json::parse(r->stdout_text, nullptr, false);
  }

  int port_ = 0;
};

TEST_F(NativeGroupTest, FourRanksServeAndEqualOneRank) {
  const absl::Time start = absl::Now();
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", WriteRecipe("moe4", 4), "--timeout", "80s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  std::printf("[ TIMING   ] native 4-rank group Ready %s after apply started\n",
              absl::FormatDuration(absl::Now() - start).c_str());
  const std::string endpoint = absl::StrCat("http://", network_->host(1).ip, ":", port_);

  // The group checked itself against a single-rank model of the same weights before serving.
  absl::StatusOr<CommandResult> engine = Curl({absl::StrCat(endpoint, "/engine")});
  ASSERT_TRUE(engine.ok()) << engine.status();
  Json info = Json::parse(engine->stdout_text, nullptr, false);
  ASSERT_TRUE(info.is_object()) << engine->stdout_text << engine->stderr_text;
  EXPECT_EQ(info["world_size"], 4);
  EXPECT_TRUE(absl::StrContains(info.value("reference_check", ""), "TP=4 step vs TP=1"))
      << info.dump();
  EXPECT_TRUE(absl::StrContains(info.value("collectives", ""), "gloo/tcp")) << info.dump();
  absl::StatusOr<CommandResult> log0 = Fleet({"logs", "moe4", "--rank", "0"});
  ASSERT_TRUE(log0.ok());
  EXPECT_TRUE(absl::StrContains(log0->stdout_text, "reference check: TP=4")) << log0->stdout_text;
  for (int rank = 1; rank < 4; ++rank) {
    absl::StatusOr<CommandResult> log = Fleet({"logs", "moe4", "--rank", absl::StrCat(rank)});
    ASSERT_TRUE(log.ok());
    EXPECT_TRUE(absl::StrContains(log->stdout_text, absl::StrCat("rank ", rank, " of 4")))
        << log->stdout_text;
  }

  // A completion, the same completion streamed, and the metrics that counted them.
  const std::string body = R"({"prompt": "hello fleet", "max_tokens": 12})";
  absl::StatusOr<CommandResult> whole = Curl({"-H", "Content-Type: application/json", "-d", body,
                                              absl::StrCat(endpoint, "/v1/completions")});
  ASSERT_TRUE(whole.ok()) << whole.status();
  Json answer = Json::parse(whole->stdout_text, nullptr, false);
  ASSERT_TRUE(answer.contains("choices")) << whole->stdout_text << whole->stderr_text;
  const std::string text = answer["choices"][0]["text"];
  EXPECT_EQ(text.size(), 12u);
  absl::StatusOr<CommandResult> streamed =
      Curl({"-N", "-H", "Content-Type: application/json", "-d",
            R"({"prompt": "hello fleet", "max_tokens": 12, "stream": true})",
            absl::StrCat(endpoint, "/v1/completions")});
  ASSERT_TRUE(streamed.ok());
  std::string joined;
  for (absl::string_view line : absl::StrSplit(streamed->stdout_text, '\n', absl::SkipEmpty())) {
    if (!absl::StartsWith(line, "data: {")) continue;
    Json chunk = Json::parse(line.substr(6), nullptr, false);
    if (chunk.contains("choices") && !chunk["choices"].empty()) {
      joined += chunk["choices"][0].value("text", "");
    }
  }
  EXPECT_EQ(joined, text);
  EXPECT_TRUE(absl::StrContains(streamed->stdout_text, "data: [DONE]"));
  absl::StatusOr<CommandResult> metrics = Curl({absl::StrCat(endpoint, "/metrics")});
  ASSERT_TRUE(metrics.ok());
  EXPECT_TRUE(absl::StrContains(metrics->stdout_text,
                                "vllm:generation_tokens_total{model_name=\"fleet-engine-"
                                "synthetic\"} "))
      << metrics->stdout_text;
  // The readiness probe's one-token completion counts too: at least the two answers above.
  const std::string key = "vllm:generation_tokens_total{model_name=\"fleet-engine-synthetic\"} ";
  size_t at = metrics->stdout_text.find(key);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stod(metrics->stdout_text.substr(at + key.size())), 24);

  ASSERT_EQ(EnginePids("fleet-engine", "moe4").size(), 4u);
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "moe4"});
  ASSERT_TRUE(stopped.ok() && stopped->exit_code == 0)
      << (stopped.ok() ? stopped->stderr_text : stopped.status().ToString());
  EXPECT_TRUE(EnginePids("fleet-engine", "moe4").empty());
}

TEST_F(NativeGroupTest, ADeadRankZeroFailsTheGroupInsteadOfHangingItsWorkers) {
  // restart.policy never: the failure is final instead of healed (heal_test covers healing).
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", WriteRecipe("moe2", 2, "restart:\n  policy: never\n"), "--timeout", "80s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  Json doc = Describe("moe2");
  ASSERT_TRUE(doc.contains("group")) << doc.dump();
  std::map<int, int> pids;
  for (const Json& rank : doc["group"]["ranks"]) {
    pids[rank.value("rank", 0)] = rank["status"].value("pid", 0);
  }
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_GT(pids[0], 0);
  ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
  // Rank 1 must not outlive its rank 0: its next collective fails and it exits by itself, or
  // SparkFleet stops it first (the survivors of a failed generation are stopped), whichever
  // comes first.
  EXPECT_TRUE(TestCluster::WaitFor(
      [&] { return ::kill(pids[1], 0) != 0 || EnginePids("fleet-engine", "moe2").empty(); },
      absl::Seconds(30)))
      << "rank 1 kept running without its rank 0";
  EXPECT_TRUE(TestCluster::WaitFor(
      [&] {
        Json d = Describe("moe2");
        return d.contains("group") && d["group"].value("state", "") == "Failed";
      },
      absl::Seconds(30)))
      << Describe("moe2").dump();
  absl::StatusOr<CommandResult> log1 = Fleet({"logs", "moe2", "--rank", "1"});
  ASSERT_TRUE(log1.ok());
  EXPECT_TRUE(absl::StrContains(log1->stdout_text, "the group broke") ||
              absl::StrContains(log1->stdout_text, "stopping"))
      << log1->stdout_text;
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "moe2"});
  ASSERT_TRUE(stopped.ok());
}

// `fleet bench` against a fleet-engine group (two ranks, TP over two hosts): fleet-engine has no
// /tokenize, so prompt lengths come from usage calibration and must still be exact; the sweep
// is stored under the group's recipe revision.
TEST_F(NativeGroupTest, BenchOfATwoRankGroupGivesExactCountsAndIsStored) {
  absl::StatusOr<CommandResult> applied =
      Fleet({"apply", WriteRecipe("moe2", 2), "--timeout", "80s"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->exit_code, 0) << applied->stdout_text << applied->stderr_text;
  // The model's context is 128 tokens: depth 32 + 32 prompt + 8 generated fit.
  absl::StatusOr<CommandResult> bench =
      Fleet({"bench", "moe2", "--pp", "32", "--tg", "8", "--depth", "0,32", "--concurrency", "1,2",
             "--runs", "1", "--timeout", "30s", "-o", "json"},
            absl::Seconds(120));
  ASSERT_TRUE(bench.ok()) << bench.status();
  ASSERT_EQ(bench->exit_code, 0) << bench->stdout_text << bench->stderr_text;
  Json report = Json::parse(bench->stdout_text, nullptr, false);
  EXPECT_EQ(report["counted_by"], "usage") << report.dump();
  ASSERT_EQ(report["rows"].size(), 4u) << report.dump();
  for (const Json& row : report["rows"]) {
    EXPECT_EQ(row["pp"], 32) << row.dump();
    EXPECT_EQ(row["tg"], 8) << row.dump();
    EXPECT_EQ(row["runs"], 1) << row.dump();
    EXPECT_TRUE(row["errors"].empty()) << row.dump();
    ASSERT_TRUE(row["tg_tps"].is_number()) << row.dump();
    EXPECT_GT(row["tg_tps"].get<double>(), 0) << row.dump();
    std::printf(
        "[ TIMING   ] fleet-engine 2 ranks d%d c%d: pp %.1f t/s, tg %.1f t/s, ttft %.3f s\n",
        row["depth"].get<int>(), row["concurrency"].get<int>(), row["pp_tps"].get<double>(),
        row["tg_tps"].get<double>(), row["ttft_s"].get<double>());
  }
  EXPECT_EQ(report["stored"]["group"], "moe2") << report.dump();
  EXPECT_EQ(report["stored"]["revision"], Describe("moe2")["group"].value("fingerprint", "?"));
  absl::StatusOr<CommandResult> history = Fleet({"bench", "history", "moe2", "-o", "json"});
  ASSERT_TRUE(history.ok() && history->exit_code == 0);
  EXPECT_EQ(Json::parse(history->stdout_text, nullptr, false)["runs"].size(), 1u)
      << history->stdout_text;
  absl::StatusOr<CommandResult> stopped = Fleet({"stop", "moe2"});
  ASSERT_TRUE(stopped.ok());
}

}  // namespace
}  // namespace fleet::testing
