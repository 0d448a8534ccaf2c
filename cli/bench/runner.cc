// `fleet bench`'s sweep (see runner.h).
#include "cli/bench/runner.h"

#include <algorithm>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cli/bench/prompt.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fleet::cli::bench {
namespace {

// Bounds on a sweep's shape, to turn a typo (--concurrency 1000) into an error, not a storm.
constexpr int kMaxConcurrency = 256;
constexpr int kMaxRuns = 100;
// Plain requests (model list, /tokenize, a one-token completion) are short on any server.
constexpr absl::Duration kPlainTimeout = absl::Seconds(60);

absl::StatusOr<nlohmann::json> ParseJson(const std::string& what, const std::string& body) {
  nlohmann::json doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::UnavailableError(
        absl::StrCat(what, ": the answer is not JSON: ", body.substr(0, 120)));
  }
  return doc;
}

}  // namespace

absl::Status ValidateOptions(const BenchOptions& o) {
  if (o.pp < 1)
    return absl::InvalidArgumentError(absl::StrCat("--pp must be at least 1, not ", o.pp));
  if (o.tg < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tg must be at least 2 (decode speed needs two tokens), not ", o.tg));
  }
  if (o.runs < 1 || o.runs > kMaxRuns) {
    return absl::InvalidArgumentError(
        absl::StrCat("--runs must be from 1 to ", kMaxRuns, ", not ", o.runs));
  }
  if (o.depths.empty() || o.concurrency.empty()) {
    return absl::InvalidArgumentError("--depth and --concurrency each need at least one value");
  }
  for (int d : o.depths) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("--depth must be >= 0, not ", d));
  }
  for (int c : o.concurrency) {
    if (c < 1 || c > kMaxConcurrency) {
      return absl::InvalidArgumentError(
          absl::StrCat("--concurrency must be from 1 to ", kMaxConcurrency, ", not ", c));
    }
  }
  if (o.request_timeout <= absl::ZeroDuration() || o.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout and --deadline must be positive");
  }
  return absl::OkStatus();
}

BenchRunner::BenchRunner(BenchOptions options, TransportFactory transports, const Clock& clock,
                         const std::atomic<bool>* cancel)
    : options_(std::move(options)),
      make_transport_(std::move(transports)),
      clock_(clock),
      cancel_(cancel) {}

bool BenchRunner::Stopping() const { return cancel_ != nullptr && cancel_->load(); }

absl::Duration BenchRunner::TimeLeft() const { return deadline_at_ - clock_.Now(); }

std::string BenchRunner::RequestBody(const std::string& prompt, int max_tokens, bool stream) const {
  nlohmann::json body = {{"model", model_}, {"max_tokens", max_tokens}, {"temperature", 0}};
  if (options_.chat) {
    body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
  } else {
    body["prompt"] = prompt;
  }
  if (stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    // Exactly --tg tokens, as llama-benchy's --exact-tg: vLLM and llama.cpp honour these; an
    // endpoint that stops early anyway is reported in the row.
    body["ignore_eos"] = true;
    body["min_tokens"] = max_tokens;
  }
  return body.dump();
}

absl::StatusOr<int> BenchRunner::CountTokens(const std::string& prompt) {
  BenchTransport& http = *transports_.front();
  const absl::Duration timeout = std::min(kPlainTimeout, TimeLeft());
  if (use_tokenize_) {
    nlohmann::json body = {{"model", model_}};
    if (options_.chat) {
      body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", prompt}}});
    } else {
      body["prompt"] = prompt;
    }
    const std::string url = absl::StrCat(options_.base_url, "/tokenize");
    const std::string text = body.dump();
    absl::StatusOr<std::string> answer = http.Request(url, &text, timeout);
    if (!answer.ok()) return answer.status();
    absl::StatusOr<nlohmann::json> doc = ParseJson("POST " + url, *answer);
    if (!doc.ok()) return doc.status();
    if (doc->contains("count") && (*doc)["count"].is_number_integer()) {
      return (*doc)["count"].get<int>();
    }
    if (doc->contains("tokens") && (*doc)["tokens"].is_array()) {
      return static_cast<int>((*doc)["tokens"].size());
    }
    return absl::UnavailableError(
        absl::StrCat("POST ", url, ": the answer has neither \"count\" nor \"tokens\""));
  }
  const std::string url =
      absl::StrCat(options_.base_url, options_.chat ? "/v1/chat/completions" : "/v1/completions");
  const std::string text = RequestBody(prompt, 1, /*stream=*/false);
  absl::StatusOr<std::string> answer = http.Request(url, &text, timeout);
  if (!answer.ok()) return answer.status();
  absl::StatusOr<nlohmann::json> doc = ParseJson("POST " + url, *answer);
  if (!doc.ok()) return doc.status();
  if (!doc->contains("usage") || !(*doc)["usage"].contains("prompt_tokens")) {
    return absl::FailedPreconditionError(
        absl::StrCat("POST ", url,
                     ": the answer has no usage.prompt_tokens and the endpoint no /tokenize; "
                     "fleet bench cannot count this server's tokens"));
  }
  return (*doc)["usage"]["prompt_tokens"].get<int>();
}

