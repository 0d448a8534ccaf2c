// ProbeReadiness against real HTTP servers on loopback: canned answers per path, a server that
// never answers, a closed port, a proxy in the environment and an IPv6 host.
#include "agent/shards/readiness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::agent {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;

// A TCP socket bound to port 0 of `ip`, listening when `listen_backlog` > 0. A bound socket
// that does not listen refuses connections, and keeps its port from being reused meanwhile.
class BoundSocket {
 public:
  static absl::StatusOr<BoundSocket> Bind(const std::string& ip, int listen_backlog) {
    bool v6 = ip.find(':') != std::string::npos;
    int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RETURN_IF_ERRNO(fd, "socket");
    BoundSocket socket(fd);
    sockaddr_storage storage = {};
    socklen_t length;
    if (v6) {
      auto* addr = reinterpret_cast<sockaddr_in6*>(&storage);
      addr->sin6_family = AF_INET6;
      ::inet_pton(AF_INET6, ip.c_str(), &addr->sin6_addr);
      length = sizeof(sockaddr_in6);
    } else {
      auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
      addr->sin_family = AF_INET;
      ::inet_pton(AF_INET, ip.c_str(), &addr->sin_addr);
      length = sizeof(sockaddr_in);
    }
    RETURN_IF_ERRNO(::bind(fd, reinterpret_cast<sockaddr*>(&storage), length), "bind " + ip);
    if (listen_backlog > 0) RETURN_IF_ERRNO(::listen(fd, listen_backlog), "listen");
    RETURN_IF_ERRNO(::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length),
                    "getsockname");
    socket.port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port
                            : reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
    return socket;
  }

  BoundSocket(BoundSocket&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), port_(other.port_) {}
  BoundSocket& operator=(BoundSocket&&) = delete;
  ~BoundSocket() {
    if (fd_ >= 0) ::close(fd_);
  }

  int fd() const { return fd_; }
  int port() const { return port_; }

 private:
  explicit BoundSocket(int fd) : fd_(fd) {}

  int fd_;
  int port_ = 0;
};

struct Reply {
  int status = 200;
  std::string body;
};

// An HTTP/1.1 server answering each "METHOD PATH" with a canned reply (404 for anything else),
// one connection at a time, closing each after its answer. Records the last body per path.
class CannedServer {
 public:
  static absl::StatusOr<std::unique_ptr<CannedServer>> Start(std::map<std::string, Reply> replies,
                                                             const std::string& ip = "127.0.0.1") {
    ASSIGN_OR_RETURN(BoundSocket socket, BoundSocket::Bind(ip, 16));
    return std::unique_ptr<CannedServer>(new CannedServer(std::move(socket), std::move(replies)));
  }

  ~CannedServer() {
    // Wakes the blocked accept(), which then fails and ends the loop.
    ::shutdown(socket_.fd(), SHUT_RDWR);
    thread_.join();
  }

  int port() const { return socket_.port(); }

  std::string LastBody(const std::string& request_line) {
    absl::MutexLock lock(&mu_);
    return bodies_[request_line];
  }

 private:
  CannedServer(BoundSocket socket, std::map<std::string, Reply> replies)
      : socket_(std::move(socket)), replies_(std::move(replies)), thread_([this] { Serve(); }) {}

  void Serve() {
    for (;;) {
      int fd = ::accept4(socket_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      // A client that stalls must not hang the test.
      timeval timeout = {.tv_sec = 2, .tv_usec = 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      Answer(fd);
      ::close(fd);
    }
  }

  void Answer(int fd) {
    std::string data;
    char buffer[4096];
    size_t head_end;
    while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n <= 0) return;
      data.append(buffer, n);
    }
    std::vector<std::string> lines = absl::StrSplit(data.substr(0, head_end), "\r\n");
    std::vector<std::string> words = absl::StrSplit(lines[0], ' ');
    if (words.size() < 2) return;
    size_t content_length = 0;
    for (const std::string& line : lines) {
      std::pair<std::string, std::string> header = absl::StrSplit(line, absl::MaxSplits(':', 1));
      if (strcasecmp(header.first.c_str(), "Content-Length") == 0) {
        (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(header.second), &content_length);
      }
    }
    std::string body = data.substr(head_end + 4);
    while (body.size() < content_length) {
      ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n <= 0) return;
      body.append(buffer, n);
    }
    std::string request_line = absl::StrCat(words[0], " ", words[1]);
    Reply reply{.status = 404, .body = "not found"};
    if (auto it = replies_.find(request_line); it != replies_.end()) reply = it->second;
    {
      absl::MutexLock lock(&mu_);
      bodies_[request_line] = body;
    }
    std::string answer = absl::StrCat(
        "HTTP/1.1 ", reply.status, " Canned\r\nContent-Type: application/json\r\n",
        "Content-Length: ", reply.body.size(), "\r\nConnection: close\r\n\r\n", reply.body);
    (void)::write(fd, answer.data(), answer.size());
  }

  BoundSocket socket_;
  const std::map<std::string, Reply> replies_;
  absl::Mutex mu_;
  std::map<std::string, std::string> bodies_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: started once everything it uses exists
};

