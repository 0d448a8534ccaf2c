// SparkFleet's own HTTP requests to engine endpoints (the agent's readiness probe, `fleet up`'s
// request to the demo group), over libcurl: never through a proxy (an http_proxy in the
// environment must not carry requests to a local engine), no signals (callers are
// multi-threaded), response bodies capped at 1 MiB, and errors that name the request.
//
// Example:
//   ASSIGN_OR_RETURN(HttpClient http, HttpClient::Create());
//   ASSIGN_OR_RETURN(std::string body,
//                    http.Expect200("GET " + url, url, /*post_body=*/nullptr, 2000));
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

class HttpClient {
 public:
  // One client (a libcurl easy handle, reused so requests can share a connection).
  // ResourceExhausted when libcurl cannot make a handle.
  static absl::StatusOr<HttpClient> Create();

  // GET `url` when `post_body` is null, else POST it as application/json, each bounded by
  // `timeout_ms`. HTTP 200: the body. Unavailable otherwise, prefixed by `what` ("GET
  // http://..."): the transport error, or "HTTP 500: <the body's first 200 bytes>".
  absl::StatusOr<std::string> Expect200(absl::string_view what, const std::string& url,
                                        const std::string* post_body, int64_t timeout_ms);

 private:
  struct CurlDeleter {
    void operator()(void* curl) const;
  };
  explicit HttpClient(void* curl) : curl_(curl) {}

  std::unique_ptr<void, CurlDeleter> curl_;
};

// The first 200 bytes of `body` on one line of printable ASCII (other bytes as \xNN), for error
// messages that end up in one-line logs and in proto strings, which must be valid UTF-8.
std::string QuoteBody(absl::string_view body);

}  // namespace fleet
