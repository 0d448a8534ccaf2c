// The smallest HTTP/1.1 server that serves the echo engine: blocking accept, one thread per
// connection (at most kMaxConnections at once), one request per connection, bodies with
// Content-Length only, "Connection: close" on every answer.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fleet::echo {

inline constexpr int kMaxConnections = 64;

struct HttpRequest {
  std::string method;  // "GET"
  std::string path;    // "/v1/models", without the query string
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;  // sent as application/json
};

// An OpenAI-shaped error: {"error":{"message":...,"type":"invalid_request_error","code":400}}.
HttpResponse JsonError(int status, absl::string_view message);

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// Serves `listener_fd` until accept() fails for good; returns that error. `handler` is called
// from many threads at once.
absl::Status ServeHttp(int listener_fd, const HttpHandler& handler);

}  // namespace fleet::echo
