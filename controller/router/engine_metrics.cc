// Reading an engine's requests in flight (engine_metrics.h).
#include "controller/router/engine_metrics.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/http/http_client.h"
#include "common/status_macros.h"

namespace fleet::controller {

absl::StatusOr<int> SumRequestsRunning(absl::string_view prometheus_text) {
  constexpr absl::string_view kSeries = "vllm:num_requests_running";
  double sum = 0;
  bool found = false;
  for (absl::string_view line : absl::StrSplit(prometheus_text, '\n')) {
    if (!absl::StartsWith(line, kSeries)) continue;
    absl::string_view rest = line.substr(kSeries.size());
    if (!rest.empty() && rest[0] != '{' && rest[0] != ' ') continue;  // another series' prefix
    size_t space = line.rfind(' ');
    double value = 0;
    if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) {
      continue;
    }
    sum += value;
    found = true;
  }
  if (!found) return absl::NotFoundError(absl::StrCat("no ", kSeries, " sample"));
  return static_cast<int>(sum);
}

absl::StatusOr<int> HttpEngineMetrics::RequestsRunning(const std::string& endpoint) {
  ASSIGN_OR_RETURN(HttpClient http, HttpClient::Create());
  const std::string url = absl::StrCat(endpoint, "/metrics");
  ASSIGN_OR_RETURN(std::string body, http.Expect200(absl::StrCat("GET ", url), url, nullptr, 1000));
  return SumRequestsRunning(body);
}

}  // namespace fleet::controller
