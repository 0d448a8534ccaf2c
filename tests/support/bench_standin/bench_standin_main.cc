// fleet-bench-standin: the bench stand-in (bench_standin.h) as a program, so that a group of
// engine `exec` can serve it and `fleet bench GROUP` measures known rates through the
// controller. NOT a language model.
#include <signal.h>

#include <cstdio>

#include "CLI/CLI.hpp"
#include "tests/support/bench_standin/bench_standin.h"

int main(int argc, char** argv) {
  fleet::standin::BenchStandinOptions options{.host = "0.0.0.0"};
  double first_token_ms = 20;
  CLI::App app{
      "fleet-bench-standin: an OpenAI-compatible server with fixed timings for fleet bench's "
      "tests (first token after --first-token-ms plus the uncached prompt tokens over "
      "--prefill-tps, then --decode-tps per request). NOT a language model."};
  app.add_option("--host", options.host, "listen address")->capture_default_str();
  app.add_option("--port", options.port, "listen port")->required()->check(CLI::Range(1, 65535));
  app.add_option("--first-token-ms", first_token_ms, "fixed delay before the first token")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--prefill-tps", options.prefill_tps, "prompt tokens per second")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--decode-tps", options.decode_tps, "generated tokens per second per request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.first_token = absl::Milliseconds(first_token_ms);

  // Blocked before the server's threads start, so only sigwait() below sees them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  absl::StatusOr<std::unique_ptr<fleet::standin::BenchStandin>> server =
      fleet::standin::BenchStandin::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "fleet-bench-standin: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf("serving http://%s:%d (prefill %.0f t/s, decode %.0f t/s)\n", options.host.c_str(),
              (*server)->port(), options.prefill_tps, options.decode_tps);
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop, &signal);
  return 0;
}
