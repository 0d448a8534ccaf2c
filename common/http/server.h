// The HTTP/1.1 server of SparkFleet's engines (fleet-engine and the tests' echo engine), on
// Boost.Beast and Asio: a few I/O threads run every connection asynchronously (keep-alive,
// idle and request timeouts, a body limit answered with 413), routes that never block are
// answered right on those threads, and handlers that block (a completion waits on the
// scheduler) run on a bounded pool of worker threads. So /health and /metrics answer even while
// every worker waits on a long stream, and a request beyond the pool gets 429 with Retry-After
// at once instead of waiting unseen in the kernel's backlog.
//
// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> server,
//                    HttpServer::Start({.host = "0.0.0.0", .port = 8000, .max_handlers = 300,
//                                       .inline_paths = {"/health", "/metrics"}},
//                                      [&](const HttpRequest& r) { return api.Handle(r); }));
//   ...                                   // serves until
//   server->Drain(absl::Now() + absl::Seconds(30));  // SIGTERM: stop accepting, let streams end
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::http {

struct HttpRequest {
  std::string method;  // "GET"
  std::string path;    // "/v1/models", without the query string
  std::string body;
};

// Writes one piece of a streamed answer and returns once it is on the wire (each server-sent
// event reaches the client as it is produced); false once the client has gone or the server
// stops (stop producing).
using StreamWriter = std::function<bool(absl::string_view)>;

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  // Extra header fields, e.g. {"Retry-After", "1"}.
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, `body` is ignored: the head goes out with chunked transfer encoding and `stream`
  // writes the body piece by piece (e.g. "data: {...}\n\n" events with content_type
  // "text/event-stream"); the connection stays open for the next request when it returns.
  std::function<void(const StreamWriter&)> stream;
};

// An OpenAI-shaped error: {"error":{"message":...,"type":"invalid_request_error","code":400}}.
HttpResponse JsonError(int status, absl::string_view message);

// 429 with "Retry-After: <seconds>", the answer when the engine's queue is full.
HttpResponse TooManyRequests(absl::string_view message, int retry_after_s);

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  std::string host = "0.0.0.0";  // "0.0.0.0", "::", an address or a name
  int port = 0;                  // 0: any free port (see HttpServer::port)
  // Threads that run every connection's reads and writes and the inline routes. Two keep 1,000
  // idle connections and a few hundred streams far from saturating a core.
  int io_threads = 2;
  // Handlers that may run (and block) at once on worker threads; one more gets 429 at once.
  // Size it to what the handler itself can queue (fleet-engine: running + waiting sequences).
  int max_handlers = 64;
  // Paths whose handler never blocks: answered on the I/O threads, so they are answered even
  // when every worker is busy (health checks, metrics scrapes).
  std::vector<std::string> inline_paths;
  size_t max_body_bytes = size_t{1} << 20;   // larger bodies get 413
  size_t max_head_bytes = size_t{16} << 10;  // larger heads get 431
  // A connection with no new request head for this long is closed (keep-alive's idle limit;
  // also bounds a client that sends its head slowly).
  absl::Duration idle_timeout = absl::Seconds(60);
  // The body must arrive this soon after the head, or the connection is closed.
  absl::Duration request_timeout = absl::Seconds(30);
  // One write (an answer, or one streamed piece) to a client that stopped reading.
  absl::Duration write_timeout = absl::Seconds(30);
  int retry_after_s = 1;  // Retry-After of the server's own 429
  // False: every answer says "Connection: close" and the connection ends after it, for peers
  // that read an answer until the server closes.
  bool keep_alive = true;
};

class HttpServer {
 public:
  // Listens on `options.host`:`options.port` and serves with `handler`, called from many
  // threads at once. InvalidArgument for a name that does not resolve or bad options;
  // Unavailable when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           HttpHandler handler);

  // Stop(): closes every connection; waits for running handlers to return.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the chosen one when options.port was 0).
  int port() const;

  // Graceful end (SIGTERM): stops accepting, answers 503 "shutting down" with
  // "Connection: close" to any new request on open connections, and waits until every handler
  // on the workers has returned (running streams finish) or `deadline` passes. Returns how many
  // handlers still run.
  int Drain(absl::Time deadline);
  // Drain's first half: returns once the listener is closed and new requests are refused.
  void StopAccepting();

  // Handlers running on the workers now (streams included).
  int running_handlers() const;

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Raises this process's soft limit of open files to its hard limit, as a server of many
// connections needs (Debian's soft default is 1,024); returns the new soft limit.
absl::StatusOr<uint64_t> RaiseOpenFileLimit();

}  // namespace fleet::http