absl::Status BenchRunner::Prepare(BenchReport& report) {
  absl::StatusOr<std::unique_ptr<BenchTransport>> first = make_transport_();
  if (!first.ok()) return first.status();
  transports_.push_back(*std::move(first));
  BenchTransport& http = *transports_.front();
  model_ = options_.model;
  if (model_.empty()) {
    const std::string url = absl::StrCat(options_.base_url, "/v1/models");
    absl::StatusOr<std::string> answer = http.Request(url, nullptr, kPlainTimeout);
    if (!answer.ok()) {
      return absl::UnavailableError(absl::StrCat(
          answer.status().message(), "; is the endpoint up? Or name the model with --model"));
    }
    absl::StatusOr<nlohmann::json> doc = ParseJson("GET " + url, *answer);
    if (!doc.ok()) return doc.status();
    if (!doc->contains("data") || !(*doc)["data"].is_array() || (*doc)["data"].empty() ||
        !(*doc)["data"][0].contains("id")) {
      return absl::FailedPreconditionError(
          absl::StrCat("GET ", url, " lists no model; name one with --model"));
    }
    model_ = (*doc)["data"][0]["id"].get<std::string>();
  }
  report.model = model_;
  // /tokenize counts without computing anything; where it does not answer, counting falls back
  // to one-token completions.
  use_tokenize_ = true;
  use_tokenize_ = CountTokens("hello world").ok();
  report.counted_by = use_tokenize_ ? "tokenize" : "usage";
  const int slots = *std::max_element(options_.concurrency.begin(), options_.concurrency.end());
  while (static_cast<int>(transports_.size()) < slots) {
    absl::StatusOr<std::unique_ptr<BenchTransport>> t = make_transport_();
    if (!t.ok()) return t.status();
    transports_.push_back(*std::move(t));
  }
  return absl::OkStatus();
}

absl::StatusOr<BenchRunner::Prompts> BenchRunner::MakePrompts(int depth, uint64_t seed) {
  // Seeds: 2*seed for the context, 2*seed+1 for the measured prompt after it.
  Calibration& cal = calibration_[depth];
  TokenCounter count = [this](const std::string& p) { return CountTokens(p); };
  if (!use_tokenize_ && cal.prompt_words == 0) {
    // Calibrated once per depth on seeds never measured: a counted prompt is in the server's
    // prefix cache afterwards, and a measured prompt must not be.
    std::string context;
    if (depth > 0) {
      absl::StatusOr<BuiltPrompt> c = BuildPrompt(count, "", depth, ~seed);
      if (!c.ok()) return c.status();
      cal.context_words = c->words;
      cal.context_filler = c->filler;
      cal.context_tail = c->tail;
      context = c->text;
    }
    absl::StatusOr<BuiltPrompt> p = BuildPrompt(count, context, depth + options_.pp, ~seed - 1);
    if (!p.ok()) return p.status();
    cal.prompt_words = p->words;
    cal.prompt_filler = p->filler;
    cal.prompt_tail = p->tail;
  }
  Prompts out;
  if (!use_tokenize_) {
    out.context = depth > 0 ? ShuffleWords(cal.context_filler, 2 * seed) + cal.context_tail : "";
    out.full = out.context + ShuffleWords(cal.prompt_filler, 2 * seed + 1) + cal.prompt_tail;
    return out;
  }
  if (depth > 0) {
    absl::StatusOr<BuiltPrompt> c = BuildPrompt(count, "", depth, 2 * seed, cal.context_words);
    if (!c.ok()) return c.status();
    cal.context_words = c->words;
    out.context = c->text;
  }
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(count, out.context, depth + options_.pp, 2 * seed + 1, cal.prompt_words);
  if (!p.ok()) return p.status();
  cal.prompt_words = p->words;
  out.full = p->text;
  return out;
}

