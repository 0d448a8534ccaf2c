// fleet-engine's HTTP edge under load, against the CPU demo's model (recipes/local-demo.yaml's
// shape) served by one fleet-engine process:
//   (a) /health and /v1/models latency with --idle idle keep-alive connections open;
//   (b) --streams concurrent streamed completions: 200s, 429s, resets, and /health meanwhile;
//   (c) the HTTP layer's CPU time per streamed token against the decode step time, both from
//       the same run: per-thread CPU time (schedstat) of the server's threads, which carry
//       only HTTP work (the "http-io" and "http-worker" threads: parsing, SSE encoding, the
//       per-token hand-off and the socket writes), over the tokens streamed; the step time from
//       fleet-engine's own fleet_engine:step_seconds histogram.
// Correctness is checked too: every 200 stream must end with "data: [DONE]" and carry the tokens
// asked for. Run by hand (see README.md), never by ctest.
#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/http/server.h"
#include "common/subprocess.h"

namespace fleet::bench {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

struct Options {
  std::string engine = FLEET_ENGINE_BINARY;
  int port = 18600;
  int idle = 1000;
  int health_requests = 1000;
  int streams = 500;
  int stream_tokens = 64;
  int overhead_rounds = 20;
  int overhead_tokens = 256;
  // Measure a running group's rank 0 (e.g. `fleet up`'s demo group) instead of starting one
  // fleet-engine: its pid (for its threads' CPU time) and its port on 127.0.0.1.
  int attach_pid = 0;
};

// The demo recipe's shape (recipes/local-demo.yaml defaults).
std::vector<std::string> EngineArgv(const Options& options) {
  return {options.engine,
          "serve",
          "--device",
          "cpu",
          "--host",
          "127.0.0.1",
          "--port",
          std::to_string(options.port),
          "--hidden-size",
          "256",
          "--num-layers",
          "4",
          "--num-heads",
          "8",
          "--num-experts",
          "16",
          "--experts-per-token",
          "4",
          "--expert-ffn-size",
          "128",
          "--vocab-size",
          "256",
          "--max-seq-len",
          "512",
          "--max-num-seqs",
          "8"};
}

struct Answer {
  int status = 0;  // 0: no answer (see error)
  std::string body;
  error_code error;
};

// One request on `socket` (already connected), read to its end (chunked or sized).
Answer Exchange(tcp::socket& socket, bhttp::verb verb, const std::string& target,
                const std::string& body) {
  Answer answer;
  bhttp::request<bhttp::string_body> request(verb, target, 11);
  request.set(bhttp::field::host, "127.0.0.1");
  if (!body.empty()) {
    request.set(bhttp::field::content_type, "application/json");
    request.body() = body;
  }
  request.prepare_payload();
  bhttp::write(socket, request, answer.error);
  if (answer.error) return answer;
  boost::beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 << 20);
  bhttp::read(socket, buffer, parser, answer.error);
  if (answer.error) return answer;
  answer.status = parser.get().result_int();
  answer.body = parser.get().body();
  return answer;
}

std::optional<tcp::socket> Connect(asio::io_context& io, int port, error_code* error) {
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), *error);
  if (*error) return std::nullopt;
  return socket;
}

// A fresh connection, one request, as a readiness probe makes it; the wall time in ms.
absl::StatusOr<double> TimedGet(asio::io_context& io, int port, const std::string& target) {
  const absl::Time start = absl::Now();
  error_code error;
  std::optional<tcp::socket> socket = Connect(io, port, &error);
  if (!socket) return absl::UnavailableError(absl::StrCat("connect: ", error.message()));
  Answer answer = Exchange(*socket, bhttp::verb::get, target, "");
  if (answer.status != 200) {
    return absl::InternalError(
        absl::StrCat("GET ", target, ": status ", answer.status, " ", answer.error.message()));
  }
  return absl::ToDoubleMilliseconds(absl::Now() - start);
}

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
  size_t n = 0;
};

Percentiles Summarize(std::vector<double> values) {
  Percentiles p;
  p.n = values.size();
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  p.p50 = values[values.size() / 2];
  p.p99 = values[std::min(values.size() - 1, values.size() * 99 / 100)];
  p.max = values.back();
  return p;
}

std::string Format(const Percentiles& p) {
  return absl::StrCat("n=", p.n, " p50=", absl::StrFormat("%.2f", p.p50),
                      " ms p99=", absl::StrFormat("%.2f", p.p99),
                      " ms max=", absl::StrFormat("%.2f", p.max), " ms");
}

