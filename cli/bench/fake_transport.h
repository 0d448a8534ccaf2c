// A BenchTransport for tests: plain answers by URL, and streams played as scripted steps that
// advance a FakeClock before handing over their bytes, so every timing is exact.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "cli/bench/transport.h"
#include "common/fake_clock.h"

namespace fleet::cli::bench {

class FakeBenchTransport final : public BenchTransport {
 public:
  struct Step {
    absl::Duration after;  // the clock advances this much, then `bytes` arrive
    std::string bytes;
  };

  explicit FakeBenchTransport(FakeClock& clock) : clock_(clock) {}

  void SetAnswer(const std::string& url, absl::StatusOr<std::string> answer) {
    answers_.insert_or_assign(url, std::move(answer));
  }
  // The next Stream call plays `steps`, then returns `end`.
  void SetStream(std::vector<Step> steps, absl::Status end = absl::OkStatus()) {
    steps_ = std::move(steps);
    end_ = std::move(end);
  }

  absl::StatusOr<std::string> Request(const std::string& url, const std::string* json_body,
                                      absl::Duration) override {
    if (json_body != nullptr) posted_.push_back(*json_body);
    auto it = answers_.find(url);
    if (it == answers_.end()) return absl::UnavailableError("GET " + url + ": HTTP 404");
    return it->second;
  }

  absl::Status Stream(const std::string&, const std::string& json_body, absl::Duration,
                      const ChunkSink& sink) override {
    posted_.push_back(json_body);
    for (const Step& step : steps_) {
      clock_.Advance(step.after);
      if (!sink(step.bytes)) return absl::CancelledError("stopped by the sink");
    }
    return end_;
  }

  const std::vector<std::string>& posted() const { return posted_; }

 private:
  FakeClock& clock_;
  std::map<std::string, absl::StatusOr<std::string>> answers_;
  std::vector<Step> steps_;
  absl::Status end_;
  std::vector<std::string> posted_;
};

}  // namespace fleet::cli::bench
