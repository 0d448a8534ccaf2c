// ProbeReadiness: the head's HTTP readiness steps over libcurl, one easy handle per attempt.
#include "agent/shards/readiness.h"

#include <curl/curl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace fleet::agent {
namespace {

constexpr int64_t kDefaultRequestTimeoutMs = 2000;
constexpr char kDefaultHealthPath[] = "/health";
// Bodies are kept only to be parsed or quoted in an error; an endpoint that streams without
// end must not make the agent buffer it. A /v1/models list of many models stays far below.
constexpr size_t kMaxBodyBytes = 1 << 20;
// How much of an unexpected body an error quotes.
constexpr size_t kQuotedBodyBytes = 200;

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using CurlHandle = std::unique_ptr<CURL, CurlDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlHeaders = std::unique_ptr<curl_slist, SlistDeleter>;

struct Response {
  long status = 0;
  std::string body;
};

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

// The first kQuotedBodyBytes of `body` on one line of printable ASCII: the error ends up in
// ShardStatus.message, a proto string that must be valid UTF-8, and in one-line logs.
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

int64_t RequestTimeoutMs(const v1::ReadinessProbe& probe) {
  if (!probe.has_request_timeout()) return kDefaultRequestTimeoutMs;
  int64_t ms = probe.request_timeout().seconds() * 1000 + probe.request_timeout().nanos() / 1000000;
  return ms > 0 ? ms : kDefaultRequestTimeoutMs;
}

std::string BaseUrl(const v1::ReadinessProbe& probe) {
  const std::string& host = probe.host();
  bool ipv6_literal = host.find(':') != std::string::npos && !host.starts_with('[');
  return ipv6_literal ? absl::StrCat("http://[", host, "]:", probe.port())
                      : absl::StrCat("http://", host, ":", probe.port());
}

// One request; any HTTP status is a Response, only transport failures are errors. `what` is
// "GET http://..." and prefixes every error.
absl::StatusOr<Response> Perform(CURL* curl, absl::string_view what, const std::string& url,
                                 const std::string* post_body, int64_t timeout_ms) {
  Response response;
  BodySink sink{.body = &response.body};
  char error[CURL_ERROR_SIZE] = {};
  CurlHeaders headers;
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_ms));
  // Timeouts must not use SIGALRM: the agent is multi-threaded.
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  // An http_proxy in the agent's environment must never carry probes of a local engine.
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
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

// Performs the request and requires HTTP 200.
absl::StatusOr<std::string> Expect200(CURL* curl, absl::string_view what, const std::string& url,
                                      const std::string* post_body, int64_t timeout_ms) {
  absl::StatusOr<Response> response = Perform(curl, what, url, post_body, timeout_ms);
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    std::string message = absl::StrCat(what, ": HTTP ", response->status);
    if (!response->body.empty()) absl::StrAppend(&message, ": ", QuoteBody(response->body));
    return absl::UnavailableError(message);
  }
  return std::move(response->body);
}

// The id of the first model of an OpenAI model list ({"data":[{"id":...}, ...]}).
absl::StatusOr<std::string> FirstModel(absl::string_view what, const std::string& body) {
  nlohmann::json list = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (list.is_discarded() || !list.is_object() || !list.contains("data") ||
      !list["data"].is_array()) {
    return absl::UnavailableError(
        absl::StrCat(what, ": expected a model list {\"data\":[...]}, got: ", QuoteBody(body)));
  }
  const nlohmann::json& data = list["data"];
  if (data.empty()) return absl::UnavailableError(absl::StrCat(what, ": no model listed"));
  if (!data[0].is_object() || !data[0].contains("id") || !data[0]["id"].is_string()) {
    return absl::UnavailableError(
        absl::StrCat(what, ": first listed model has no string \"id\": ", QuoteBody(body)));
  }
  return data[0]["id"].get<std::string>();
}

}  // namespace

absl::Status ProbeReadiness(const v1::ReadinessProbe& probe) {
  // A rank without a port serves no HTTP (workers): running is ready.
  if (probe.port() == 0) return absl::OkStatus();

  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });

  CurlHandle curl(curl_easy_init());
  if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");

  const int64_t timeout_ms = RequestTimeoutMs(probe);
  const std::string base = BaseUrl(probe);
  const std::string health_url =
      base + (probe.health_path().empty() ? kDefaultHealthPath : probe.health_path());

  absl::StatusOr<std::string> health =
      Expect200(curl.get(), "GET " + health_url, health_url, nullptr, timeout_ms);
  if (!health.ok()) return health.status();
  if (!probe.check_models() && !probe.check_completion()) return absl::OkStatus();

  // The completion needs a model name, so checking completions implies listing models.
  const std::string models_url = base + "/v1/models";
  const std::string models_what = "GET " + models_url;
  absl::StatusOr<std::string> models =
      Expect200(curl.get(), models_what, models_url, nullptr, timeout_ms);
  if (!models.ok()) return models.status();
  absl::StatusOr<std::string> model = FirstModel(models_what, *models);
  if (!model.ok()) return model.status();
  if (!probe.check_completion()) return absl::OkStatus();

  // vLLM answers /v1/models while its generation is dead, so readiness also asks for a token.
  const std::string completions_url = base + "/v1/completions";
  const std::string completions_what = "POST " + completions_url;
  const std::string request =
      nlohmann::json{{"model", *model}, {"prompt", "ping"}, {"max_tokens", 1}}.dump();
  absl::StatusOr<std::string> completion =
      Expect200(curl.get(), completions_what, completions_url, &request, timeout_ms);
  if (!completion.ok()) return completion.status();
  nlohmann::json answer = nlohmann::json::parse(*completion, nullptr, false);
  if (answer.is_discarded() || !answer.is_object() || !answer.contains("choices")) {
    return absl::UnavailableError(
        absl::StrCat(completions_what,
                     ": expected a completion with \"choices\", got: ", QuoteBody(*completion)));
  }
  return absl::OkStatus();
}

}  // namespace fleet::agent
