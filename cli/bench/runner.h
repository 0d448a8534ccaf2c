// `fleet bench`'s sweep: for every depth and concurrency, `runs` runs of `concurrency`
// streamed requests sent together, each prompt built to an exact token count first, and for a
// depth a context load before the measured requests (llama-benchy's prefix-caching mode).
//
// Example:
//   BenchRunner runner(options, [&] { return CurlBenchTransport::Create(&stop); },
//                      *RealClock::Get(), &stop);
//   ASSIGN_OR_RETURN(BenchReport report, runner.Run(/*on_progress=*/nullptr));
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/bench/measure.h"
#include "cli/bench/transport.h"
#include "common/clock.h"

namespace fleet::cli::bench {

struct BenchOptions {
  std::string base_url;  // http://host:port, without /v1
  std::string model;     // empty: the first model /v1/models lists
  int pp = 2048;
  int tg = 128;
  std::vector<int> depths = {0, 4096, 8192};
  std::vector<int> concurrency = {1, 2, 4};
  int runs = 3;
  bool chat = false;  // /v1/chat/completions instead of /v1/completions
  absl::Duration request_timeout = absl::Minutes(5);
  absl::Duration deadline = absl::Hours(1);  // the whole sweep
};

// InvalidArgument naming the flag when an option is out of range.
absl::Status ValidateOptions(const BenchOptions& options);

struct BenchProgress {
  int done = 0;  // runs finished
  int total = 0;
  int depth = 0;
  int concurrency = 0;
};

struct BenchReport {
  std::string model;
  std::string counted_by;  // "tokenize" (the server's /tokenize) or "usage" (calibration)
  std::vector<Row> rows;   // in sweep order; rows not reached are absent
  std::string stopped;     // why the sweep ended early (Ctrl-C, the deadline); empty if it did not
};

using TransportFactory = std::function<absl::StatusOr<std::unique_ptr<BenchTransport>>()>;

class BenchRunner {
 public:
  // `cancel` (may be null) stops the sweep: requests in flight end and the rows measured so
  // far are returned.
  BenchRunner(BenchOptions options, TransportFactory transports, const Clock& clock,
              const std::atomic<bool>* cancel);

  // The sweep. An error only when nothing can be measured (no model, the endpoint down);
  // failures of single requests are in their rows.
  absl::StatusOr<BenchReport> Run(const std::function<void(const BenchProgress&)>& on_progress);

 private:
  struct Prompts {
    std::string context;  // `depth` tokens, loaded first ("" without a depth)
    std::string full;     // context + the measured prompt: depth + pp tokens
  };
  // Filler words that gave a depth's targets last time: the next search starts there, and
  // without /tokenize they are the calibration itself.
  struct Calibration {
    int context_words = 0;
    int prompt_words = 0;
    std::string context_filler;  // without /tokenize: shuffled for each measured prompt
    std::string prompt_filler;
    std::string context_tail;
    std::string prompt_tail;
  };

  absl::Status Prepare(BenchReport& report);
  absl::StatusOr<Prompts> MakePrompts(int depth, uint64_t seed);
  absl::StatusOr<int> CountTokens(const std::string& prompt);
  std::string RequestBody(const std::string& prompt, int max_tokens, bool stream) const;
  RunResult RunOnce(int depth, int concurrency, uint64_t seed);
  bool Stopping() const;
  absl::Duration TimeLeft() const;

  const BenchOptions options_;
  const TransportFactory make_transport_;
  const Clock& clock_;
  const std::atomic<bool>* cancel_;
  absl::Time deadline_at_;
  std::string model_;
  bool use_tokenize_ = false;
  // One per concurrent slot, kept across runs so their connections are reused.
  std::vector<std::unique_ptr<BenchTransport>> transports_;
  std::map<int, Calibration> calibration_;  // by depth
};

}  // namespace fleet::cli::bench
