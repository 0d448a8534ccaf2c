// fleet-echo-engine as the exec adapter runs it: real processes of the real binary on 127.0.0.1,
// rendezvous through rank 0's master port, the HTTP API, fencing of stale generations and
// duplicate ranks, and how a group falls apart when one of its ranks dies.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/eventually.h"

namespace fleet {
namespace {

using ::fleet::testing::Eventually;
using ::testing::HasSubstr;

// A port that was free a moment ago (bound to 0, read, released).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  socklen_t length = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), length) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    ADD_FAILURE() << "cannot pick a free port";
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// One HTTP/1.1 request to 127.0.0.1:`port`, read until the server closes (it always does).
absl::StatusOr<HttpAnswer> Http(int port, const std::string& method, const std::string& path,
                                const std::string& body = "") {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  RETURN_IF_ERRNO(fd, "socket");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  timeval timeout = {.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr = {.sin_family = AF_INET,
                      .sin_port = htons(static_cast<uint16_t>(port)),
                      .sin_addr = {htonl(INADDR_LOOPBACK)}};
  RETURN_IF_ERRNO(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), "connect");
  std::string request = absl::StrCat(
      method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n",
      "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  RETURN_IF_ERRNO(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), "send");
  std::string answer;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) answer.append(buffer, n);
  RETURN_IF_ERRNO(n, "recv");
  size_t head_end = answer.find("\r\n\r\n");
  std::vector<std::string> words = absl::StrSplit(answer.substr(0, answer.find("\r\n")), ' ');
  HttpAnswer result;
  if (head_end == std::string::npos || words.size() < 2 ||
      !absl::SimpleAtoi(words[1], &result.status)) {
    return absl::InternalError(absl::StrCat("malformed answer: ", answer));
  }
  result.body = answer.substr(head_end + 4);
  return result;
}

absl::StatusOr<nlohmann::json> PostJson(int port, const std::string& path,
                                        const nlohmann::json& body, int* status) {
  ASSIGN_OR_RETURN(HttpAnswer answer, Http(port, "POST", path, body.dump()));
  *status = answer.status;
  return nlohmann::json::parse(answer.body);
}

// One group of echo-engine ranks with their logs in a temporary directory.
class EchoGroup {
 public:
  EchoGroup(int world_size, uint64_t generation, absl::Duration rendezvous_timeout)
      : world_size_(world_size),
        generation_(generation),
        rendezvous_timeout_(rendezvous_timeout),
        master_port_(FreePort()),
        http_port_(FreePort()) {
    char dir[] = "/tmp/fleet-echo-XXXXXX";
    if (::mkdtemp(dir) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    dir_ = dir;
  }

  ~EchoGroup() {
    // Every rank is stopped and reaped before the logs go.
    ranks_.clear();
    for (const std::string& log : logs_) std::remove(log.c_str());
    ::rmdir(dir_.c_str());
  }

  // Starts a rank (its log is `name`.log); `generation` and `rendezvous_timeout` override the
  // group's.
  Process& Start(int rank, const std::string& name, std::optional<uint64_t> generation = {},
                 std::optional<absl::Duration> rendezvous_timeout = {}) {
    std::string log = absl::StrCat(dir_, "/", name, ".log");
    logs_.push_back(log);
    auto process = Process::Start(
        {.argv = {ECHO_ENGINE_BINARY, "--host", "127.0.0.1", "--port", absl::StrCat(http_port_),
                  "--rendezvous-timeout",
                  absl::StrCat(
                      absl::ToDoubleSeconds(rendezvous_timeout.value_or(rendezvous_timeout_)))},
         .env = {absl::StrCat("FLEET_RANK=", rank), absl::StrCat("FLEET_WORLD_SIZE=", world_size_),
                 "FLEET_MASTER_ADDR=127.0.0.1", absl::StrCat("FLEET_MASTER_PORT=", master_port_),
                 "FLEET_GROUP=demo",
                 absl::StrCat("FLEET_GENERATION=", generation.value_or(generation_)),
                 absl::StrCat("NCCL_SOCKET_IFNAME=eth-", name),
                 absl::StrCat("VLLM_HOST_IP=127.0.0.", rank + 1)},
         .output_path = log});
    // value() throws on a failed start, which fails the test with the Status.
    return ranks_.insert_or_assign(name, std::move(process).value()).first->second;
  }

  std::string Log(const std::string& name) const {
    return ReadFileToString(absl::StrCat(dir_, "/", name, ".log")).value_or("");
  }

  // Polls `name`'s log until it contains `text`; false after `timeout`.
  bool WaitForLog(const std::string& name, const std::string& text, absl::Duration timeout) const {
    return Eventually(
        timeout, [&] { return Log(name).find(text) != std::string::npos; }, absl::Milliseconds(20));
  }

  // Polls /health until it answers 200; false after `timeout`.
  bool WaitHealthy(absl::Duration timeout) const {
    return Eventually(
        timeout,
        [&] {
          absl::StatusOr<HttpAnswer> answer = Http(http_port_, "GET", "/health");
          return answer.ok() && answer->status == 200;
        },
        absl::Milliseconds(50));
  }

  int http_port() const { return http_port_; }

 private:
  const int world_size_;
  const uint64_t generation_;
  const absl::Duration rendezvous_timeout_;
  const int master_port_;
  const int http_port_;
  std::string dir_;
  std::vector<std::string> logs_;
  std::map<std::string, Process> ranks_;  // last: destroyed (killed, reaped) first
};

// "exited with status N" / "killed by signal N" of a process expected to end within `timeout`.
std::string ExitOf(Process& process, absl::Duration timeout) {
  absl::StatusOr<int> status = process.Wait(timeout);
  return status.ok() ? DescribeWaitStatus(*status) : std::string(status.status().message());
}

TEST(EchoEngineTest, ThreeRanksRendezvousServeAndFallApartWithTheirHead) {
  EchoGroup group(3, 7, absl::Seconds(20));
  // A worker started before its head retries until the head listens: it runs (and prints its
  // environment just before its first try) while no head exists.
  Process& rank1 = group.Start(1, "r1");
  ASSERT_TRUE(group.WaitForLog("r1", "rank 1 env ", absl::Seconds(10))) << group.Log("r1");
  Process& rank0 = group.Start(0, "r0");
  Process& rank2 = group.Start(2, "r2");
  ASSERT_TRUE(group.WaitHealthy(absl::Seconds(15))) << group.Log("r0");

  // Each rank printed the environment it was given, and rank 0 every worker's hello.
  EXPECT_THAT(group.Log("r1"), HasSubstr("rank 1 env FLEET_GENERATION=7 FLEET_GROUP=demo "
                                         "FLEET_MASTER_ADDR=127.0.0.1"));
  EXPECT_THAT(group.Log("r1"), HasSubstr("NCCL_SOCKET_IFNAME=eth-r1 VLLM_HOST_IP=127.0.0.2\n"));
  EXPECT_THAT(group.Log("r0"), HasSubstr("rank 0 hello from rank 2 generation 7 host "));
  EXPECT_THAT(group.Log("r0"), HasSubstr("NCCL_SOCKET_IFNAME=eth-r2 VLLM_HOST_IP=127.0.0.3\n"));

  auto ranks = Http(group.http_port(), "GET", "/ranks");
  ASSERT_TRUE(ranks.ok()) << ranks.status();
  nlohmann::json json = nlohmann::json::parse(ranks->body);
  EXPECT_EQ(json["group"], "demo");
  EXPECT_EQ(json["generation"], 7);
  ASSERT_EQ(json["ranks"].size(), 3u);
  for (int rank = 0; rank < 3; ++rank) {
    const nlohmann::json& hello = json["ranks"][rank];
    EXPECT_EQ(hello["rank"], rank);
    EXPECT_EQ(hello["env"]["FLEET_RANK"], absl::StrCat(rank));
    EXPECT_EQ(hello["env"]["NCCL_SOCKET_IFNAME"], absl::StrCat("eth-r", rank));
  }

  auto models = Http(group.http_port(), "GET", "/v1/models");
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->status, 200);
  json = nlohmann::json::parse(models->body);
  EXPECT_EQ(json["data"][0]["id"], "fleet-echo");
  EXPECT_EQ(json["data"][0]["owned_by"], "sparkfleet");

