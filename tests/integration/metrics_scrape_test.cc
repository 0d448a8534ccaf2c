// `fleet up` for real. The metrics endpoints: it starts a controller and two agents with metrics
// on, prints where they are, and each serves a text exposition that Prometheus's own
// `promtool check metrics` accepts (skipped, saying why, where promtool is not installed), the
// staging series included after one `fleet stage model`. The demo recipe: served behind its
// router, whose endpoint `fleet up` prints.
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/http/http_client.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/haproxy_present.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path == nullptr ? "/usr/bin" : path, ':')) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Runs `argv` to completion (at most `limit`), its output into `output_path`; the exit status.
int RunToEnd(std::vector<std::string> argv, const std::string& output_path, absl::Duration limit) {
  absl::StatusOr<Process> p = Process::Start(
      {.argv = std::move(argv), .output_path = output_path, .die_with_parent = true});
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return -1;
  absl::StatusOr<int> status = p->Wait(limit);
  EXPECT_TRUE(status.ok()) << status.status();
  return status.ok() && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

class MetricsScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-metrics-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(RunToEnd({FLEET_BINARY, "up", "--dir", dir_, "--nodes", "2", "--no-recipe",
                        "--detach", "--timeout", "30s"},
                       dir_ + "/up.out", absl::Seconds(45)),
              0)
        << ReadFileToString(dir_ + "/up.out").value_or("");
    up_output_ = ReadFileToString(dir_ + "/up.out").value_or("");
  }
  void TearDown() override {
    if (!dir_.empty())
      RunToEnd({FLEET_BINARY, "down", "--dir", dir_}, dir_ + "/down.out", absl::Seconds(30));
  }

  std::string Address(const std::string& role) {
    absl::StatusOr<std::string> addr =
        ReadFileToString(absl::StrCat(dir_, "/", role, "/metrics.addr"));
    EXPECT_TRUE(addr.ok()) << addr.status();
    return std::string(absl::StripAsciiWhitespace(addr.value_or("")));
  }
  std::string Scrape(const std::string& address) {
    absl::StatusOr<HttpClient> http = HttpClient::Create();
    EXPECT_TRUE(http.ok());
    std::string url = absl::StrCat("http://", address, "/metrics");
    absl::StatusOr<std::string> body = http->Expect200("GET", url, nullptr, 5000);
    EXPECT_TRUE(body.ok()) << body.status();
    return body.value_or("");
  }

  std::string dir_;
  std::string up_output_;
};

TEST_F(MetricsScrapeTest, UpPrintsEveryEndpointAndEachServesTheFleetSeries) {
  std::string controller = Address("controller");
  std::string node = Address("node-1");
  EXPECT_THAT(up_output_, HasSubstr(absl::StrCat("controller  http://", controller, "/metrics")));
  EXPECT_THAT(up_output_, HasSubstr(absl::StrCat("node-1  http://", node, "/metrics")));
  EXPECT_THAT(up_output_,
              HasSubstr(absl::StrCat("node-2  http://", Address("node-2"), "/metrics")));
  EXPECT_THAT(ReadFileToString(dir_ + "/prometheus.yml").value_or(""),
              HasSubstr(absl::StrCat("targets: ['", controller, "']")));

  std::string c = Scrape(controller);
  EXPECT_THAT(c, HasSubstr("fleet_nodes{state=\"Ready\"} 2\n"));
  EXPECT_THAT(c, HasSubstr("fleet_node_heartbeat_age_seconds{node=\"node-1\"}"));
  EXPECT_THAT(c, HasSubstr("fleet_rpc_duration_seconds_count{code=\"OK\","
                           "method=\"/fleet.v1.Controller/Register\"}"));
  std::string a = Scrape(node);
  EXPECT_THAT(a, HasSubstr("fleet_node_memlock_bytes{limit=\"soft\"}"));
  EXPECT_THAT(a, HasSubstr("fleet_agent_shards{state=\"ready\"} 0\n"));
  EXPECT_THAT(a, HasSubstr("# TYPE fleet_agent_heartbeat_rtt_seconds histogram"));

  // Read-only: nothing but GET /metrics answers.
  absl::StatusOr<HttpClient> http = HttpClient::Create();
  ASSERT_TRUE(http.ok());
  std::string body = "{}";
  EXPECT_FALSE(
      http->Expect200("POST", absl::StrCat("http://", controller, "/metrics"), &body, 5000).ok());
  EXPECT_FALSE(http->Expect200("GET", absl::StrCat("http://", node, "/"), nullptr, 5000).ok());
}