absl::StatusOr<std::vector<double>> GetMany(asio::io_context& io, int port,
                                            const std::string& target, int count) {
  std::vector<double> times;
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<double> ms = TimedGet(io, port, target);
    if (!ms.ok()) return ms.status();
    times.push_back(*ms);
  }
  return times;
}

// A metric's value from /metrics text: the first line that starts with `name` (labels included
// in `name` when needed, e.g. "fleet_engine:step_seconds_sum").
absl::StatusOr<double> Metric(const std::string& text, absl::string_view name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name)) continue;
    absl::string_view rest = line.substr(name.size());
    if (!rest.empty() && rest[0] != ' ' && rest[0] != '{') continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return absl::NotFoundError(absl::StrCat("metric ", name, " not in /metrics"));
}

absl::StatusOr<std::string> Scrape(asio::io_context& io, int port) {
  error_code error;
  std::optional<tcp::socket> socket = Connect(io, port, &error);
  if (!socket) return absl::UnavailableError(error.message());
  Answer answer = Exchange(*socket, bhttp::verb::get, "/metrics", "");
  if (answer.status != 200) return absl::InternalError("GET /metrics failed");
  return answer.body;
}

// Nanoseconds on CPU of the process's threads named `prefix`* (from /proc/PID/task/*/schedstat).
uint64_t ThreadCpuNs(pid_t pid, absl::string_view prefix) {
  uint64_t total = 0;
  std::string task_root = absl::StrCat("/proc/", pid, "/task");
  for (const auto& entry : std::filesystem::directory_iterator(task_root)) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (!absl::StartsWith(name, prefix)) continue;
    std::ifstream schedstat(entry.path() / "schedstat");
    uint64_t on_cpu_ns = 0;
    schedstat >> on_cpu_ns;
    total += on_cpu_ns;
  }
  return total;
}

std::string LoadAverage() {
  std::ifstream file("/proc/loadavg");
  std::string line;
  std::getline(file, line);
  return line;
}

std::string CompletionBody(int max_tokens) {
  return absl::StrCat(R"({"prompt":"bench","stream":true,"max_tokens":)", max_tokens, "}");
}

// A 200 stream is correct when it carries `tokens` text events and ends with [DONE].
bool StreamComplete(const std::string& body, int tokens) {
  int events = 0;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, "data: {") && absl::StrContains(line, "\"finish_reason\":null")) {
      ++events;
    }
  }
  return events == tokens && absl::StrContains(body, "data: [DONE]");
}

