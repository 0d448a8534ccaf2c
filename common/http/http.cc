// SparkFleet engines' HTTP/1.1 server (see http.h).
#include "common/http/http.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <semaphore>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "common/http/net.h"
#include "nlohmann/json.hpp"

namespace fleet::http {
namespace {

constexpr size_t kMaxHeadBytes = 16 * 1024;
constexpr size_t kMaxBodyBytes = 1 << 20;
// A client that stops sending mid-request releases its connection slot after this.
constexpr timeval kReceiveTimeout = {.tv_sec = 10, .tv_usec = 0};

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

// Reads one request; an error answer when it is malformed, nothing when the peer went away.
std::pair<std::optional<HttpRequest>, std::optional<HttpResponse>> ReadRequest(int fd) {
  std::string data;
  char buffer[8192];
  size_t head_end;
  while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
    if (data.size() > kMaxHeadBytes)
      return {std::nullopt, JsonError(400, "request head too large")};
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {};
    data.append(buffer, n);
  }
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(data).substr(0, head_end), "\r\n");
  std::vector<absl::string_view> words = absl::StrSplit(lines[0], ' ');
  if (words.size() != 3 || !absl::StartsWith(words[2], "HTTP/1.")) {
    return {std::nullopt, JsonError(400, "malformed request line")};
  }
  HttpRequest request{.method = std::string(words[0]),
                      .path = std::string(words[1].substr(0, words[1].find('?')))};
  size_t content_length = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> header =
        absl::StrSplit(lines[i], absl::MaxSplits(':', 1));
    absl::string_view value = absl::StripAsciiWhitespace(header.second);
    if (absl::EqualsIgnoreCase(header.first, "Transfer-Encoding")) {
      return {std::nullopt, JsonError(411, "send the body with Content-Length, not chunked")};
    }
    if (absl::EqualsIgnoreCase(header.first, "Content-Length") &&
        !absl::SimpleAtoi(value, &content_length)) {
      return {std::nullopt, JsonError(400, "malformed Content-Length")};
    }
  }
  if (content_length > kMaxBodyBytes) {
    return {std::nullopt,
            JsonError(413, absl::StrCat("body larger than ", kMaxBodyBytes, " bytes"))};
  }
  request.body = data.substr(head_end + 4);
  while (request.body.size() < content_length) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {};
    request.body.append(buffer, n);
  }
  request.body.resize(content_length);
  return {std::move(request), std::nullopt};
}

void ServeConnection(UniqueFd fd, const HttpHandler& handler) {
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &kReceiveTimeout, sizeof kReceiveTimeout);
  auto [request, error] = ReadRequest(fd.get());
  if (!request.has_value() && !error.has_value()) return;
  HttpResponse response = request.has_value() ? handler(*request) : *error;
  std::string head = absl::StrCat("HTTP/1.1 ", response.status, " ", Reason(response.status),
                                  "\r\nContent-Type: ", response.content_type);
  if (response.stream) {
    absl::StrAppend(&head, "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n");
    if (!SendAll(fd.get(), head).ok()) return;
    response.stream([&fd](absl::string_view piece) { return SendAll(fd.get(), piece).ok(); });
    return;
  }
  absl::StrAppend(&head, "\r\nContent-Length: ", response.body.size(),
                  "\r\nConnection: close\r\n\r\n", response.body);
  // The client may have gone; there is no one left to tell.
  (void)SendAll(fd.get(), head);
}

}  // namespace

HttpResponse JsonError(int status, absl::string_view message) {
  nlohmann::json error = {
      {"error", {{"message", message}, {"type", "invalid_request_error"}, {"code", status}}}};
  return {.status = status, .body = error.dump()};
}

absl::Status ServeHttp(int listener_fd, const HttpHandler& handler) {
  // Slots are taken before accept(), so connections beyond the limit wait in the backlog.
  static std::counting_semaphore<kMaxConnections> slots(kMaxConnections);
  for (;;) {
    slots.acquire();
    int fd = ::accept4(listener_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      slots.release();
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return ErrnoStatus("accept on the HTTP port");
    }
    std::thread([fd, &handler] {
      ServeConnection(UniqueFd(fd), handler);
      slots.release();
    }).detach();
  }
}

}  // namespace fleet::http