RunResult BenchRunner::RunOnce(int depth, int concurrency, uint64_t seed) {
  RunResult run;
  std::vector<Prompts> prompts;
  for (int slot = 0; slot < concurrency; ++slot) {
    absl::StatusOr<Prompts> p = MakePrompts(depth, seed * kMaxConcurrency + slot);
    if (!p.ok()) {
      run.error = absl::StrCat("building the prompts: ", p.status().message());
      return run;
    }
    prompts.push_back(*std::move(p));
  }
  const std::string path = options_.chat ? "/v1/chat/completions" : "/v1/completions";
  const std::string url = options_.base_url + path;
  // Phase 1 (a depth): every slot's context goes into the server's cache, together, as
  // llama-benchy's context load; its usage says the depth the server holds.
  if (depth > 0) {
    std::vector<absl::StatusOr<int>> loaded(concurrency, 0);
    {
      std::vector<std::jthread> threads;
      for (int slot = 0; slot < concurrency; ++slot) {
        threads.emplace_back([&, slot] {
          const std::string body = RequestBody(prompts[slot].context, 1, /*stream=*/false);
          absl::StatusOr<std::string> answer = transports_[slot]->Request(
              url, &body, std::min(options_.request_timeout, TimeLeft()));
          if (!answer.ok()) {
            loaded[slot] = answer.status();
            return;
          }
          absl::StatusOr<nlohmann::json> doc = ParseJson("POST " + url, *answer);
          if (!doc.ok()) {
            loaded[slot] = doc.status();
          } else if (!doc->contains("usage") || !(*doc)["usage"].contains("prompt_tokens")) {
            loaded[slot] = absl::FailedPreconditionError(
                absl::StrCat("POST ", url, ": the context load's answer has no usage"));
          } else {
            loaded[slot] = (*doc)["usage"]["prompt_tokens"].get<int>();
          }
        });
      }
    }
    int total = 0;
    for (const absl::StatusOr<int>& l : loaded) {
      if (!l.ok()) {
        run.error = absl::StrCat("context load: ", l.status().message());
        return run;
      }
      total += *l;
    }
    run.confirmed_depth = total / concurrency;
  }
  // Phase 2: the measured requests, sent together.
  run.requests.resize(concurrency);
  {
    std::vector<std::jthread> threads;
    for (int slot = 0; slot < concurrency; ++slot) {
      threads.emplace_back([&, slot] {
        StreamedRequest request{.url = url,
                                .body = RequestBody(prompts[slot].full, options_.tg, true),
                                .max_tokens = options_.tg,
                                .timeout = std::min(options_.request_timeout, TimeLeft())};
        run.requests[slot] = RunStreamed(*transports_[slot], clock_, request);
      });
    }
  }
  return run;
}

absl::StatusOr<BenchReport> BenchRunner::Run(
    const std::function<void(const BenchProgress&)>& on_progress) {
  RETURN_IF_ERROR(ValidateOptions(options_));
  deadline_at_ = clock_.Now() + options_.deadline;
  BenchReport report;
  RETURN_IF_ERROR(Prepare(report));
  // Seeds differ between invocations too, so a second bench finds nothing of the first cached.
  uint64_t seed = static_cast<uint64_t>(absl::ToUnixNanos(clock_.Now()));
  BenchProgress progress{
      .total =
          static_cast<int>(options_.depths.size() * options_.concurrency.size()) * options_.runs};
  for (int depth : options_.depths) {
    for (int concurrency : options_.concurrency) {
      progress.depth = depth;
      progress.concurrency = concurrency;
      if (on_progress) on_progress(progress);
      std::vector<RunResult> runs;
      for (int r = 0; r < options_.runs; ++r) {
        if (Stopping()) {
          report.stopped = "interrupted (Ctrl-C)";
        } else if (TimeLeft() <= absl::ZeroDuration()) {
          report.stopped = absl::StrCat("the sweep's deadline (--deadline ",
                                        absl::FormatDuration(options_.deadline), ") passed");
        }
        if (!report.stopped.empty()) break;
        RunResult run = RunOnce(depth, concurrency, ++seed);
        // A run cut short by Ctrl-C measured nothing; it is dropped, not reported as an error.
        if (Stopping()) {
          report.stopped = "interrupted (Ctrl-C)";
          break;
        }
        runs.push_back(std::move(run));
        ++progress.done;
        if (on_progress) on_progress(progress);
      }
      if (!runs.empty()) {
        report.rows.push_back(Summarize(options_.pp, options_.tg, depth, concurrency, runs));
      }
      if (!report.stopped.empty()) return report;
    }
  }
  return report;
}

}  // namespace fleet::cli::bench
