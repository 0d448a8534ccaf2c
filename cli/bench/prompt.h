// Prompts of an exact token count for the model served, never assuming characters per token:
// filler words are added or removed until the server's own count (its /tokenize route, or
// usage.prompt_tokens of a one-token completion) says the target.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace fleet::cli::bench {

// The tokens the server counts for a whole prompt (special tokens included, as
// usage.prompt_tokens counts them).
using TokenCounter = std::function<absl::StatusOr<int>(const std::string& prompt)>;

// `n` filler words, each led by a space, drawn from a fixed vocabulary by `seed`: different
// seeds give different text, so concurrent requests and runs share no prefix a cache could
// reuse.
std::string FillerWords(uint64_t seed, int n);

// The space-led words of `filler` in an order drawn by `seed`: the same words, so the same count
// under any tokenizer that splits on spaces before it tokenizes (byte-level and GPT-style BPE
// alike), and a different text, so no prefix a cache could reuse. How a count calibrated once
// carries over to every measured prompt when only usage.prompt_tokens can count.
std::string ShuffleWords(const std::string& filler, uint64_t seed);

struct BuiltPrompt {
  std::string text;    // prefix + filler + tail
  std::string filler;  // the filler words alone
  int tokens = 0;      // the server's count of `text`
  int words = 0;       // filler words used
  std::string tail;    // one-token words that closed the last gap ("" mostly)
};

// `prefix` followed by filler words of `seed` such that the server counts `target` tokens
// for the whole. Counts at most `max_counts` times (a secant search on the word count, then
// single steps); FailedPrecondition naming the closest count when it cannot be met (a model
// whose tokens never add up to the target), InvalidArgument when `prefix` alone is longer.
// `start_words` (e.g. the last answer's words) saves counts when the ratio is already known.
absl::StatusOr<BuiltPrompt> BuildPrompt(const TokenCounter& count, const std::string& prefix,
                                        int target, uint64_t seed, int start_words = 0,
                                        int max_counts = 16);

}  // namespace fleet::cli::bench
