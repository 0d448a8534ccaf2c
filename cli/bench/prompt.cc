// Prompts of an exact token count (see prompt.h).
#include "cli/bench/prompt.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fleet::cli::bench {
namespace {

// Common short English words: most tokenizers give each, led by a space, one token, so the
// search converges in a count or two; a word that splits only slows it.
constexpr const char* kWords[] = {
    "the",    "of",    "and",   "to",    "in",     "is",      "was",   "that",   "for",
    "on",     "as",    "with",  "his",   "they",   "at",      "be",    "this",   "from",
    "have",   "or",    "by",    "one",   "had",    "not",     "but",   "what",   "all",
    "were",   "when",  "we",    "there", "can",    "an",      "your",  "which",  "their",
    "said",   "if",    "do",    "will",  "each",   "about",   "how",   "up",     "out",
    "them",   "then",  "she",   "many",  "some",   "so",      "these", "would",  "other",
    "into",   "has",   "more",  "her",   "two",    "like",    "him",   "see",    "time",
    "could",  "no",    "make",  "than",  "first",  "been",    "its",   "who",    "now",
    "people", "my",    "made",  "over",  "did",    "down",    "only",  "way",    "find",
    "use",    "may",   "water", "long",  "little", "very",    "after", "words",  "called",
    "just",   "where", "most",  "know",  "get",    "through", "back",  "much",   "before",
    "go",     "good",  "new",   "write", "our",    "used",    "me",    "man",    "too",
    "any",    "day",   "same",  "right", "look",   "think",   "also",  "around", "another",
    "came",   "come",  "work",  "three", "must",   "because", "does",  "part",   "even",
    "place",  "well"};
constexpr uint64_t kWordCount = sizeof(kWords) / sizeof(kWords[0]);

}  // namespace

std::string FillerWords(uint64_t seed, int n) {
  std::string out;
  out.reserve(static_cast<size_t>(n) * 6);
  // splitmix64: a fixed, seedable sequence the same on every platform.
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < n; ++i) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    absl::StrAppend(&out, " ", kWords[z % kWordCount]);
  }
  return out;
}

std::string ShuffleWords(const std::string& filler, uint64_t seed) {
  std::vector<std::string> words = absl::StrSplit(filler, ' ', absl::SkipEmpty());
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 7;
  for (size_t i = words.size(); i > 1; --i) {  // Fisher-Yates on splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::swap(words[i - 1], words[z % i]);
  }
  std::string out;
  for (const std::string& w : words) absl::StrAppend(&out, " ", w);
  return out;
}

absl::StatusOr<BuiltPrompt> BuildPrompt(const TokenCounter& count, const std::string& prefix,
                                        int target, uint64_t seed, int start_words,
                                        int max_counts) {
  std::map<int, int> seen;  // words → tokens
  int counts = 0;
  auto measure = [&](int words) -> absl::StatusOr<int> {
    if (auto it = seen.find(words); it != seen.end()) return it->second;
    ++counts;
    absl::StatusOr<int> tokens = count(prefix + FillerWords(seed, words));
    if (tokens.ok()) seen[words] = *tokens;
    return tokens;
  };
  absl::StatusOr<int> base = prefix.empty() ? absl::StatusOr<int>(0) : measure(0);
  if (!base.ok()) return base.status();
  if (*base > target) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt's prefix alone is ", *base,
                                                   " tokens, more than the ", target, " asked"));
  }
  // Without a known ratio, a short first probe measures it: assuming one token per word could
  // overshoot the model's context by the ratio (a byte-level vocabulary: 5 tokens a word).
  int words = start_words > 0 ? start_words : std::max(1, std::min(16, target - *base));
  int lo_words = 0, lo_tokens = *base;  // the best count below or at the target so far
  while (counts < max_counts) {
    absl::StatusOr<int> tokens = measure(words);
    if (!tokens.ok()) return tokens.status();
    if (*tokens == target) {
      return BuiltPrompt{.text = prefix + FillerWords(seed, words),
                         .filler = FillerWords(seed, words),
                         .tokens = *tokens,
                         .words = words};
    }
    if (*tokens < target && words > lo_words) {
      lo_words = words;
      lo_tokens = *tokens;
    }
    // Secant step through (lo, this) when they differ, else assume the words so far.
    int next;
    if (words != lo_words && *tokens != lo_tokens) {
      double per_word = static_cast<double>(*tokens - lo_tokens) / (words - lo_words);
      next = lo_words + static_cast<int>(std::lround((target - lo_tokens) / per_word));
    } else {
      double per_word = std::max(1e-3, static_cast<double>(*tokens - *base) / words);
      next = words + static_cast<int>(std::lround((target - *tokens) / per_word));
    }
    if (next == words || seen.count(next) > 0) next = words + (*tokens < target ? 1 : -1);
    if (next < 1 || seen.count(next) > 0) break;
    words = next;
  }
  // The seed's next word may be two tokens where one is missing: short words at the end close
  // the last gap, " of" (one token in BPE vocabularies) or "." (one in byte-level ones).
  for (const char* piece : {" of", "."}) {
    if (lo_tokens >= target || target - lo_tokens > 8 || counts >= max_counts) break;
    std::string tail;
    for (int i = lo_tokens; i < target; ++i) tail += piece;
    std::string text = prefix + FillerWords(seed, lo_words) + tail;
    ++counts;
    absl::StatusOr<int> tokens = count(text);
    if (!tokens.ok()) return tokens.status();
    if (*tokens == target) {
      return BuiltPrompt{.text = std::move(text),
                         .filler = FillerWords(seed, lo_words),
                         .tokens = *tokens,
                         .words = lo_words,
                         .tail = tail};
    }
  }
  int closest = lo_tokens;
  for (const auto& [w, t] : seen) {
    if (std::abs(t - target) < std::abs(closest - target)) closest = t;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("could not build a prompt of exactly ", target, " tokens in ", counts,
                   " counts; the closest was ", closest, ". Try another --pp or --depth"));
}

}  // namespace fleet::cli::bench
