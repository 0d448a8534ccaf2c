// The engines' HTTP server over real loopback sockets (127.0.0.1, port 0): keep-alive, inline
// routes answered while every worker is busy, 429 with Retry-After, 413 for a large body read to
// the end, streams flushed piece by piece, idle timeout, and drain. Every wait is on an event
// (a notification or a socket read) with a bound, never a fixed sleep.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/http/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::http {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;

// Every blocking wait in these tests gives up after this.
constexpr absl::Duration kBound = absl::Seconds(10);

class Client {
 public:
  explicit Client(int port) : socket_(io_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    // A read that never completes fails the test instead of hanging it.
    timeval timeout = absl::ToTimeval(kBound);
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }

  void Send(bhttp::verb verb, const std::string& target, const std::string& body = "") {
    bhttp::request<bhttp::string_body> request(verb, target, 11);
    request.set(bhttp::field::host, "127.0.0.1");
    request.body() = body;
    request.prepare_payload();
    bhttp::write(socket_, request);
  }

  bhttp::response<bhttp::string_body> Read() {
    bhttp::response<bhttp::string_body> response;
    bhttp::read(socket_, buffer_, response);
    return response;
  }

  bhttp::response<bhttp::string_body> Get(const std::string& target) {
    Send(bhttp::verb::get, target);
    return Read();
  }

  // True when the server closed the connection (the next read ends without data).
  bool ClosedByServer() {
    boost::system::error_code error;
    char byte;
    socket_.read_some(asio::buffer(&byte, 1), error);
    return error == asio::error::eof || error == asio::error::connection_reset;
  }

  tcp::socket& socket() { return socket_; }
  boost::beast::flat_buffer& buffer() { return buffer_; }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
};

