// SparkFleet's HTTP client over libcurl (see http_client.h).
#include "common/http/http_client.h"

#include <curl/curl.h>

#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleet {
namespace {

// Bodies are kept only to be parsed or quoted in an error; an endpoint that streams without
// end must not make the caller buffer it. A /v1/models list of many models stays far below.
constexpr size_t kMaxBodyBytes = 1 << 20;
// How much of an unexpected body an error quotes.
constexpr size_t kQuotedBodyBytes = 200;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlHeaders = std::unique_ptr<curl_slist, SlistDeleter>;

struct BodySink {
  std::string* body;
  bool overflowed = false;
};

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  size_t bytes = size * count;
  if (sink->body->size() + bytes > kMaxBodyBytes) {
    sink->overflowed = true;
    return 0;  // makes curl fail the transfer with CURLE_WRITE_ERROR
  }
  sink->body->append(data, bytes);
  return bytes;
}

}  // namespace

void HttpClient::CurlDeleter::operator()(void* curl) const {
  curl_easy_cleanup(static_cast<CURL*>(curl));
}

absl::StatusOr<HttpClient> HttpClient::Create() {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
  return HttpClient(curl);
}

absl::StatusOr<std::string> HttpClient::Expect200(absl::string_view what, const std::string& url,
                                                  const std::string* post_body,
                                                  int64_t timeout_ms) {
  CURL* curl = static_cast<CURL*>(curl_.get());
  std::string body;
  BodySink sink{.body = &body};
  char error[CURL_ERROR_SIZE] = {};
  CurlHeaders headers;
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_ms));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROXY, "");
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  if (post_body != nullptr) {
    headers.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post_body->c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(post_body->size()));
  }
  CURLcode code = curl_easy_perform(curl);
  if (sink.overflowed) {
    return absl::UnavailableError(
        absl::StrCat(what, ": response body larger than ", kMaxBodyBytes, " bytes"));
  }
  if (code != CURLE_OK) {
    std::string message = absl::StrCat(what, ": ", curl_easy_strerror(code));
    if (error[0] != '\0') absl::StrAppend(&message, ": ", error);
    return absl::UnavailableError(message);
  }
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    std::string message = absl::StrCat(what, ": HTTP ", status);
    if (!body.empty()) absl::StrAppend(&message, ": ", QuoteBody(body));
    return absl::UnavailableError(message);
  }
  return body;
}

std::string QuoteBody(absl::string_view body) {
  std::string out;
  for (unsigned char c : body.substr(0, kQuotedBodyBytes)) {
    if (c == '\n' || c == '\r' || c == '\t') {
      out.push_back(' ');
    } else if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

}  // namespace fleet