int Run(const Options& options) {
  absl::StatusOr<uint64_t> files = http::RaiseOpenFileLimit();
  const uint64_t needed = static_cast<uint64_t>(options.idle + options.streams) + 64;
  if (!files.ok() || *files < needed) {
    std::fprintf(stderr, "http_bench: need %llu open files, have %s; raise `ulimit -n`\n",
                 static_cast<unsigned long long>(needed),
                 files.ok() ? std::to_string(*files).c_str() : files.status().ToString().c_str());
    return 1;
  }
  std::printf("load before start: %s\n", LoadAverage().c_str());
  const std::string log_path = absl::StrCat("/tmp/http_bench_engine_", options.port, ".log");
  std::optional<Process> engine;
  pid_t engine_pid = options.attach_pid;
  if (engine_pid == 0) {
    absl::StatusOr<Process> started = Process::Start(
        {.argv = EngineArgv(options), .output_path = log_path, .die_with_parent = true});
    if (!started.ok()) {
      std::fprintf(stderr, "http_bench: cannot start %s: %s\n", options.engine.c_str(),
                   started.status().ToString().c_str());
      return 1;
    }
    engine = std::move(*started);
    engine_pid = engine->pid();
  } else {
    std::printf("measuring the running rank 0, pid %d, on 127.0.0.1:%d\n", engine_pid,
                options.port);
  }
  asio::io_context io;
  const absl::Time ready_by = absl::Now() + absl::Seconds(60);
  while (!TimedGet(io, options.port, "/health").ok()) {
    if (absl::Now() > ready_by || (engine && !engine->Running())) {
      std::fprintf(stderr, "http_bench: fleet-engine did not become healthy; see %s\n",
                   log_path.c_str());
      return 1;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  int failures = 0;

  // (a) Idle connections, then probes on fresh connections.
  std::vector<tcp::socket> idle;
  for (int i = 0; i < options.idle; ++i) {
    error_code error;
    std::optional<tcp::socket> socket = Connect(io, options.port, &error);
    if (!socket) {
      std::fprintf(stderr, "http_bench: idle connection %d: %s\n", i, error.message().c_str());
      return 1;
    }
    idle.push_back(*std::move(socket));
  }
  absl::StatusOr<std::vector<double>> health =
      GetMany(io, options.port, "/health", options.health_requests);
  absl::StatusOr<std::vector<double>> models = GetMany(io, options.port, "/v1/models", 100);
  if (!health.ok() || !models.ok()) {
    std::fprintf(stderr, "http_bench: probe failed: %s %s\n", health.status().ToString().c_str(),
                 models.status().ToString().c_str());
    return 1;
  }
  // The idle connections must still be served: one request on each of a sample.
  int idle_served = 0, idle_sampled = 0;
  for (size_t i = 0; i < idle.size(); i += std::max<size_t>(1, idle.size() / 50)) {
    ++idle_sampled;
    if (Exchange(idle[i], bhttp::verb::get, "/health", "").status == 200) ++idle_served;
  }
  const Percentiles health_p = Summarize(*health);
  std::printf("(a) %d idle connections open: /health %s [target p99 < 50 ms: %s]\n", options.idle,
              Format(health_p).c_str(), health_p.p99 < 50 ? "met" : "MISSED");
  std::printf("    /v1/models %s; idle connections still served: %d of %d sampled\n",
              Format(Summarize(*models)).c_str(), idle_served, idle_sampled);
  if (health_p.p99 >= 50 || idle_served != idle_sampled) ++failures;
  std::printf("    load: %s\n", LoadAverage().c_str());

  // (b) Concurrent streams, with /health probed meanwhile.
  std::atomic<int> ok{0}, too_many{0}, resets{0}, other{0}, incomplete{0}, retry_after{0};
  std::atomic<bool> streaming{true};
  std::vector<double> health_during;
  std::thread prober([&] {
    asio::io_context probe_io;
    while (streaming.load()) {
      absl::StatusOr<double> ms = TimedGet(probe_io, options.port, "/health");
      if (ms.ok()) health_during.push_back(*ms);
      absl::SleepFor(absl::Milliseconds(10));
    }
  });
  const absl::Time streams_start = absl::Now();
  {
    std::vector<std::thread> clients;
    for (int i = 0; i < options.streams; ++i) {
      clients.emplace_back([&] {
        asio::io_context client_io;
        error_code error;
        std::optional<tcp::socket> socket = Connect(client_io, options.port, &error);
        if (!socket) {
          ++resets;
          return;
        }
        bhttp::request<bhttp::string_body> request(bhttp::verb::post, "/v1/completions", 11);
        request.set(bhttp::field::host, "127.0.0.1");
        request.set(bhttp::field::content_type, "application/json");
        request.body() = CompletionBody(options.stream_tokens);
        request.prepare_payload();
        bhttp::write(*socket, request, error);
        boost::beast::flat_buffer buffer;
        bhttp::response_parser<bhttp::string_body> parser;
        parser.body_limit(64 << 20);
        if (!error) bhttp::read(*socket, buffer, parser, error);
        if (error) {
          ++resets;
          return;
        }
        const int status = parser.get().result_int();
        if (status == 200) {
          ++ok;
          if (!StreamComplete(parser.get().body(), options.stream_tokens)) ++incomplete;
        } else if (status == 429) {
          ++too_many;
          if (parser.get().count(bhttp::field::retry_after) != 0) ++retry_after;
        } else {
          ++other;
        }
      });
    }
    for (std::thread& client : clients) client.join();
  }
  const double streams_s = absl::ToDoubleSeconds(absl::Now() - streams_start);
  streaming = false;
  prober.join();
  const Percentiles during = Summarize(health_during);
  std::printf(
      "(b) %d concurrent streams of %d tokens in %.1f s: %d x 200 (%d incomplete), %d x 429 "
      "(%d with Retry-After), %d other, %d resets [target no resets: %s]\n",
      options.streams, options.stream_tokens, streams_s, ok.load(), incomplete.load(),
      too_many.load(), retry_after.load(), other.load(), resets.load(),
      resets.load() == 0 ? "met" : "MISSED");
  std::printf("    /health meanwhile: %s\n    load: %s\n", Format(during).c_str(),
              LoadAverage().c_str());
  if (resets.load() != 0 || incomplete.load() != 0 || other.load() != 0 ||
      retry_after.load() != too_many.load()) {
    ++failures;
  }
  idle.clear();

  // (c) Overhead per streamed token: max_num_seqs (8) streams at a time, so every step is full
  // and nothing queues.
  absl::StatusOr<std::string> before = Scrape(io, options.port);
  const uint64_t http_ns_before = ThreadCpuNs(engine_pid, "http-");
  for (int round = 0; round < options.overhead_rounds; ++round) {
    std::vector<std::thread> clients;
    for (int i = 0; i < 8; ++i) {
      clients.emplace_back([&] {
        asio::io_context client_io;
        error_code error;
        std::optional<tcp::socket> socket = Connect(client_io, options.port, &error);
        if (!socket) {
          ++failures;
          return;
        }
        Answer answer = Exchange(*socket, bhttp::verb::post, "/v1/completions",
                                 CompletionBody(options.overhead_tokens));
        if (answer.status != 200 || !StreamComplete(answer.body, options.overhead_tokens)) {
          ++failures;
        }
      });
    }
    for (std::thread& client : clients) client.join();
  }
  const uint64_t http_ns = ThreadCpuNs(engine_pid, "http-") - http_ns_before;
  absl::StatusOr<std::string> after = Scrape(io, options.port);
  if (!before.ok() || !after.ok()) {
    std::fprintf(stderr, "http_bench: /metrics scrape failed\n");
    return 1;
  }
  auto delta = [&](absl::string_view name) {
    absl::StatusOr<double> a = Metric(*after, name);
    absl::StatusOr<double> b = Metric(*before, name);
    return a.ok() && b.ok() ? *a - *b : -1;
  };
  const double tokens = delta("vllm:generation_tokens_total");
  const double steps = delta("fleet_engine:step_seconds_count");
  const double step_s = delta("fleet_engine:step_seconds_sum");
  if (tokens <= 0 || steps <= 0) {
    std::fprintf(stderr, "http_bench: no tokens or steps counted in /metrics\n");
    return 1;
  }
  const double step_us = step_s / steps * 1e6;
  const double per_token_us = static_cast<double>(http_ns) / tokens / 1e3;
  const double ratio = per_token_us / step_us;
  std::printf(
      "(c) %.0f tokens in %.0f steps: mean step %.1f us; HTTP threads' CPU %.1f ms = %.2f us "
      "per token = %.2f%% of a step [target < 5%%: %s]\n    load: %s\n",
      tokens, steps, step_us, http_ns / 1e6, per_token_us, ratio * 100,
      ratio < 0.05 ? "met" : "MISSED", LoadAverage().c_str());
  if (ratio >= 0.05) ++failures;

  if (engine) {
    absl::StatusOr<int> stopped = engine->Stop(absl::Seconds(30));
    std::printf("fleet-engine stopped: %s\n", stopped.ok() ? DescribeWaitStatus(*stopped).c_str()
                                                           : stopped.status().ToString().c_str());
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace fleet::bench

int main(int argc, char** argv) {
  fleet::bench::Options options;
  CLI::App app{"http_bench: fleet-engine's HTTP edge on the CPU demo's model (see README.md)"};
  app.add_option("--engine", options.engine, "fleet-engine binary")->capture_default_str();
  app.add_option("--port", options.port, "port for fleet-engine on 127.0.0.1")
      ->capture_default_str();
  app.add_option("--idle", options.idle, "idle connections held open in (a)")
      ->capture_default_str();
  app.add_option("--health-requests", options.health_requests, "/health probes in (a)")
      ->capture_default_str();
  app.add_option("--streams", options.streams, "concurrent streams in (b)")->capture_default_str();
  app.add_option("--stream-tokens", options.stream_tokens, "tokens per stream in (b)")
      ->capture_default_str();
  app.add_option("--overhead-rounds", options.overhead_rounds, "rounds of 8 streams in (c)")
      ->capture_default_str();
  app.add_option("--overhead-tokens", options.overhead_tokens, "tokens per stream in (c)")
      ->capture_default_str();
  app.add_option("--attach-pid", options.attach_pid,
                 "measure this running fleet-engine rank 0 (e.g. fleet up's demo group, with "
                 "--port its port) instead of starting one");
  CLI11_PARSE(app, argc, argv);
  return fleet::bench::Run(options);
}
