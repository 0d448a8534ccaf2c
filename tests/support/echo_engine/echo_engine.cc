// fleet-echo-engine: SparkFleet's stand-in engine for the `exec` adapter (local demo, integration
// tests). Its ranks rendezvous through rank 0's master port like a multi-node vLLM group, and
// rank 0 serves OpenAI-shaped HTTP that echoes the prompt. It is not a language model.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/http/server.h"
#include "common/log.h"
#include "tests/support/echo_engine/echo_api.h"
#include "tests/support/echo_engine/net.h"
#include "tests/support/echo_engine/rendezvous.h"

extern char** environ;

namespace fleet::echo {
namespace {

constexpr char kComponent[] = "echo-engine";
constexpr int kExitUsage = 2;

struct Flags {
  std::string host = "0.0.0.0";
  int port = 8000;
  double rendezvous_timeout_s = 60;
  // Failure modes of real engines, for the restart tests.
  bool hang_when_head_dies = false;  // a worker keeps running, as vLLM's headless ones do
  std::string fail_at_start;         // printed by every rank, which then exits 1
  std::string print_when_ready;      // printed by rank 0 once it serves, `print_count` times
  int print_count = 1;
  double print_interval_s = 0.2;
  uint64_t print_generation = 1;  // only in this generation (0: every one)
  EchoFaults faults;              // a wedged head, a failing /health (echo_api.h)
};

// What the exec adapter tells every rank through its environment.
struct RankEnv {
  int rank = 0;
  int world_size = 1;
  std::string master_addr;
  int master_port = 0;
  std::string group;
  uint64_t generation = 0;
};

// Every path out of the process: threads may still be blocked in accept() or poll(), so it
// flushes what was printed and leaves without running destructors under them.
[[noreturn]] void Exit(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr,
               "fleet-echo-engine: %s\nThe exec engine adapter sets FLEET_RANK, FLEET_WORLD_SIZE, "
               "FLEET_MASTER_ADDR, FLEET_MASTER_PORT, FLEET_GROUP and FLEET_GENERATION; run it "
               "through a SparkFleet recipe or set them by hand.\n",
               message.c_str());
  Exit(kExitUsage);
}

std::string RequireEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) UsageError(absl::StrCat(name, " is not set"));
  return value;
}

template <typename T>
T RequireNumber(const char* name, T min, T max) {
  std::string text = RequireEnv(name);
  T value;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    UsageError(absl::StrCat(name, "=\"", text, "\" is not a number in [", min, ", ", max, "]"));
  }
  return value;
}

RankEnv ReadRankEnv() {
  RankEnv env;
  env.world_size = RequireNumber<int>("FLEET_WORLD_SIZE", 1, 1 << 16);
  env.rank = RequireNumber<int>("FLEET_RANK", 0, env.world_size - 1);
  env.master_addr = RequireEnv("FLEET_MASTER_ADDR");
  env.master_port = RequireNumber<int>("FLEET_MASTER_PORT", 1, 65535);
  env.group = RequireEnv("FLEET_GROUP");
  env.generation = RequireNumber<uint64_t>("FLEET_GENERATION", 0, UINT64_MAX);
  return env;
}

std::string Hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

int RunHead(const Flags& flags, const RankEnv& env, const Hello& self) {
  absl::StatusOr<UniqueFd> master = ListenTcp(env.master_addr, env.master_port, 64);
  if (!master.ok()) {
    Log(LogLevel::kError, kComponent, "cannot open the master port",
        {{"error", master.status().message()}});
    return 1;
  }
  Log(LogLevel::kInfo, kComponent, "waiting for workers",
      {{"master", absl::StrCat(env.master_addr, ":", env.master_port)},
       {"workers", absl::StrCat(env.world_size - 1)}});
  Head head(*std::move(master), self, env.world_size);
  absl::StatusOr<std::vector<Hello>> hellos =
      head.AwaitWorkers(absl::Now() + absl::Seconds(flags.rendezvous_timeout_s));
  if (!hellos.ok()) {
    Log(LogLevel::kError, kComponent, "rendezvous failed", {{"error", hellos.status().message()}});
    return 1;
  }
  // HTTP opens only once every rank is in, as a vLLM head's API does: readiness means the
  // whole group is up.
  static EchoApi api(*hellos, flags.faults);
  // Kept for the life of the process: only Exit() ends it.
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
      // One request per connection, as the echo engine always answered: its tests' client
      // reads each answer until the connection closes.
      http::HttpServer::Start({.host = flags.host,
                               .port = flags.port,
                               .inline_paths = {"/health", "/metrics"},
                               .keep_alive = false},
                              [](const http::HttpRequest& r) { return api.Handle(r); });
  if (!server.ok()) {
    Log(LogLevel::kError, kComponent, "cannot open the HTTP port",
        {{"error", server.status().message()}});
    return 1;
  }
  std::printf("rank 0 rendezvous complete: %d rank(s); serving http://%s:%d\n", env.world_size,
              flags.host.c_str(), flags.port);
  std::fflush(stdout);
  if (!flags.print_when_ready.empty() &&
      (flags.print_generation == 0 || flags.print_generation == env.generation)) {
    // A wedged vLLM head repeats its warning while /health stays 200.
    std::thread([text = flags.print_when_ready, count = flags.print_count,
                 interval = absl::Seconds(flags.print_interval_s)] {
      for (int i = 0; i < count; ++i) {
        absl::SleepFor(interval);
        std::printf("%s\n", text.c_str());
        std::fflush(stdout);
      }
    }).detach();
  }
  absl::Status lost = head.WatchWorkers();
  Log(LogLevel::kError, kComponent, "group broken, exiting", {{"error", lost.message()}});
  return 1;
}