TEST_F(MetricsScrapeTest, PromtoolAcceptsTheControllersAndTheAgentsExposition) {
  std::string promtool = FindOnPath("promtool");
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool is not installed (Debian: apt-get install prometheus); the "
                    "exposition was not checked";
  }
  // A staging run first, so the fleet_stage_ series carry a result too.
  const std::string model = dir_ + "/model";
  ASSERT_TRUE(MakeDirectories(model, 0755).ok());
  ASSERT_TRUE(WriteFileAtomically(model + "/weights.bin", std::string(1 << 20, 'w')).ok());
  ASSERT_EQ(RunToEnd({"env", absl::StrCat("FLEET_CONFIG=", dir_, "/config.yaml"), FLEET_BINARY,
                      "stage", "model", model, "--from", "node-1", "--to", "node-2"},
                     dir_ + "/stage.out", absl::Seconds(60)),
            0)
      << ReadFileToString(dir_ + "/stage.out").value_or("");
  for (const std::string role : {"controller", "node-1"}) {
    std::string file = absl::StrCat(dir_, "/", role, ".prom");
    const std::string text = Scrape(Address(role));
    if (role == "controller") {
      EXPECT_THAT(text, HasSubstr("fleet_stage_runs_total{kind=\"model\",result=\"done\"} 1\n"));
      EXPECT_THAT(text, HasSubstr("fleet_stage_sent_bytes_total{kind=\"model\"} 1048576\n"));
      EXPECT_THAT(text, HasSubstr("fleet_stage_run_seconds_count{kind=\"model\"} 1\n"));
      EXPECT_THAT(text, HasSubstr("fleet_stage_in_flight 0\n"));
    }
    ASSERT_TRUE(WriteFileAtomically(file, text).ok());
    std::string out = absl::StrCat(dir_, "/", role, ".promtool");
    // promtool reads the exposition on its standard input.
    int status = RunToEnd(
        {"/bin/sh", "-c", absl::StrCat("exec '", promtool, "' check metrics < '", file, "'")}, out,
        absl::Seconds(20));
    EXPECT_EQ(status, 0) << role << ": " << ReadFileToString(out).value_or("");
    // promtool exits 0 with lint findings too: none are expected.
    EXPECT_EQ(ReadFileToString(out).value_or("?"), "") << role;
  }
}

// `fleet up` with the demo recipe in a fresh directory; `fleet down` when the test ends.
class UpDemoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveHaproxy()) {
      GTEST_SKIP() << "haproxy is not installed (scripts/setup.sh installs it)";
    }
    char tmpl[] = "/tmp/fleet-up-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(RunToEnd({FLEET_BINARY, "up", "--dir", dir_, "--nodes", "2", "--detach", "--timeout",
                        "120s"},
                       dir_ + "/up.out", absl::Seconds(150)),
              0)
        << ReadFileToString(dir_ + "/up.out").value_or("");
    up_output_ = ReadFileToString(dir_ + "/up.out").value_or("");
  }
  void TearDown() override {
    if (!dir_.empty())
      RunToEnd({FLEET_BINARY, "down", "--dir", dir_}, dir_ + "/down.out", absl::Seconds(30));
  }
  // "service local-demo: http://127.0.0.2:8100 (1/1 replicas ready)": the URL.
  std::string Endpoint() {
    const std::string line = "service local-demo: ";
    const size_t at = up_output_.find(line);
    if (at == std::string::npos) return "";
    const size_t end = up_output_.find(' ', at + line.size());
    if (end == std::string::npos) return "";
    return up_output_.substr(at + line.size(), end - at - line.size());
  }
  std::string dir_;
  std::string up_output_;
};

