// The smallest HTTP/1.1 server that serves SparkFleet's engines (fleet-engine and the echo
// engine): blocking accept, one thread per connection (at most kMaxConnections at once), one
// request per connection, bodies with Content-Length only, "Connection: close" on every answer.
// An answer is a whole body, or a stream (server-sent events) written as it is produced.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fleet::http {

inline constexpr int kMaxConnections = 64;

struct HttpRequest {
  std::string method;  // "GET"
  std::string path;    // "/v1/models", without the query string
  std::string body;
};

// Writes one piece of a streamed answer; false once the client has gone (stop producing).
using StreamWriter = std::function<bool(absl::string_view)>;

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  // When set, `body` is ignored: the head goes out without Content-Length and `stream` writes
  // the body piece by piece (e.g. "data: {...}\n\n" events with content_type
  // "text/event-stream"); the connection closes when it returns.
  std::function<void(const StreamWriter&)> stream;
};

// An OpenAI-shaped error: {"error":{"message":...,"type":"invalid_request_error","code":400}}.
HttpResponse JsonError(int status, absl::string_view message);

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// Serves `listener_fd` until accept() fails for good; returns that error. `handler` is called
// from many threads at once.
absl::Status ServeHttp(int listener_fd, const HttpHandler& handler);

}  // namespace fleet::http
