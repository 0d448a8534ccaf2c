// SparkFleet engines' HTTP/1.1 server on Boost.Beast (see server.h).
#include "common/http/server.h"

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "nlohmann/json.hpp"

namespace fleet::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr char kComponent[] = "http";
// After a 413 the client may still be sending its body; reading (and dropping) it before the
// close keeps the kernel from answering the unread bytes with a reset that would destroy the
// 413 before the client reads it. Bounded in bytes and by the request timeout.
constexpr size_t kMaxDiscardBytes = size_t{64} << 20;

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}

void NameThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions options, HttpHandler handler)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        inline_paths_(options_.inline_paths.begin(), options_.inline_paths.end()),
        acceptor_(asio::make_strand(io_)),
        accept_retry_(acceptor_.get_executor()) {}

  absl::Status Listen();
  void Run();
  void Stop();
  int Drain(absl::Time deadline);
  void StopAccepting();
  int port() const { return port_; }
  int running_handlers() const {
    absl::MutexLock lock(&mu_);
    return running_;
  }

  const HttpServerOptions& options() const { return options_; }
  const HttpHandler& handler() const { return handler_; }
  bool IsInline(const std::string& path) const { return inline_paths_.contains(path); }
  bool draining() const { return draining_.load(); }
  bool stopped() const { return stopped_.load(); }

  // Takes a worker for one handler; false when all max_handlers are taken.
  bool TryTakeWorker() {
    absl::MutexLock lock(&mu_);
    if (running_ >= options_.max_handlers) return false;
    ++running_;
    return true;
  }
  void ReleaseWorker() {
    absl::MutexLock lock(&mu_);
    --running_;
  }
  void RunOnWorker(std::function<void()> work) { asio::post(workers_, std::move(work)); }

 private:
  void Accept();

  const HttpServerOptions options_;
  const HttpHandler handler_;
  const absl::flat_hash_set<std::string> inline_paths_;
  asio::io_context io_;
  asio::io_context workers_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_retry_;
  int port_ = 0;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> io_work_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> worker_work_;
  std::vector<std::thread> io_threads_;
  std::vector<std::thread> worker_threads_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopped_{false};
  bool accept_failing_ = false;  // on the acceptor's strand: log once per streak of errors

  mutable absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

namespace {

// One connection: reads requests one after another (keep-alive), answers each, and closes on
// error, timeout, "Connection: close" or drain. Every socket operation runs on its strand; a
// handler on a worker thread writes through PostAndWait, which hands the write to the strand and
// waits for it, so the socket is never touched by two threads at once.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl* server)
      : stream_(std::move(socket)), server_(server) {}