// The first command of the README: `fleet up` with its demo recipe serves it behind the
// application's router and prints the one endpoint, which answers the OpenAI API.
TEST_F(UpDemoTest, TheDemoIsServedBehindItsRouterAndUpPrintsItsEndpoint) {
  const std::string endpoint = Endpoint();
  ASSERT_FALSE(endpoint.empty()) << up_output_;
  EXPECT_TRUE(absl::StartsWith(endpoint, "http://127.0.0.")) << up_output_;
  EXPECT_THAT(up_output_, HasSubstr(endpoint + " (1/1 replicas ready)\n"));
  absl::StatusOr<HttpClient> http = HttpClient::Create();
  ASSERT_TRUE(http.ok());
  const std::string request =
      R"({"model": "fleet-engine-synthetic", "prompt": "hello", "max_tokens": 4})";
  absl::StatusOr<std::string> answer =
      http->Expect200("POST", endpoint + "/v1/completions", &request, 30000);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_THAT(*answer, HasSubstr(R"("choices")"));
}

// `fleet health -o json` on that cluster while a client sends requests: every node has a fresh
// look from its agent (GPU figures or why none, link errors, free disk), and the group shows
// its head's live figures read from fleet-engine's /metrics by the agent's head watch.
TEST_F(UpDemoTest, HealthShowsEachAgentsLookAndTheGroupsLiveFigures) {
  const std::string endpoint = Endpoint();
  ASSERT_FALSE(endpoint.empty()) << up_output_;
  std::atomic<bool> stop = false;
  std::atomic<int> answered = 0;
  std::thread client([&] {
    absl::StatusOr<HttpClient> http = HttpClient::Create();
    if (!http.ok()) return;
    const std::string request =
        R"({"model": "fleet-engine-synthetic", "prompt": "tell me", "max_tokens": 48})";
    const absl::Time end = absl::Now() + absl::Seconds(60);
    while (!stop && absl::Now() < end) {
      if (http->Expect200("POST", endpoint + "/v1/completions", &request, 30000).ok()) ++answered;
    }
  });
  absl::Cleanup join = [&] {
    stop = true;
    client.join();
  };
  // The head watch reads /metrics every 5 s; the rate needs two reads while tokens flow.
  nlohmann::json doc;
  nlohmann::json group;
  const std::string cmd = absl::StrCat("FLEET_CONFIG='", dir_, "/config.yaml' exec '", FLEET_BINARY,
                                       "' health -o json");
  for (int attempt = 0; attempt < 40; ++attempt) {
    // The runner appends to its output file: each look gets its own.
    const std::string out = absl::StrCat(dir_, "/health-", attempt, ".json");
    RunToEnd({"/bin/sh", "-c", cmd}, out, absl::Seconds(20));
    doc = nlohmann::json::parse(ReadFileToString(out).value_or(""), nullptr,
                                /*allow_exceptions=*/false);
    ASSERT_FALSE(doc.is_discarded()) << ReadFileToString(out).value_or("");
    for (const nlohmann::json& g : doc["groups"]) {
      if (absl::StartsWith(g["name"].get<std::string>(), "local-demo")) group = g;
    }
    if (group.is_object() && group["tokens_per_second"].is_number() &&
        group["tokens_per_second"].get<double>() > 0) {
      break;
    }
    absl::SleepFor(absl::Seconds(1));
  }
  ASSERT_TRUE(group.is_object()) << doc.dump(2);
  ASSERT_TRUE(group["tokens_per_second"].is_number()) << doc.dump(2);
  EXPECT_GT(group["tokens_per_second"].get<double>(), 0) << doc.dump(2);
  EXPECT_GE(group["requests_running"].get<double>(), 0);
  EXPECT_GE(group["requests_waiting"].get<double>(), 0);
  EXPECT_GE(group["kv_cache_usage"].get<double>(), 0);
  EXPECT_LE(group["kv_cache_usage"].get<double>(), 1);
  ASSERT_EQ(doc["nodes"].size(), 2u) << doc.dump(2);
  for (const nlohmann::json& node : doc["nodes"]) {
    for (const nlohmann::json& reason : node["reasons"]) {
      EXPECT_THAT(reason.get<std::string>(), Not(HasSubstr("no fresh look"))) << doc.dump(2);
    }
    // This machine has no RDMA device: no counters to show, and the GPU column says why
    // there is none, or names it.
    EXPECT_EQ(node["link_errors"], "-") << doc.dump(2);
    EXPECT_FALSE(node["gpu"].get<std::string>().empty());
  }
  EXPECT_GT(answered.load(), 0);
}

}  // namespace
}  // namespace fleet
