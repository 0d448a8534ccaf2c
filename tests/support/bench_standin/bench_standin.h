// A stand-in OpenAI-compatible server with fixed timings, for testing `fleet bench`: a prompt's
// tokens are its space-separated words plus one (a BOS); the first token comes `first_token`
// plus the uncached prompt tokens over `prefill_tps` after the request, then one token each
// 1/`decode_tps`, per request whatever the concurrency. A prompt's longest word prefix shared
// with an earlier prompt counts as cached (a prefix cache), so a context loaded first is not
// prefilled again.
//
// Example:
//   ASSIGN_OR_RETURN(auto server, BenchStandin::Start({.prefill_tps = 5000, .decode_tps = 200}));
//   ... http://127.0.0.1:<server->port()>/v1/completions ...
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/http/server.h"

namespace fleet::standin {

struct BenchStandinOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  absl::Duration first_token = absl::Milliseconds(20);
  double prefill_tps = 5000;
  double decode_tps = 200;
  bool tokenize = true;          // answer POST /tokenize (as vLLM); false: 404, as fleet-engine
  int max_concurrent = 64;       // one more completion at once gets 429
  int max_completion = 1 << 20;  // a stream stops after this many tokens, as at an EOS
};

class BenchStandin {
 public:
  static absl::StatusOr<std::unique_ptr<BenchStandin>> Start(BenchStandinOptions options);

  int port() const { return server_->port(); }
  std::string url() const;
  // The prompt token counts of every completion served, in arrival order.
  std::vector<int> prompt_tokens() const;

 private:
  explicit BenchStandin(BenchStandinOptions options) : options_(options) {}
  http::HttpResponse Handle(const http::HttpRequest& request);
  // Tokens of `words` not in the prefix cache; remembers `words`.
  int Uncached(const std::vector<std::string>& words);

  const BenchStandinOptions options_;
  mutable absl::Mutex mu_;
  std::vector<std::vector<std::string>> seen_ ABSL_GUARDED_BY(mu_);
  std::vector<int> prompt_tokens_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<http::HttpServer> server_;  // last: stopped first, while the state lives
};

}  // namespace fleet::standin