  void Start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadHead(); });
  }

 private:
  void ReadHead() {
    parser_.emplace();
    parser_->body_limit(server_->options().max_body_bytes);
    parser_->header_limit(static_cast<uint32_t>(server_->options().max_head_bytes));
    stream_.expires_after(ToChrono(server_->options().idle_timeout));
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnHead(ec); });
  }

  void OnHead(error_code ec) {
    if (ec == bhttp::error::body_limit) return RejectBody();
    if (ec == bhttp::error::header_limit) {
      keep_alive_ = false;
      return WriteAsync(JsonError(431, absl::StrCat("request head larger than ",
                                                    server_->options().max_head_bytes, " bytes")));
    }
    if (ec) return Close();
    stream_.expires_after(ToChrono(server_->options().request_timeout));
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(error_code ec) {
    if (ec == bhttp::error::body_limit) return RejectBody();
    if (ec) return Close();
    bhttp::request<bhttp::string_body> message = parser_->release();
    keep_alive_ = message.keep_alive() && server_->options().keep_alive;
    beast::string_view target = message.target();
    HttpRequest request{
        .method = std::string(message.method_string()),
        .path = std::string(target.substr(0, std::min(target.find('?'), target.size()))),
        .body = std::move(message.body())};
    if (server_->draining()) {
      keep_alive_ = false;
      return WriteAsync(JsonError(503, "the server is shutting down; retry on another replica"));
    }
    if (server_->IsInline(request.path)) return WriteAsync(server_->handler()(request));
    if (!server_->TryTakeWorker()) {
      return WriteAsync(TooManyRequests(
          absl::StrCat("all ", server_->options().max_handlers,
                       " request handlers are busy; retry after the Retry-After seconds"),
          server_->options().retry_after_s));
    }
    server_->RunOnWorker([self = shared_from_this(), request = std::move(request)] {
      self->HandleOnWorker(request);
      self->server_->ReleaseWorker();
    });
  }

  // A body over the limit: 413, then the rest of the body is read and dropped before closing.
  void RejectBody() {
    keep_alive_ = false;
    discard_after_write_ = true;
    WriteAsync(
        JsonError(413, absl::StrCat("request body larger than ", server_->options().max_body_bytes,
                                    " bytes: send a shorter prompt")));
  }

  static bhttp::response<bhttp::string_body> ToMessage(HttpResponse response, bool keep_alive) {
    bhttp::response<bhttp::string_body> message(static_cast<bhttp::status>(response.status), 11);
    message.set(bhttp::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) message.set(name, value);
    message.keep_alive(keep_alive);
    message.body() = std::move(response.body);
    message.prepare_payload();
    return message;
  }

  // On the strand: writes a whole answer, then reads the next request or closes.
  void WriteAsync(HttpResponse response) {
    if (response.stream) {
      // Streams are for worker handlers; an inline route never streams.
      response = JsonError(500, "an inline route answered with a stream");
    }
    auto message = std::make_shared<bhttp::response<bhttp::string_body>>(
        ToMessage(std::move(response), keep_alive_ && !server_->draining()));
    stream_.expires_after(ToChrono(server_->options().write_timeout));
    bhttp::async_write(stream_, *message,
                       [self = shared_from_this(), message](error_code ec, size_t) {
                         self->AfterAnswer(ec, message->keep_alive());
                       });
  }

  // On the strand, once an answer is out.
  void AfterAnswer(error_code ec, bool keep_alive) {
    if (ec) return Close();
    if (discard_after_write_) return DiscardThenClose();
    if (!keep_alive) return Close();
    ReadHead();
  }

  void DiscardThenClose() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(ToChrono(server_->options().request_timeout));
    discard_ = std::make_shared<std::vector<char>>(16 * 1024);
    ReadAndDrop();
  }

  void ReadAndDrop() {
    stream_.async_read_some(asio::buffer(*discard_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              self->discarded_ += n;
                              if (ec || self->discarded_ > kMaxDiscardBytes) return self->Close();
                              self->ReadAndDrop();
                            });
  }

  void Close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  // From a worker thread: runs `start(done)` on the strand and waits until it calls done(ec).
  // False when the operation failed or the server stopped (a stopped io_context never calls
  // done, so the wait checks for that).
  template <typename Start>
  bool PostAndWait(Start start) {
    auto result = std::make_shared<std::promise<error_code>>();
    std::future<error_code> future = result->get_future();
    asio::post(stream_.get_executor(), [this, start, result]() mutable {
      stream_.expires_after(ToChrono(server_->options().write_timeout));
      start([result](error_code ec) { result->set_value(ec); });
    });
    while (future.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
      if (server_->stopped()) return false;
    }
    return !future.get();
  }

  void HandleOnWorker(const HttpRequest& request) {
    HttpResponse response = server_->handler()(request);
    const bool keep_alive = keep_alive_;
    bool ok;
    if (!response.stream) {
      auto message = std::make_shared<bhttp::response<bhttp::string_body>>(
          ToMessage(std::move(response), keep_alive && !server_->draining()));
      ok = PostAndWait([this, message](auto done) {
        bhttp::async_write(stream_, *message, [done, message](error_code ec, size_t) { done(ec); });
      });
      ok = ok && message->keep_alive();
    } else {
      ok = Stream(response, keep_alive);
    }
    asio::post(stream_.get_executor(), [self = shared_from_this(), ok] {
      if (!ok || self->server_->draining()) return self->Close();
      self->ReadHead();
    });
  }

  // Chunked: the head, one chunk per piece as it is produced, the last chunk.
  bool Stream(const HttpResponse& response, bool keep_alive) {
    bhttp::response<bhttp::empty_body> head(static_cast<bhttp::status>(response.status), 11);
    head.set(bhttp::field::content_type, response.content_type);
    head.set(bhttp::field::cache_control, "no-cache");
    for (const auto& [name, value] : response.headers) head.set(name, value);
    head.keep_alive(keep_alive);
    head.chunked(true);
    bhttp::response_serializer<bhttp::empty_body> serializer(head);
    bool open = PostAndWait([this, &serializer](auto done) {
      bhttp::async_write_header(stream_, serializer, [done](error_code ec, size_t) { done(ec); });
    });
    if (!open) return false;
    response.stream([this, &open](absl::string_view piece) {
      if (!open) return false;
      if (piece.empty()) return true;  // an empty chunk would end the stream
      open = PostAndWait([this, piece](auto done) {
        asio::async_write(stream_, bhttp::make_chunk(asio::buffer(piece.data(), piece.size())),
                          [done](error_code ec, size_t) { done(ec); });
      });
      return open;
    });
    if (!open) return false;
    return PostAndWait([this](auto done) {
      asio::async_write(stream_, bhttp::make_chunk_last(),
                        [done](error_code ec, size_t) { done(ec); });
    });
  }

  beast::tcp_stream stream_;
  HttpServer::Impl* const server_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool keep_alive_ = true;
  bool discard_after_write_ = false;
  std::shared_ptr<std::vector<char>> discard_;
  size_t discarded_ = 0;
};

}  // namespace