constexpr char kModels[] =
    R"({"object":"list","data":[{"id":"m1","object":"model"},{"id":"m2","object":"model"}]})";
constexpr char kCompletion[] = R"({"id":"c","object":"text_completion","choices":[{"text":"x"}]})";

std::map<std::string, Reply> HealthyEngine() {
  return {{"GET /health", {200, ""}},
          {"GET /v1/models", {200, kModels}},
          {"POST /v1/completions", {200, kCompletion}}};
}

v1::ReadinessProbe Probe(int port, bool check_models, bool check_completion,
                         const std::string& host = "127.0.0.1") {
  v1::ReadinessProbe probe;
  probe.set_host(host);
  probe.set_port(port);
  probe.set_check_models(check_models);
  probe.set_check_completion(check_completion);
  return probe;
}

// The message as a std::string: gMock's string matchers do not take Debian's absl::string_view.
std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string Url(int port, const std::string& path) {
  return absl::StrCat("http://127.0.0.1:", port, path);
}

TEST(ReadinessTest, ReadyWhenEveryStepAnswers) {
  auto server = CannedServer::Start(HealthyEngine());
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(ProbeReadiness(Probe((*server)->port(), true, true)).ok());
  // The completion asks the first listed model for exactly one token.
  nlohmann::json sent = nlohmann::json::parse((*server)->LastBody("POST /v1/completions"));
  EXPECT_EQ(sent["model"], "m1");
  EXPECT_EQ(sent["max_tokens"], 1);
  EXPECT_EQ(sent["prompt"], "ping");
}

TEST(ReadinessTest, OnlyHealthIsAskedWhenChecksAreOff) {
  auto server = CannedServer::Start({{"GET /health", {200, ""}}});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(ProbeReadiness(Probe((*server)->port(), false, false)).ok());
}

TEST(ReadinessTest, HealthPathIsConfigurable) {
  auto server = CannedServer::Start({{"GET /ready", {200, "ok"}}});
  ASSERT_TRUE(server.ok()) << server.status();
  v1::ReadinessProbe probe = Probe((*server)->port(), false, false);
  EXPECT_THAT(
      Message(ProbeReadiness(probe)),
      EndsWith(absl::StrCat("GET ", Url((*server)->port(), "/health"), ": HTTP 404: not found")));
  probe.set_health_path("/ready");
  EXPECT_TRUE(ProbeReadiness(probe).ok());
}

TEST(ReadinessTest, FailedHealthWithEmptyBodyNamesTheStatus) {
  auto server = CannedServer::Start({{"GET /health", {503, ""}}});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::Status status = ProbeReadiness(Probe((*server)->port(), true, true));
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ(status.message(),
            absl::StrCat("GET ", Url((*server)->port(), "/health"), ": HTTP 503"));
}

TEST(ReadinessTest, CompletionErrorQuotesTheFirst200BytesOfTheBody) {
  std::map<std::string, Reply> replies = HealthyEngine();
  std::string body = std::string(200, 'e') + "TAIL";
  replies["POST /v1/completions"] = {500, body};
  auto server = CannedServer::Start(replies);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::Status status = ProbeReadiness(Probe((*server)->port(), true, true));
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ(status.message(), absl::StrCat("POST ", Url((*server)->port(), "/v1/completions"),
                                           ": HTTP 500: ", std::string(200, 'e')));
}

TEST(ReadinessTest, DeadGenerationIsCaughtOnlyByTheCompletion) {
  std::map<std::string, Reply> replies = HealthyEngine();
  replies["POST /v1/completions"] = {500, "{\"error\":\"EngineDeadError\"}\n"};
  auto server = CannedServer::Start(replies);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(ProbeReadiness(Probe((*server)->port(), true, false)).ok());
  EXPECT_THAT(Message(ProbeReadiness(Probe((*server)->port(), true, true))),
              HasSubstr("HTTP 500: {\"error\":\"EngineDeadError\"} "));
}

