// `fleet up` for real. The metrics endpoints: it starts a controller and two agents with metrics
// on, prints where they are, and each serves a text exposition that Prometheus's own
// `promtool check metrics` accepts (skipped, saying why, where promtool is not installed), the
// staging series included after one `fleet stage model`. The demo recipe: served behind its
// router, whose endpoint `fleet up` prints.
#include <unistd.h>

#include <cstdlib>
#include <string>
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
#include "tests/integration/haproxy_present.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;

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

// The first command of the README: `fleet up` with its demo recipe serves it behind the
// application's router and prints the one endpoint, which answers the OpenAI API.
TEST(UpServiceTest, TheDemoIsServedBehindItsRouterAndUpPrintsItsEndpoint) {
  if (!testing::HaveHaproxy()) {
    GTEST_SKIP() << "haproxy is not installed (scripts/setup.sh installs it)";
  }
  char tmpl[] = "/tmp/fleet-up-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  absl::Cleanup down = [&] {
    RunToEnd({FLEET_BINARY, "down", "--dir", dir}, dir + "/down.out", absl::Seconds(30));
  };
  ASSERT_EQ(
      RunToEnd({FLEET_BINARY, "up", "--dir", dir, "--nodes", "2", "--detach", "--timeout", "120s"},
               dir + "/up.out", absl::Seconds(150)),
      0)
      << ReadFileToString(dir + "/up.out").value_or("");
  const std::string out = ReadFileToString(dir + "/up.out").value_or("");
  // "service local-demo: http://127.0.0.2:8100 (1/1 replicas ready)"
  const std::string line = "service local-demo: ";
  const size_t at = out.find(line);
  ASSERT_NE(at, std::string::npos) << out;
  const size_t end = out.find(' ', at + line.size());
  ASSERT_NE(end, std::string::npos) << out;
  const std::string endpoint = out.substr(at + line.size(), end - at - line.size());
  EXPECT_TRUE(absl::StartsWith(endpoint, "http://127.0.0.")) << out;
  EXPECT_EQ(out.substr(end, 22), " (1/1 replicas ready)\n") << out;
  absl::StatusOr<HttpClient> http = HttpClient::Create();
  ASSERT_TRUE(http.ok());
  const std::string request =
      R"({"model": "fleet-engine-synthetic", "prompt": "hello", "max_tokens": 4})";
  absl::StatusOr<std::string> answer =
      http->Expect200("POST", endpoint + "/v1/completions", &request, 30000);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_THAT(*answer, HasSubstr(R"("choices")"));
}

}  // namespace
}  // namespace fleet