  int status = 0;
  auto completion =
      PostJson(group.http_port(), "/v1/completions",
               {{"model", "fleet-echo"}, {"prompt", "hello world"}, {"max_tokens", 5}}, &status);
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(status, 200);
  EXPECT_EQ((*completion)["choices"][0]["text"], "hello");
  EXPECT_EQ((*completion)["choices"][0]["finish_reason"], "length");
  EXPECT_EQ((*completion)["usage"]["prompt_tokens"], 11);
  EXPECT_EQ((*completion)["usage"]["completion_tokens"], 5);

  auto chat = PostJson(
      group.http_port(), "/v1/chat/completions",
      {{"model", "fleet-echo"},
       {"messages",
        {{{"role", "system"}, {"content", "be brief"}}, {{"role", "user"}, {"content", "ping"}}}}},
      &status);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(status, 200);
  EXPECT_EQ((*chat)["choices"][0]["message"]["content"], "ping");

  auto streamed =
      PostJson(group.http_port(), "/v1/chat/completions",
               {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stream", true}}, &status);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(status, 400);
  EXPECT_THAT((*streamed)["error"]["message"].get<std::string>(), HasSubstr("does not stream"));

  auto unknown = PostJson(group.http_port(), "/v1/completions",
                          {{"model", "llama"}, {"prompt", "x"}}, &status);
  ASSERT_TRUE(unknown.ok()) << unknown.status();
  EXPECT_EQ(status, 404);

  // The head dies: both workers lose their connection and fail, as vLLM workers do.
  ASSERT_TRUE(rank0.Signal(SIGKILL).ok());
  EXPECT_EQ(ExitOf(rank1, absl::Seconds(5)), "exited with status 1");
  EXPECT_EQ(ExitOf(rank2, absl::Seconds(5)), "exited with status 1");
  EXPECT_THAT(group.Log("r2"), HasSubstr("head connection lost"));
}

TEST(EchoEngineTest, StaleGenerationAndDuplicateRankAreRefused) {
  EchoGroup group(3, 7, absl::Seconds(20));
  group.Start(0, "r0");
  group.Start(1, "r1");
  ASSERT_TRUE(group.WaitForLog("r0", "hello from rank 1 ", absl::Seconds(10))) << group.Log("r0");
  Process& stale = group.Start(2, "r2-stale", /*generation=*/6);
  EXPECT_EQ(ExitOf(stale, absl::Seconds(10)), "exited with status 1");
  EXPECT_THAT(group.Log("r2-stale"),
              HasSubstr("rank 2 is of generation 6, this group is at generation 7"));
  Process& duplicate = group.Start(1, "r1-again");
  EXPECT_EQ(ExitOf(duplicate, absl::Seconds(10)), "exited with status 1");
  EXPECT_THAT(group.Log("r1-again"), HasSubstr("rank 1 already joined"));
  EXPECT_THAT(group.Log("r0"), HasSubstr("hello refused"));

  // The refusals did not count: the group completes once the real rank 2 arrives.
  group.Start(2, "r2");
  EXPECT_TRUE(group.WaitHealthy(absl::Seconds(15))) << group.Log("r0");
}

TEST(EchoEngineTest, WorkerThatDiesBeforeTheGroupIsCompleteMayRejoin) {
  EchoGroup group(3, 1, absl::Seconds(20));
  group.Start(0, "r0");
  Process& first = group.Start(1, "r1");
  ASSERT_TRUE(group.WaitForLog("r0", "hello from rank 1 ", absl::Seconds(10))) << group.Log("r0");
  ASSERT_TRUE(first.Signal(SIGKILL).ok());
  ASSERT_TRUE(
      group.WaitForLog("r0", "worker left before the group was complete", absl::Seconds(10)))
      << group.Log("r0");
  group.Start(1, "r1-restarted");
  group.Start(2, "r2");
  EXPECT_TRUE(group.WaitHealthy(absl::Seconds(15))) << group.Log("r0");
}

TEST(EchoEngineTest, HeadExitsWhenAWorkerDies) {
  EchoGroup group(2, 1, absl::Seconds(20));
  Process& head = group.Start(0, "r0");
  Process& worker = group.Start(1, "r1");
  ASSERT_TRUE(group.WaitHealthy(absl::Seconds(15))) << group.Log("r0");
  ASSERT_TRUE(worker.Signal(SIGKILL).ok());
  EXPECT_EQ(ExitOf(head, absl::Seconds(5)), "exited with status 1");
  EXPECT_THAT(group.Log("r0"), HasSubstr("worker rank 1 disconnected"));
}

TEST(EchoEngineTest, SigtermStopsEveryRankPromptly) {
  EchoGroup group(2, 1, absl::Seconds(20));
  Process& head = group.Start(0, "r0");
  Process& worker = group.Start(1, "r1");
  ASSERT_TRUE(group.WaitHealthy(absl::Seconds(15))) << group.Log("r0");
  ASSERT_TRUE(worker.Signal(SIGTERM).ok());
  EXPECT_EQ(ExitOf(worker, absl::Seconds(1)), "exited with status 0");
  // The head may see its worker leave first (status 1); SIGTERM during rendezvous is below.
  head.Signal(SIGTERM).IgnoreError();
  EXPECT_TRUE(head.Wait(absl::Seconds(1)).ok());

  EchoGroup waiting(2, 1, absl::Seconds(20));
  Process& lonely_head = waiting.Start(0, "r0");
  // In rendezvous, with SIGTERM already routed to its signal thread.
  ASSERT_TRUE(waiting.WaitForLog("r0", "waiting for workers", absl::Seconds(10)))
      << waiting.Log("r0");
  ASSERT_TRUE(lonely_head.Signal(SIGTERM).ok());
  EXPECT_EQ(ExitOf(lonely_head, absl::Seconds(1)), "exited with status 0");
}

TEST(EchoEngineTest, RendezvousTimeoutNamesTheMissingRanks) {
  EchoGroup group(3, 1, absl::Seconds(1));
  Process& head = group.Start(0, "r0");
  // The worker outwaits the head, so rank 0 gives up while rank 1 is still in.
  Process& worker = group.Start(1, "r1", std::nullopt, absl::Seconds(10));
  EXPECT_EQ(ExitOf(head, absl::Seconds(5)), "exited with status 1");
  EXPECT_THAT(group.Log("r0"), HasSubstr("rank(s) 2 never said hello"));
  EXPECT_EQ(ExitOf(worker, absl::Seconds(5)), "exited with status 1");
  EXPECT_THAT(group.Log("r1"), HasSubstr("head connection lost before every rank arrived"));

  EchoGroup headless(2, 1, absl::Seconds(1));
  Process& orphan = headless.Start(1, "r1");
  EXPECT_EQ(ExitOf(orphan, absl::Seconds(5)), "exited with status 1");
  EXPECT_THAT(headless.Log("r1"), HasSubstr("did not complete in time"));
}

TEST(EchoEngineTest, MissingVariableIsAUsageError) {
  char dir[] = "/tmp/fleet-echo-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string log = absl::StrCat(dir, "/out.log");
  auto process =
      Process::Start({.argv = {"env", "-u", "FLEET_GENERATION", ECHO_ENGINE_BINARY},
                      .env = {"FLEET_RANK=0", "FLEET_WORLD_SIZE=1", "FLEET_MASTER_ADDR=127.0.0.1",
                              "FLEET_MASTER_PORT=1", "FLEET_GROUP=g"},
                      .output_path = log});
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_EQ(ExitOf(*process, absl::Seconds(5)), "exited with status 2");
  EXPECT_THAT(ReadFileToString(log).value_or(""), HasSubstr("FLEET_GENERATION is not set"));
  std::remove(log.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace fleet
