// Built-in log signatures per engine, the recipe's additions, and their sliding-window counts.
#include "launch/signatures.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fleet::engine {
namespace {

LogSignature Fail(std::string pattern, std::string fix) {
  return LogSignature{.pattern = std::move(pattern),
                      .count = 1,
                      .window = absl::Minutes(3),
                      .action = SignatureAction::kFail,
                      .fix = std::move(fix)};
}

LogSignature Restart(std::string pattern, int count, absl::Duration window) {
  return LogSignature{.pattern = std::move(pattern),
                      .count = count,
                      .window = window,
                      .action = SignatureAction::kRestart,
                      .fix = ""};
}

// RDMA memory registration needs RLIMIT_MEMLOCK unlimited in the shard; where it comes from
// depends on the runtime that started the shard.
std::string MemlockFix(const Recipe& recipe) {
  std::string asked;
  for (const UlimitSpec& u : recipe.ulimits) {
    if (u.name == "memlock" && u.soft != std::numeric_limits<uint64_t>::max()) {
      asked = absl::StrCat(" (the recipe asks for ", u.soft, " bytes)");
    }
  }
  if (recipe.runtime == RuntimeKind::kDocker) {
    return absl::StrCat(
        "the container's memlock limit is too low", asked,
        ": set runtime.ulimits.memlock: unlimited in the recipe (SparkFleet then runs docker "
        "with --ulimit memlock=-1:-1), and give dockerd LimitMEMLOCK=infinity in its systemd "
        "unit if it caps containers");
  }
  return absl::StrCat(
      "the shard's memlock limit is too low", asked,
      ": set runtime.ulimits.memlock: unlimited in the recipe and run the agent with "
      "LimitMEMLOCK=infinity in its systemd unit (a shard cannot get more than the agent's "
      "hard limit)");
}

std::vector<LogSignature> BuiltIn(const Recipe& recipe) {
  std::vector<LogSignature> out = {
      Fail("ibv_reg_mr.*Cannot allocate memory", MemlockFix(recipe)),
      Fail("unrecognized arguments: serve",
           "the image's ENTRYPOINT already runs `vllm serve`, so the command doubled it: start "
           "`command` after `serve` (e.g. `{model} --port {port}`), or use an image whose "
           "ENTRYPOINT is a shell"),
      Fail("CUDA out of memory|torch\\.OutOfMemoryError|OutOfMemoryError: CUDA",
           "the model does not fit the GPU memory given to it: lower gpu_memory_utilization or "
           "max_model_len, use more nodes (tensor_parallel), or a smaller quantization"),
      Fail("unknown or invalid runtime name: nvidia",
           "Docker on this node has no NVIDIA runtime: install nvidia-container-toolkit and run "
           "`nvidia-ctk runtime configure --runtime=docker && systemctl restart docker`"),
  };
  if (recipe.engine == "vllm") {
    out.push_back(Restart("EngineDeadError", 1, absl::Minutes(3)));
    out.push_back(Restart("RPC call to sample_tokens timed out", 1, absl::Minutes(3)));
    // vLLM prints it once a minute while a rank waits for the others; one can recover.
    out.push_back(Restart("No available shared memory broadcast block found", 3, absl::Minutes(3)));
  }
  return out;
}

constexpr size_t kLineShown = 300;
constexpr size_t kLongestLine = 64 * 1024;

}  // namespace

std::vector<LogSignature> EffectiveSignatures(const Recipe& recipe) {
  std::vector<LogSignature> out = recipe.health.signatures;
  for (LogSignature& built_in : BuiltIn(recipe)) {
    const bool replaced = std::any_of(out.begin(), out.end(), [&](const LogSignature& s) {
      return s.pattern == built_in.pattern;
    });
    if (!replaced) out.push_back(std::move(built_in));
  }
  return out;
}

SignatureCounter::SignatureCounter(std::vector<LogSignature> signatures) {
  for (LogSignature& s : signatures) {
    // The recipe parser checked every pattern; the built-in ones are fixed above.
    std::regex re(s.pattern);
    watched_.push_back(Watched{.signature = std::move(s), .re = std::move(re)});
  }
}

void SignatureCounter::CountLine(absl::string_view line, absl::Time now) {
  for (Watched& w : watched_) {
    if (!std::regex_search(line.begin(), line.end(), w.re)) continue;
    w.seen.push_back(now);
    w.last_line = std::string(line.substr(0, kLineShown));
  }
}

std::optional<SignatureMatch> SignatureCounter::Fired(absl::Time now) {
  std::optional<SignatureMatch> restart;
  for (Watched& w : watched_) {
    while (!w.seen.empty() && now - w.seen.front() > w.signature.window) w.seen.pop_front();
    if (static_cast<int>(w.seen.size()) < w.signature.count) continue;
    SignatureMatch match{
        .signature = w.signature, .line = w.last_line, .seen = static_cast<int>(w.seen.size())};
    w.seen.clear();
    if (w.signature.action == SignatureAction::kFail) return match;
    if (!restart.has_value()) restart = std::move(match);
  }
  return restart;
}

void SignatureCounter::CountLines(absl::string_view text, bool flush, absl::Time now) {
  partial_.append(text.data(), text.size());
  size_t start = 0;
  for (size_t nl = partial_.find('\n'); nl != std::string::npos; nl = partial_.find('\n', start)) {
    CountLine(absl::string_view(partial_).substr(start, nl - start), now);
    start = nl + 1;
  }
  partial_.erase(0, start);
  // Progress bars redraw with '\r' and never end their line: past this, the rest is a line.
  if (flush || partial_.size() > kLongestLine) {
    if (!partial_.empty()) CountLine(partial_, now);
    partial_.clear();
  }
}

std::optional<SignatureMatch> SignatureCounter::Feed(absl::string_view text, absl::Time now) {
  CountLines(text, /*flush=*/false, now);
  return Fired(now);
}

std::optional<SignatureMatch> SignatureCounter::FeedAll(absl::string_view text, absl::Time now) {
  CountLines(text, /*flush=*/true, now);
  return Fired(now);
}

}  // namespace fleet::engine