std::unique_ptr<HttpServer> StartOrDie(HttpServerOptions options, HttpHandler handler) {
  options.host = "127.0.0.1";
  options.port = 0;
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start(std::move(options), std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

HttpResponse Echo(const HttpRequest& request) {
  return {.body = request.method + " " + request.path + " " + request.body};
}

TEST(HttpServerTest, KeepsTheConnectionForTheNextRequest) {
  auto server = StartOrDie({}, Echo);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  EXPECT_EQ(client.Get("/a?x=1").body(), "GET /a ");
  client.Send(bhttp::verb::post, "/b", "payload");
  auto second = client.Read();
  EXPECT_EQ(second.result_int(), 200);
  EXPECT_EQ(second.body(), "POST /b payload");
  EXPECT_TRUE(second.keep_alive());
}

TEST(HttpServerTest, WithoutKeepAliveClosesAfterEachAnswer) {
  auto server = StartOrDie({.keep_alive = false}, Echo);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  auto answer = client.Get("/x");
  EXPECT_EQ(answer.body(), "GET /x ");
  EXPECT_FALSE(answer.keep_alive());
  EXPECT_TRUE(client.ClosedByServer());
}

TEST(HttpServerTest, InlineRoutesAnswerWhileEveryWorkerIsBusyAndTheNextGets429) {
  absl::Notification release;
  absl::Notification entered;
  auto server = StartOrDie({.max_handlers = 1, .inline_paths = {"/health"}, .retry_after_s = 3},
                           [&](const HttpRequest& request) -> HttpResponse {
                             if (request.path == "/health") return {.body = "ok"};
                             entered.Notify();
                             release.WaitForNotificationWithTimeout(kBound);
                             return {.body = "done"};
                           });
  ASSERT_NE(server, nullptr);
  Client blocked(server->port());
  blocked.Send(bhttp::verb::post, "/v1/completions", "{}");
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(kBound));
  EXPECT_EQ(server->running_handlers(), 1);

  Client probe(server->port());
  EXPECT_EQ(probe.Get("/health").body(), "ok");
  Client refused(server->port());
  auto too_many = refused.Get("/v1/completions");
  EXPECT_EQ(too_many.result_int(), 429);
  EXPECT_EQ(too_many[bhttp::field::retry_after], "3");
  EXPECT_THAT(too_many.body(), HasSubstr("\"code\":429"));

  release.Notify();
  EXPECT_EQ(blocked.Read().body(), "done");
}

TEST(HttpServerTest, LargeBodyGets413NotAReset) {
  auto server = StartOrDie({.max_body_bytes = 1024}, Echo);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  // Larger than the socket buffers, so the server must read the rest before it closes.
  const std::string body(4 << 20, 'a');
  std::thread sender([&] {
    bhttp::request<bhttp::string_body> request(bhttp::verb::post, "/v1/completions", 11);
    request.body() = body;
    request.prepare_payload();
    boost::system::error_code error;
    bhttp::write(client.socket(), request, error);
    EXPECT_FALSE(error) << error.message();
  });
  bhttp::response<bhttp::string_body> response;
  boost::system::error_code error;
  bhttp::read(client.socket(), client.buffer(), response, error);
  sender.join();
  ASSERT_FALSE(error) << error.message();
  EXPECT_EQ(response.result_int(), 413);
  EXPECT_THAT(response.body(), HasSubstr("larger than 1024 bytes"));
  EXPECT_FALSE(response.keep_alive());
}

TEST(HttpServerTest, StreamsEachPieceAsItIsWritten) {
  absl::Notification first_read;
  auto server = StartOrDie({}, [&](const HttpRequest&) {
    HttpResponse response{.content_type = "text/event-stream"};
    response.stream = [&](const StreamWriter& write) {
      ASSERT_TRUE(write("data: 1\n\n"));
      // The second piece waits until the client has read the first: it must not be buffered.
      ASSERT_TRUE(first_read.WaitForNotificationWithTimeout(kBound));
      ASSERT_TRUE(write("data: 2\n\n"));
    };
    return response;
  });
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  client.Send(bhttp::verb::post, "/stream", "{}");
  bhttp::response_parser<bhttp::string_body> parser;
  bhttp::read_header(client.socket(), client.buffer(), parser);
  EXPECT_TRUE(parser.get().chunked());
  while (parser.get().body().find("data: 1") == std::string::npos) {
    bhttp::read_some(client.socket(), client.buffer(), parser);
  }
  first_read.Notify();
  bhttp::read(client.socket(), client.buffer(), parser);
  EXPECT_EQ(parser.get().body(), "data: 1\n\ndata: 2\n\n");
  // Keep-alive after a stream: the same connection serves the next request.
  EXPECT_EQ(client.Get("/stream").body(), "data: 1\n\ndata: 2\n\n");
}

TEST(HttpServerTest, ClosesIdleConnections) {
  auto server = StartOrDie({.idle_timeout = absl::Milliseconds(100)}, Echo);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  EXPECT_EQ(client.Get("/x").result_int(), 200);
  EXPECT_TRUE(client.ClosedByServer());
}

TEST(HttpServerTest, DrainLetsARunningStreamFinishAndRefusesNewRequests) {
  absl::Notification streaming;
  absl::Notification finish;
  auto server = StartOrDie({}, [&](const HttpRequest& request) -> HttpResponse {
    if (request.path != "/stream") return {.body = "quick"};
    HttpResponse response{.content_type = "text/event-stream"};
    response.stream = [&](const StreamWriter& write) {
      write("data: a\n\n");
      streaming.Notify();
      finish.WaitForNotificationWithTimeout(kBound);
      write("data: b\n\n");
    };
    return response;
  });
  ASSERT_NE(server, nullptr);
  Client idle(server->port());
  EXPECT_EQ(idle.Get("/x").body(), "quick");
  Client stream(server->port());
  stream.Send(bhttp::verb::get, "/stream");
  ASSERT_TRUE(streaming.WaitForNotificationWithTimeout(kBound));

  server->StopAccepting();
  int left = -1;
  std::thread drain([&] { left = server->Drain(absl::Now() + kBound); });
  // A request on an open connection during the drain is refused and the connection closed.
  auto refused = idle.Get("/x");
  EXPECT_EQ(refused.result_int(), 503);
  EXPECT_FALSE(refused.keep_alive());
  finish.Notify();
  drain.join();
  EXPECT_EQ(left, 0);
  EXPECT_EQ(stream.Read().body(), "data: a\n\ndata: b\n\n");
  // No longer accepting.
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code error;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server->port()), error);
  EXPECT_EQ(error, asio::error::connection_refused);
}

TEST(HttpServerTest, DrainGivesUpAtTheDeadline) {
  absl::Notification entered;
  absl::Notification release;
  auto server = StartOrDie({}, [&](const HttpRequest&) -> HttpResponse {
    entered.Notify();
    release.WaitForNotificationWithTimeout(kBound);
    return {};
  });
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  client.Send(bhttp::verb::get, "/slow");
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(kBound));
  EXPECT_EQ(server->Drain(absl::Now() + absl::Milliseconds(20)), 1);
  release.Notify();
}

TEST(HttpServerTest, RefusesOptionsWithoutThreads) {
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start({.host = "127.0.0.1", .port = 0, .max_handlers = 0}, Echo);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("max_handlers=0"));
}

}  // namespace
}  // namespace fleet::http