int RunWorker(const Flags& flags, const RankEnv& env, const Hello& self) {
  absl::StatusOr<UniqueFd> head = JoinHead(env.master_addr, env.master_port, self,
                                           absl::Now() + absl::Seconds(flags.rendezvous_timeout_s));
  if (!head.ok()) {
    Log(LogLevel::kError, kComponent, "rendezvous failed",
        {{"rank", absl::StrCat(env.rank)}, {"error", head.status().message()}});
    return 1;
  }
  std::printf("rank %d rendezvous complete\n", env.rank);
  std::fflush(stdout);
  // Like a vLLM worker, a rank whose head died has nothing left to do: it fails, and
  // SparkFleet restarts the group.
  AwaitClose(head->get());
  Log(LogLevel::kError, kComponent, "head connection lost", {{"rank", absl::StrCat(env.rank)}});
  if (flags.hang_when_head_dies) {
    // vLLM's headless workers stay in their collective forever, holding the GPU, until
    // someone kills them; only SIGTERM/SIGINT (main's sigwait) end this one.
    while (true) absl::SleepFor(absl::Hours(1));
  }
  return 1;
}

int Main(int argc, char** argv) {
  Flags flags;
  CLI::App app{
      "fleet-echo-engine: SparkFleet's test engine. NOT a language model: rank 0 serves an "
      "OpenAI-compatible API (/health, /v1/models, /v1/completions, /v1/chat/completions) that "
      "echoes the prompt back, and GET /ranks with every rank's environment. Ranks rendezvous "
      "through rank 0's master port like a multi-node vLLM group; configured by FLEET_RANK, "
      "FLEET_WORLD_SIZE, FLEET_MASTER_ADDR, FLEET_MASTER_PORT, FLEET_GROUP, FLEET_GENERATION."};
  app.add_option("--host", flags.host, "HTTP listen address (rank 0)")->capture_default_str();
  app.add_option("--port", flags.port, "HTTP port (rank 0)")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  app.add_option("--rendezvous-timeout", flags.rendezvous_timeout_s,
                 "seconds to wait for every rank to join")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--hang-when-head-dies", flags.hang_when_head_dies,
               "a worker whose head died keeps running (as vLLM's headless workers do)");
  app.add_option("--fail-at-start", flags.fail_at_start,
                 "print this line on every rank, then exit 1 (an engine that cannot start)");
  app.add_option("--print-when-ready", flags.print_when_ready,
                 "rank 0 prints this line once it serves (a log signature)");
  app.add_option("--print-count", flags.print_count, "how many times")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--print-interval", flags.print_interval_s, "seconds between two prints")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--print-generation", flags.print_generation,
                 "print only in this generation (0: in every one)")
      ->capture_default_str();
  app.add_option("--wedge-on-prompt", flags.faults.wedge_on_prompt,
                 "a completion whose prompt contains this is answered, then rank 0 is wedged: "
                 "every later completion hangs while /health stays 200 (a wedged vLLM head)");
  app.add_option("--unhealthy-on-prompt", flags.faults.unhealthy_on_prompt,
                 "a completion whose prompt contains this turns /health to 503");
  CLI11_PARSE(app, argc, argv);

  const RankEnv env = ReadRankEnv();
  // Blocked before any thread starts so every thread inherits the mask and only sigwait()
  // below sees SIGTERM and SIGINT.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const Hello self{.group = env.group,
                   .rank = env.rank,
                   .generation = env.generation,
                   .hostname = Hostname(),
                   .env = RendezvousEnv(environ)};
  std::printf("rank %d env %s\n", env.rank, FormatEnv(self.env).c_str());
  std::fflush(stdout);
  if (!flags.fail_at_start.empty()) {
    std::printf("%s\n", flags.fail_at_start.c_str());
    Exit(1);
  }

  std::thread([&flags, &env, &self] {
    Exit(env.rank == 0 ? RunHead(flags, env, self) : RunWorker(flags, env, self));
  }).detach();

  int signo = 0;
  while (sigwait(&stop_signals, &signo) != 0) {
  }
  Log(LogLevel::kInfo, kComponent, "stopping",
      {{"rank", absl::StrCat(env.rank)}, {"signal", strsignal(signo)}});
  // Exiting closes the master and HTTP listeners and every connection at once; workers see
  // their head connection end.
  Exit(0);
}

}  // namespace
}  // namespace fleet::echo

int main(int argc, char** argv) { return fleet::echo::Main(argc, argv); }
