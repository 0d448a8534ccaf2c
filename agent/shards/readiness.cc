// ProbeReadiness: the head's HTTP readiness steps, one HttpClient per attempt.
#include "agent/shards/readiness.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/http/http_client.h"
#include "nlohmann/json.hpp"

namespace fleet::agent {
namespace {

constexpr int64_t kDefaultRequestTimeoutMs = 2000;
constexpr char kDefaultHealthPath[] = "/health";

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

// GET /v1/models, then POST /v1/completions for one token of the first model listed.
absl::Status OneToken(HttpClient& http, const std::string& base, int64_t timeout_ms,
                      bool complete) {
  const std::string models_url = base + "/v1/models";
  const std::string models_what = "GET " + models_url;
  absl::StatusOr<std::string> models = http.Expect200(models_what, models_url, nullptr, timeout_ms);
  if (!models.ok()) return models.status();
  absl::StatusOr<std::string> model = FirstModel(models_what, *models);
  if (!model.ok()) return model.status();
  if (!complete) return absl::OkStatus();

  // vLLM answers /v1/models while its generation is dead, so readiness also asks for a token.
  const std::string completions_url = base + "/v1/completions";
  const std::string completions_what = "POST " + completions_url;
  const std::string request =
      nlohmann::json{{"model", *model}, {"prompt", "ping"}, {"max_tokens", 1}}.dump();
  absl::StatusOr<std::string> completion =
      http.Expect200(completions_what, completions_url, &request, timeout_ms);
  if (!completion.ok()) return completion.status();
  nlohmann::json answer = nlohmann::json::parse(*completion, nullptr, false);
  if (answer.is_discarded() || !answer.is_object() || !answer.contains("choices")) {
    return absl::UnavailableError(
        absl::StrCat(completions_what,
                     ": expected a completion with \"choices\", got: ", QuoteBody(*completion)));
  }
  return absl::OkStatus();
}

std::string HealthUrl(const v1::ReadinessProbe& probe) {
  return BaseUrl(probe) + (probe.health_path().empty() ? kDefaultHealthPath : probe.health_path());
}

}  // namespace

absl::Status ProbeReadiness(const v1::ReadinessProbe& probe) {
  // A rank without a port serves no HTTP (workers): running is ready.
  if (probe.port() == 0) return absl::OkStatus();

  absl::StatusOr<HttpClient> http = HttpClient::Create();
  if (!http.ok()) return http.status();

  const int64_t timeout_ms = RequestTimeoutMs(probe);
  const std::string health_url = HealthUrl(probe);
  absl::StatusOr<std::string> health =
      http->Expect200("GET " + health_url, health_url, nullptr, timeout_ms);
  if (!health.ok()) return health.status();
  if (!probe.check_models() && !probe.check_completion()) return absl::OkStatus();
  // The completion needs a model name, so checking completions implies listing models.
  return OneToken(*http, BaseUrl(probe), timeout_ms, probe.check_completion());
}

HeadLook LookAtHead(const v1::ReadinessProbe& probe) {
  HeadLook look;
  absl::StatusOr<HttpClient> http = HttpClient::Create();
  if (!http.ok()) {
    look.health = http.status();
    return look;
  }
  const int64_t timeout_ms = RequestTimeoutMs(probe);
  const std::string health_url = HealthUrl(probe);
  look.health = http->Expect200("GET " + health_url, health_url, nullptr, timeout_ms).status();
  const std::string metrics_url = BaseUrl(probe) + probe.watch().metrics_path();
  if (!probe.watch().metrics_path().empty()) {
    absl::StatusOr<std::string> metrics =
        http->Expect200("GET " + metrics_url, metrics_url, nullptr, timeout_ms);
    if (metrics.ok()) look.metrics = ParseHeadMetrics(*metrics);
  }
  return look;
}

absl::Status OneTokenCompletion(const v1::ReadinessProbe& probe, absl::Duration timeout) {
  absl::StatusOr<HttpClient> http = HttpClient::Create();
  if (!http.ok()) return http.status();
  return OneToken(*http, BaseUrl(probe), absl::ToInt64Milliseconds(timeout), /*complete=*/true);
}

}  // namespace fleet::agent