absl::Status HttpServer::Impl::Listen() {
  if (options_.io_threads < 1 || options_.max_handlers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the HTTP server needs at least 1 I/O thread and 1 handler, not io_threads=",
                     options_.io_threads, " max_handlers=", options_.max_handlers));
  }
  error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints =
      resolver.resolve(options_.host, std::to_string(options_.port), tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("resolve ", options_.host, ":", options_.port,
                                                   ": ", ec.message(),
                                                   "; give an address or a resolvable name"));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  const std::string what = absl::StrCat("listen on ", options_.host, ":", options_.port);
  if (acceptor_.open(endpoint.protocol(), ec); ec) {
    return absl::UnavailableError(absl::StrCat(what, ": socket: ", ec.message()));
  }
  // A restarted rank listens again while old connections linger in TIME_WAIT.
  if (acceptor_.set_option(asio::socket_base::reuse_address(true), ec); ec) {
    return absl::UnavailableError(absl::StrCat(what, ": SO_REUSEADDR: ", ec.message()));
  }
  if (acceptor_.bind(endpoint, ec); ec) {
    return absl::UnavailableError(
        absl::StrCat(what, ": ", ec.message(), "; pick another port or stop what holds it"));
  }
  // The kernel's maximum: a burst of connections waits here only for the next accept.
  if (acceptor_.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return absl::UnavailableError(absl::StrCat(what, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  return absl::OkStatus();
}

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // EMFILE and the like: existing connections keep being served; accepting resumes when
      // descriptors free up.
      if (!accept_failing_) {
        Log(LogLevel::kWarning, kComponent, "accept failed; retrying every 100 ms",
            {{"error", ec.message()}});
      }
      accept_failing_ = true;
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](error_code wait_ec) {
        if (!wait_ec) Accept();
      });
      return;
    }
    accept_failing_ = false;
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);  // each SSE event leaves at once
    std::make_shared<Session>(std::move(socket), this)->Start();
    Accept();
  });
}

void HttpServer::Impl::Run() {
  io_work_.emplace(io_.get_executor());
  worker_work_.emplace(workers_.get_executor());
  Accept();
  for (int i = 0; i < options_.io_threads; ++i) {
    io_threads_.emplace_back([this] {
      NameThread("http-io");
      io_.run();
    });
  }
  for (int i = 0; i < options_.max_handlers; ++i) {
    worker_threads_.emplace_back([this] {
      NameThread("http-worker");
      workers_.run();
    });
  }
}

void HttpServer::Impl::StopAccepting() {
  if (draining_.exchange(true)) return;
  std::promise<void> closed;
  asio::post(acceptor_.get_executor(), [this, &closed] {
    error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
    closed.set_value();
  });
  closed.get_future().wait();
}

int HttpServer::Impl::Drain(absl::Time deadline) {
  StopAccepting();
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  return running_;
}

void HttpServer::Impl::Stop() {
  stopped_ = true;
  draining_ = true;
  io_work_.reset();
  io_.stop();
  for (std::thread& thread : io_threads_) thread.join();
  // Handlers still running return on their own (their writes fail now); queued ones never start.
  worker_work_.reset();
  workers_.stop();
  for (std::thread& thread : worker_threads_) thread.join();
}

HttpResponse JsonError(int status, absl::string_view message) {
  nlohmann::json error = {
      {"error", {{"message", message}, {"type", "invalid_request_error"}, {"code", status}}}};
  return {.status = status, .body = error.dump()};
}

HttpResponse TooManyRequests(absl::string_view message, int retry_after_s) {
  HttpResponse response = JsonError(429, message);
  response.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
  return response;
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { impl_->Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              HttpHandler handler) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler));
  if (absl::Status listening = impl->Listen(); !listening.ok()) return listening;
  impl->Run();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port(); }
int HttpServer::Drain(absl::Time deadline) { return impl_->Drain(deadline); }
void HttpServer::StopAccepting() { impl_->StopAccepting(); }
int HttpServer::running_handlers() const { return impl_->running_handlers(); }

absl::StatusOr<uint64_t> RaiseOpenFileLimit() {
  rlimit limit = {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("setrlimit(RLIMIT_NOFILE) to the hard limit ", limit.rlim_max, ": ",
                       std::strerror(errno), "; raise it with `ulimit -n` before starting"));
    }
  }
  return static_cast<uint64_t>(limit.rlim_cur);
}

}  // namespace fleet::http
