// BenchTransport over libcurl (see curl_transport.h).
#include "cli/bench/curl_transport.h"

#include <curl/curl.h>

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/http/http_client.h"

namespace fleet::cli::bench {
namespace {

// Plain answers (model lists, /tokenize of a long prompt, which lists every token id) stay far
// below this; an endpoint that never ends its answer must not make the bench buffer it.
constexpr size_t kMaxBodyBytes = 16 << 20;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlHeaders = std::unique_ptr<curl_slist, SlistDeleter>;

// What the write callback sees: the plain body, or the stream's sink once the answer is 200.
struct Sink {
  CURL* curl = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  std::string body;
  const ChunkSink* stream = nullptr;
  bool overflowed = false;
  bool stopped = false;  // the stream's sink returned false
};

size_t OnBytes(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  size_t bytes = size * count;
  long status = 0;
  curl_easy_getinfo(sink->curl, CURLINFO_RESPONSE_CODE, &status);
  if (sink->stream != nullptr && status == 200) {
    if (!(*sink->stream)(absl::string_view(data, bytes))) {
      sink->stopped = true;
      return 0;  // curl fails the transfer with CURLE_WRITE_ERROR
    }
    return bytes;
  }
  if (sink->body.size() + bytes > kMaxBodyBytes) {
    sink->overflowed = true;
    return 0;
  }
  sink->body.append(data, bytes);
  return bytes;
}

// curl calls this about once a second while waiting, and on every transfer.
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* sink = static_cast<Sink*>(user);
  if (sink->cancel != nullptr && sink->cancel->load()) {
    sink->stopped = true;
    return 1;  // curl aborts with CURLE_ABORTED_BY_CALLBACK
  }
  return 0;
}

long Millis(absl::Duration d) {
  // curl reads 0 as "no timeout": a spent budget still gets the shortest real one.
  return std::max<long>(1, static_cast<long>(absl::ToInt64Milliseconds(d)));
}

}  // namespace

void CurlBenchTransport::CurlDeleter::operator()(void* curl) const {
  curl_easy_cleanup(static_cast<CURL*>(curl));
}

absl::StatusOr<std::unique_ptr<CurlBenchTransport>> CurlBenchTransport::Create(
    const std::atomic<bool>* cancel) {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
  return std::unique_ptr<CurlBenchTransport>(new CurlBenchTransport(curl, cancel));
}

namespace {

// One exchange on `curl`; `stream` null for a plain request.
absl::Status Perform(CURL* curl, const std::string& url, const std::string* json_body,
                     absl::Duration timeout, Sink& sink) {
  char error[CURL_ERROR_SIZE] = {};
  CurlHeaders headers;
  curl_easy_reset(curl);
  sink.curl = curl;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, Millis(timeout));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, Millis(timeout));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROXY, "");
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  // Events must reach the clock as they arrive, not when Nagle lets a small request go.
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBytes);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &sink);
  if (json_body != nullptr) {
    headers.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body->c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(json_body->size()));
  }
  CURLcode code = curl_easy_perform(curl);
  const std::string what = absl::StrCat(json_body != nullptr ? "POST " : "GET ", url);
  if (sink.stopped)
    return absl::CancelledError(
        absl::StrCat(what, ": stopped by the bench (an error event, or Ctrl-C)"));
  if (sink.overflowed) {
    return absl::UnavailableError(
        absl::StrCat(what, ": response body larger than ", kMaxBodyBytes, " bytes"));
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    return absl::DeadlineExceededError(
        absl::StrCat(what, ": no complete answer within ", absl::FormatDuration(timeout),
                     "; raise --timeout, or lower --pp/--tg/--depth"));
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
    if (!sink.body.empty()) absl::StrAppend(&message, ": ", QuoteBody(sink.body));
    return absl::UnavailableError(message);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> CurlBenchTransport::Request(const std::string& url,
                                                        const std::string* json_body,
                                                        absl::Duration timeout) {
  Sink sink{.cancel = cancel_};
  absl::Status st = Perform(static_cast<CURL*>(curl_.get()), url, json_body, timeout, sink);
  if (!st.ok()) return st;
  return std::move(sink.body);
}

absl::Status CurlBenchTransport::Stream(const std::string& url, const std::string& json_body,
                                        absl::Duration timeout, const ChunkSink& sink) {
  Sink s{.cancel = cancel_, .stream = &sink};
  return Perform(static_cast<CURL*>(curl_.get()), url, &json_body, timeout, s);
}

}  // namespace fleet::cli::bench
