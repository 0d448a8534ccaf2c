// Log signatures: lines of an engine's output that say what happened to it. Each adapter has
// built-in ones (vLLM's wedges restart the group, start failures that no restart heals fail it
// with the fix); a recipe's `health.signatures` add to them or replace one of the same pattern.
// SignatureCounter counts matches per signature in a sliding window.
#pragma once

#include <deque>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "launch/recipe.h"

namespace fleet::engine {

// The signatures a group of `recipe` is watched for: the recipe's own first, then the built-in
// ones whose pattern the recipe did not repeat. Built in for every engine (each fails the group
// at once, with the fix for the recipe's runtime): `ibv_reg_mr ... Cannot allocate memory`
// (memlock), `unrecognized arguments: serve` (doubled entrypoint), CUDA out of memory,
// `unknown or invalid runtime name: nvidia`. vLLM adds `EngineDeadError` and
// `RPC call to sample_tokens timed out` (restart at once) and `No available shared memory
// broadcast block found` (restart when seen 3 times in 3 minutes: one can recover).
std::vector<LogSignature> EffectiveSignatures(const Recipe& recipe);

// What a signature's match says, for the group's message and the events.
struct SignatureMatch {
  LogSignature signature;
  std::string line;  // the (last) line that matched, trimmed to 300 bytes
  int seen = 0;      // matches within the window, `count` or more
};

// Counts the lines of one group's output that match its signatures, each in its own sliding
// window, and says when one reached its count. Not thread-safe: one per watched generation.
//
// Example:
//   SignatureCounter counter(EffectiveSignatures(recipe));
//   if (auto m = counter.Feed(log_chunk, clock->Now())) Restart(m->line);
class SignatureCounter {
 public:
  explicit SignatureCounter(std::vector<LogSignature> signatures);

  // Splits `text` into lines (a last line without '\n' is kept for the next call) and counts
  // each match at `now`. The first signature that reached its count, failing ones first;
  // nullopt when none did. A signature that fired starts counting again from zero.
  std::optional<SignatureMatch> Feed(absl::string_view text, absl::Time now);

  // Like Feed, for a finished piece of output (a dead rank's last lines): the partial last
  // line counts too.
  std::optional<SignatureMatch> FeedAll(absl::string_view text, absl::Time now);

 private:
  struct Watched {
    LogSignature signature;
    std::regex re;
    std::deque<absl::Time> seen;
    std::string last_line;
  };
  void CountLine(absl::string_view line, absl::Time now);
  // Counts every complete line of partial_ + text; with `flush`, the unterminated rest too.
  void CountLines(absl::string_view text, bool flush, absl::Time now);
  std::optional<SignatureMatch> Fired(absl::Time now);

  std::vector<Watched> watched_;
  std::string partial_;  // the unterminated end of the last chunk
};

}  // namespace fleet::engine
