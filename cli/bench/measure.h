// The measuring core of `fleet bench`: one streamed request timed event by event, and the
// figures of a row (one depth and concurrency) from the requests of its runs. Time comes from a
// Clock so that tests give exact figures.
//
// Definitions (as llama-benchy's, see /work/notes/bench.md for where they differ):
//   ttft          first content token's arrival − request sent
//   prefill t/s   prompt tokens the server confirmed beyond the depth / ttft
//   decode t/s    (completion tokens − 1) / (last token's arrival − first token's arrival)
//   total decode  (Σ completion tokens − requests) / (last token of any − first token of any)
//   e2e           last byte − request sent
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cli/bench/transport.h"
#include "common/clock.h"

namespace fleet::cli::bench {

// Splits a text/event-stream into the payloads of its `data:` lines, across any cut of the
// bytes.
class SseParser {
 public:
  // Appends the payload of every line completed by `bytes` to `out`.
  void Feed(absl::string_view bytes, std::vector<std::string>& out);

 private:
  std::string partial_;
};

struct StreamedRequest {
  std::string url;   // http://host:port/v1/completions
  std::string body;  // the JSON request, "stream": true
  int max_tokens = 0;
  absl::Duration timeout = absl::Minutes(5);
};

struct RequestResult {
  absl::Time start;
  std::optional<absl::Time> first_token;
  std::optional<absl::Time> last_token;
  absl::Time end;
  int completion_tokens = 0;  // usage.completion_tokens, else the content events counted
  int prompt_tokens = 0;      // usage.prompt_tokens; 0 when the server sent no usage
  std::string error;          // empty on success
};

// Sends `request` and times its events on `clock`. Errors (transport, HTTP status, an error
// event, no usage, fewer tokens than max_tokens) are returned in `error`, never thrown away.
RequestResult RunStreamed(BenchTransport& transport, const Clock& clock,
                          const StreamedRequest& request);

// Mean and spread (population standard deviation, as numpy's std in llama-benchy) of values.
struct Stat {
  double mean = 0;
  double sd = 0;
};
Stat MeanSd(const std::vector<double>& values);

// One run of a row: `concurrency` measured requests sent together, and the depth the context
// load confirmed (0 without a depth).
struct RunResult {
  std::vector<RequestResult> requests;
  int confirmed_depth = 0;
  std::string error;  // a failure before the measured requests (context load, prompt building)
};

struct Row {
  int pp = 0;  // prompt tokens beyond the depth, as the server confirmed (mean over requests)
  int tg = 0;
  int depth = 0;
  int concurrency = 0;
  int runs = 0;  // runs whose every request succeeded; only these are in the figures
  Stat ttft_s, pp_tps, tg_tps, tg_tps_total, e2e_s;
  std::vector<std::string> errors;  // one per failed run: "run 2: <what>"
};

// The row of (depth, concurrency) from its runs. A run with any failed request is left out
// of every figure and listed in `errors`.
Row Summarize(int requested_pp, int tg, int depth, int concurrency,
              const std::vector<RunResult>& runs);

}  // namespace fleet::cli::bench
