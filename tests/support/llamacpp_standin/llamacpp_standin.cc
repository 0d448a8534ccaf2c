// Stand-ins for llama.cpp's `llama-server` and `rpc-server` (Debian 12 packages no llama.cpp),
// built twice under those names beside `fleet` so the agents run them as they would the real
// programs. Each checks the flags SparkFleet's llamacpp adapter gives it and refuses, as the
// real one would or as a safe deployment must, what is wrong:
//   rpc-server --host ADDR --port P: ADDR must be one address, never a wildcard (rpc-server has
//     no authentication); it then listens there and keeps every connection, as rpc-server does.
//   llama-server -m MODEL --host H --port P --metrics [--rpc A:P,B:P]: connects to every
//     rpc-server first and exits 1 naming the one that refused (llama.cpp fails the same way),
//     then serves /health, /v1/models, /v1/completions and /metrics.
// Each prints the argv it got and "flags checked" so a test reads what ran from the shard's log.
// It is not llama.cpp: completions echo the prompt.
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/host_port.h"
#include "common/http/server.h"
#include "nlohmann/json.hpp"
#include "tests/support/echo_engine/net.h"

namespace fleet::standin {
namespace {

// The program's flags as "--name value" pairs; a flag without a value maps to "". InvalidArgument
// for a word that is neither a flag nor a flag's value.
absl::StatusOr<std::map<std::string, std::string>> ParseFlags(
    const std::vector<std::string>& args, const std::vector<std::string>& switches) {
  std::map<std::string, std::string> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& word = args[i];
    if (word.empty() || word[0] != '-') {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", word, "\""));
    }
    const bool is_switch = std::find(switches.begin(), switches.end(), word) != switches.end();
    if (is_switch) {
      flags[word] = "";
    } else if (i + 1 < args.size()) {
      flags[word] = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(word, " needs a value"));
    }
  }
  return flags;
}

int Refuse(const std::string& program, const std::string& why) {
  std::fprintf(stderr, "stand-in %s: %s\n", program.c_str(), why.c_str());
  return 2;
}

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
}

int RpcServer(const std::vector<std::string>& args) {
  absl::StatusOr<std::map<std::string, std::string>> flags = ParseFlags(args, {});
  if (!flags.ok()) return Refuse("rpc-server", std::string(flags.status().message()));
  if (flags->size() != 2 || !flags->contains("--host") || !flags->contains("--port")) {
    return Refuse("rpc-server", "expected exactly --host ADDR --port P");
  }
  const std::string host = flags->at("--host");
  int port = 0;
  if (IsWildcard(host)) {
    return Refuse("rpc-server",
                  "refusing to bind every interface: rpc-server has no "
                  "authentication, give it the fabric address");
  }
  if (!absl::SimpleAtoi(flags->at("--port"), &port) || port < 1 || port > 65535) {
    return Refuse("rpc-server", absl::StrCat("bad --port ", flags->at("--port")));
  }
  absl::StatusOr<UniqueFd> listener = echo::ListenTcp(host, port, 16);
  if (!listener.ok()) return Refuse("rpc-server", std::string(listener.status().message()));
  std::printf("rpc-server %s: flags checked; listening on %s\n", absl::StrJoin(args, " ").c_str(),
              JoinHostPort(host, static_cast<uint16_t>(port)).c_str());
  std::fflush(stdout);
  std::vector<int> kept;
  while (true) {
    const int fd = ::accept(listener->get(), nullptr, nullptr);
    if (fd >= 0) kept.push_back(fd);  // held open, as a backend connection is
  }
}

int LlamaServer(const std::vector<std::string>& args) {
  absl::StatusOr<std::map<std::string, std::string>> flags =
      ParseFlags(args, {"--metrics", "--jinja"});
  if (!flags.ok()) return Refuse("llama-server", std::string(flags.status().message()));
  for (const char* required : {"-m", "--host", "--port", "--metrics"}) {
    if (!flags->contains(required)) {
      return Refuse("llama-server", absl::StrCat("missing ", required));
    }
  }
  int port = 0;
  if (!absl::SimpleAtoi(flags->at("--port"), &port) || port < 1 || port > 65535) {
    return Refuse("llama-server", absl::StrCat("bad --port ", flags->at("--port")));
  }
  std::vector<UniqueFd> backends;
  if (auto rpc = flags->find("--rpc"); rpc != flags->end()) {
    for (absl::string_view server : absl::StrSplit(rpc->second, ',')) {
      absl::StatusOr<HostPort> address = ParseHostPort(server);
      if (!address.ok()) return Refuse("llama-server", std::string(address.status().message()));
      absl::StatusOr<UniqueFd> connection =
          echo::ConnectTcp(address->host, address->port, absl::Now() + absl::Seconds(5));
      if (!connection.ok()) {
        std::fprintf(stderr, "failed to connect to rpc server %s: %s\n",
                     std::string(server).c_str(),
                     std::string(connection.status().message()).c_str());
        return 1;
      }
      backends.push_back(*std::move(connection));
    }
  }
  const std::string model = flags->at("-m");
  auto handle = [model, backends = backends.size()](const http::HttpRequest& r) {
    if (r.path == "/health") return http::HttpResponse{.body = R"({"status":"ok"})"};
    if (r.path == "/v1/models") {
      return http::HttpResponse{
          .body = nlohmann::json{{"object", "list"}, {"data", {{{"id", model}}}}}.dump()};
    }
    if (r.path == "/metrics") {
      return http::HttpResponse{
          .body = absl::StrCat("# TYPE llamacpp:rpc_backends gauge\nllamacpp:rpc_backends ",
                               backends, "\n"),
          .content_type = "text/plain; version=0.0.4"};
    }
    if (r.path == "/v1/completions" && r.method == "POST") {
      const nlohmann::json request = nlohmann::json::parse(r.body, nullptr, false);
      const std::string prompt =
          request.is_object() ? request.value("prompt", std::string()) : std::string();
      return http::HttpResponse{.body =
                                    nlohmann::json{{"object", "text_completion"},
                                                   {"model", model},
                                                   {"choices", {{{"index", 0}, {"text", prompt}}}}}
                                        .dump()};
    }
    return http::JsonError(404, "not found");
  };
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
      http::HttpServer::Start({.host = flags->at("--host"), .port = port}, handle);
  if (!server.ok()) return Refuse("llama-server", std::string(server.status().message()));
  std::printf("llama-server %s: flags checked; %zu rpc backend(s); serving %s\n",
              absl::StrJoin(args, " ").c_str(), backends.size(),
              JoinHostPort(flags->at("--host"), static_cast<uint16_t>(port)).c_str());
  std::fflush(stdout);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  int signo = 0;
  while (sigwait(&stop, &signo) != 0) {
  }
  return 0;
}

int Main(int argc, char** argv) {
  // Signals are waited for, not handled: blocked before the server's threads start.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::string program = argv[0];
  program = program.substr(program.rfind('/') + 1);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (program == "rpc-server") {
    // Nothing to drain: the default action of SIGTERM ends it.
    pthread_sigmask(SIG_UNBLOCK, &stop, nullptr);
    return RpcServer(args);
  }
  if (program == "llama-server") return LlamaServer(args);
  return Refuse(program, "run me as llama-server or rpc-server");
}

}  // namespace
}  // namespace fleet::standin

int main(int argc, char** argv) { return fleet::standin::Main(argc, argv); }