TEST(ReadinessTest, EmptyModelListIsNotReady) {
  std::map<std::string, Reply> replies = HealthyEngine();
  replies["GET /v1/models"] = {200, R"({"object":"list","data":[]})"};
  auto server = CannedServer::Start(replies);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::Status status = ProbeReadiness(Probe((*server)->port(), true, false));
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ(status.message(),
            absl::StrCat("GET ", Url((*server)->port(), "/v1/models"), ": no model listed"));
}

TEST(ReadinessTest, MalformedAnswersAreQuoted) {
  std::map<std::string, Reply> replies = HealthyEngine();
  replies["GET /v1/models"] = {200, "<html>\xff"};
  auto server = CannedServer::Start(replies);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT(Message(ProbeReadiness(Probe((*server)->port(), true, false))),
              EndsWith("got: <html>\\xff"));

  replies = HealthyEngine();
  replies["POST /v1/completions"] = {200, R"({"object":"error"})"};
  auto second = CannedServer::Start(replies);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(Message(ProbeReadiness(Probe((*second)->port(), true, true))),
              HasSubstr("expected a completion with \"choices\""));
}

TEST(ReadinessTest, RefusedConnectionIsUnavailable) {
  auto closed = BoundSocket::Bind("127.0.0.1", 0);
  ASSERT_TRUE(closed.ok()) << closed.status();
  absl::Status status = ProbeReadiness(Probe(closed->port(), true, true));
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(Message(status), HasSubstr(absl::StrCat("GET ", Url(closed->port(), "/health"),
                                                      ": Couldn't connect to server")));
}

TEST(ReadinessTest, SilentServerTimesOutWithinTheRequestTimeout) {
  // Listening but never accepting: the kernel completes the handshake, nobody answers.
  auto silent = BoundSocket::Bind("127.0.0.1", 1);
  ASSERT_TRUE(silent.ok()) << silent.status();
  v1::ReadinessProbe probe = Probe(silent->port(), true, true);
  probe.mutable_request_timeout()->set_nanos(300'000'000);
  absl::Time start = absl::Now();
  absl::Status status = ProbeReadiness(probe);
  absl::Duration elapsed = absl::Now() - start;
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(Message(status), HasSubstr("Timeout was reached"));
  EXPECT_GE(elapsed, absl::Milliseconds(250));
  EXPECT_LT(elapsed, absl::Milliseconds(1500));
}

TEST(ReadinessTest, ProxyInTheEnvironmentIsIgnored) {
  auto server = CannedServer::Start(HealthyEngine());
  ASSERT_TRUE(server.ok()) << server.status();
  auto closed = BoundSocket::Bind("127.0.0.1", 0);
  ASSERT_TRUE(closed.ok()) << closed.status();
  std::string proxy = Url(closed->port(), "");
  const char* kProxyVariables[] = {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"};
  // no_proxy naming another host makes sure loopback is not exempted by the environment.
  const char* kNoProxyVariables[] = {"no_proxy", "NO_PROXY"};
  for (const char* name : kProxyVariables) ::setenv(name, proxy.c_str(), 1);
  for (const char* name : kNoProxyVariables) ::setenv(name, "example.invalid", 1);
  absl::Status status = ProbeReadiness(Probe((*server)->port(), true, true));
  for (const char* name : kProxyVariables) ::unsetenv(name);
  for (const char* name : kNoProxyVariables) ::unsetenv(name);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ReadinessTest, Ipv6HostIsBracketed) {
  auto server = CannedServer::Start(HealthyEngine(), "::1");
  if (!server.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << server.status();
  EXPECT_TRUE(ProbeReadiness(Probe((*server)->port(), true, true, "::1")).ok());
  auto closed = BoundSocket::Bind("::1", 0);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_THAT(Message(ProbeReadiness(Probe(closed->port(), false, false, "::1"))),
              HasSubstr(absl::StrCat("GET http://[::1]:", closed->port(), "/health: ")));
}

TEST(ReadinessTest, NoPortMeansNothingToProbe) {
  EXPECT_TRUE(ProbeReadiness(Probe(0, true, true)).ok());
}

}  // namespace
}  // namespace fleet::agent
