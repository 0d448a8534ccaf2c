// The measuring core of `fleet bench` (see measure.h).
#include "cli/bench/measure.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace fleet::cli::bench {

void SseParser::Feed(absl::string_view bytes, std::vector<std::string>& out) {
  partial_.append(bytes.data(), bytes.size());
  size_t begin = 0;
  for (size_t nl = partial_.find('\n'); nl != std::string::npos; nl = partial_.find('\n', begin)) {
    absl::string_view line(partial_.data() + begin, nl - begin);
    begin = nl + 1;
    if (absl::ConsumePrefix(&line, "data:")) {
      out.emplace_back(absl::StripAsciiWhitespace(line));
    }
  }
  partial_.erase(0, begin);
}

namespace {

// The generated text of one streamed chunk: choices[0].text (completions) or
// choices[0].delta.content (chat); empty for role-only, final and usage chunks.
std::string ChunkText(const nlohmann::json& event) {
  if (!event.contains("choices") || !event["choices"].is_array() || event["choices"].empty()) {
    return "";
  }
  const nlohmann::json& choice = event["choices"][0];
  for (const nlohmann::json* field : {choice.contains("text") ? &choice["text"] : nullptr,
                                      choice.contains("delta") && choice["delta"].is_object() &&
                                              choice["delta"].contains("content")
                                          ? &choice["delta"]["content"]
                                          : nullptr}) {
    if (field != nullptr && field->is_string()) return field->get<std::string>();
  }
  return "";
}

}  // namespace

RequestResult RunStreamed(BenchTransport& transport, const Clock& clock,
                          const StreamedRequest& request) {
  RequestResult result;
  SseParser parser;
  std::vector<std::string> payloads;
  int content_events = 0;
  std::optional<int> usage_completion;
  result.start = clock.Now();
  absl::Status st =
      transport.Stream(request.url, request.body, request.timeout, [&](absl::string_view bytes) {
        // One time for the whole piece: events that arrive together were sent together.
        const absl::Time now = clock.Now();
        payloads.clear();
        parser.Feed(bytes, payloads);
        for (const std::string& payload : payloads) {
          if (payload == "[DONE]") continue;
          nlohmann::json event =
              nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
          if (event.is_discarded()) {
            result.error =
                absl::StrCat("the server sent an event that is not JSON: ", payload.substr(0, 120));
            return false;
          }
          if (event.contains("error")) {
            const nlohmann::json& e = event["error"];
            result.error = absl::StrCat(
                "the server sent an error event: ",
                e.is_object() && e.contains("message") ? e["message"].dump() : e.dump());
            return false;
          }
          if (event.contains("usage") && event["usage"].is_object()) {
            const nlohmann::json& usage = event["usage"];
            result.prompt_tokens = usage.value("prompt_tokens", 0);
            if (usage.contains("completion_tokens")) {
              usage_completion = usage["completion_tokens"].get<int>();
            }
          }
          if (!ChunkText(event).empty()) {
            ++content_events;
            if (!result.first_token) result.first_token = now;
            result.last_token = now;
          }
        }
        return true;
      });
  result.end = clock.Now();
  result.completion_tokens = usage_completion.value_or(content_events);
  if (!result.error.empty()) return result;
  if (!st.ok()) {
    result.error = std::string(st.message());
  } else if (!result.first_token) {
    result.error = "the stream ended without a content token";
  } else if (result.prompt_tokens == 0) {
    result.error =
        "the stream had no usage (prompt_tokens); the endpoint must honour "
        "stream_options.include_usage";
  } else if (result.completion_tokens < request.max_tokens) {
    result.error =
        absl::StrCat("asked for ", request.max_tokens, " tokens, got ", result.completion_tokens,
                     "; the server stopped early (it may ignore ignore_eos/min_tokens)");
  }
  return result;
}

Stat MeanSd(const std::vector<double>& values) {
  Stat s;
  if (values.empty()) return s;
  for (double v : values) s.mean += v;
  s.mean /= static_cast<double>(values.size());
  double sq = 0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.sd = std::sqrt(sq / static_cast<double>(values.size()));
  return s;
}

Row Summarize(int requested_pp, int tg, int depth, int concurrency,
              const std::vector<RunResult>& runs) {
  Row row{.pp = requested_pp, .tg = tg, .depth = depth, .concurrency = concurrency};
  std::vector<double> ttft, pp_tps, tg_tps, tg_total, e2e, pp_seen, depth_seen;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunResult& run = runs[i];
    std::string error = run.error;
    for (const RequestResult& r : run.requests) {
      if (error.empty() && !r.error.empty()) error = r.error;
    }
    if (error.empty() && run.requests.empty()) error = "no request was sent";
    if (!error.empty()) {
      row.errors.push_back(absl::StrCat("run ", i + 1, ": ", error));
      continue;
    }
    ++row.runs;
    absl::Time first_of_any = absl::InfiniteFuture(), last_of_any = absl::InfinitePast();
    double decoded = 0;
    for (const RequestResult& r : run.requests) {
      const double t = absl::ToDoubleSeconds(*r.first_token - r.start);
      const int pp = r.prompt_tokens - run.confirmed_depth;
      ttft.push_back(t);
      pp_seen.push_back(pp);
      if (t > 0) pp_tps.push_back(pp / t);
      const double decode_s = absl::ToDoubleSeconds(*r.last_token - *r.first_token);
      if (r.completion_tokens > 1 && decode_s > 0) {
        tg_tps.push_back((r.completion_tokens - 1) / decode_s);
      }
      e2e.push_back(absl::ToDoubleSeconds(r.end - r.start));
      first_of_any = std::min(first_of_any, *r.first_token);
      last_of_any = std::max(last_of_any, *r.last_token);
      decoded += r.completion_tokens - 1;
    }
    const double span = absl::ToDoubleSeconds(last_of_any - first_of_any);
    if (span > 0 && decoded > 0) tg_total.push_back(decoded / span);
    depth_seen.push_back(run.confirmed_depth);
  }
  if (row.runs > 0) {
    row.pp = static_cast<int>(std::lround(MeanSd(pp_seen).mean));
    if (depth > 0) row.depth = static_cast<int>(std::lround(MeanSd(depth_seen).mean));
  }
  row.ttft_s = MeanSd(ttft);
  row.pp_tps = MeanSd(pp_tps);
  row.tg_tps = MeanSd(tg_tps);
  row.tg_tps_total = MeanSd(tg_total);
  row.e2e_s = MeanSd(e2e);
  return row;
}

}  // namespace fleet::cli::bench
