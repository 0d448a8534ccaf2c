// The `fleet` command: the CLI of SparkFleet, and the entry point of its daemons
// (`fleet controller`, `fleet agent`). Flags are defined here and nowhere else.
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "agent/agent_server.h"
#include "cli/config.h"
#include "cli/controller_api.h"
#include "cli/local_cluster.h"
#include "cli/output.h"
#include "common/log.h"
#include "common/version.h"
#include "controller/controller_server.h"

namespace fleet::cli {
namespace {

// A duration flag such as "1s", "500ms", "2m".
absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& name, const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, " \"", text, "\" is not a duration; write it like 500ms, 1s or 2m"));
  }
  return d;
}

// Blocks the stop signals in this thread and every thread started after, so the daemon's main
// thread can wait for them with sigwait and shut down in order.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int Fail(const absl::Status& status) {
  std::cerr << "fleet: error: " << status.message() << std::endl;
  return 1;
}

std::string SelfExecutable() {
  char path[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, static_cast<size_t>(n)) : "fleet";
}

struct ControllerFlags {
  std::string state_dir = "/var/lib/fleet";
  std::string listen = "0.0.0.0:7100";
  std::string heartbeat_period = "1s";
  std::string suspect_after = "3s";
  std::string lost_after = "5s";
};

int RunController(const ControllerFlags& flags) {
  controller::ControllerOptions options;
  options.state_dir = flags.state_dir;
  options.listen = flags.listen;
  options.transport = PlaintextTransport();
  for (auto [name, text, field] :
       {std::tuple{"heartbeat-period", &flags.heartbeat_period, &options.registry.heartbeat_period},
        std::tuple{"suspect-after", &flags.suspect_after, &options.registry.suspect_after},
        std::tuple{"lost-after", &flags.lost_after, &options.registry.lost_after}}) {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag(name, *text);
    if (!d.ok()) return Fail(d.status());
    *field = *d;
  }
  sigset_t stop = BlockStopSignals();
  absl::StatusOr<std::unique_ptr<controller::ControllerServer>> server =
      controller::ControllerServer::Start(options);
  if (!server.ok()) return Fail(server.status());
  int sig = 0;
  sigwait(&stop, &sig);
  Log(LogLevel::kInfo, "controller", "stopping", {{"signal", ::strsignal(sig)}});
  (*server)->Shutdown();
  return 0;
}

int RunAgent(agent::AgentOptions options) {
  options.transport = PlaintextTransport();
  sigset_t stop = BlockStopSignals();
  absl::StatusOr<std::unique_ptr<agent::AgentServer>> server =
      agent::AgentServer::Start(std::move(options));
  if (!server.ok()) return Fail(server.status());
  int sig = 0;
  sigwait(&stop, &sig);
  Log(LogLevel::kInfo, "agent", "stopping", {{"signal", ::strsignal(sig)}});
  (*server)->Shutdown();
  return 0;
}

int RunNodes(const std::string& controller_flag, const std::string& output) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(output);
  if (!format.ok()) return Fail(format.status());
  absl::StatusOr<CliConfig> config = ResolveConfig(controller_flag);
  if (!config.ok()) return Fail(config.status());
  absl::StatusOr<v1::ListNodesResponse> nodes =
      ListNodes(*config, *PlaintextTransport(), absl::Seconds(5));
  if (!nodes.ok()) return Fail(nodes.status());
  std::cout << RenderNodes(*nodes, *format);
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"fleet: run a tensor/expert-parallel serving group across DGX Sparks", "fleet"};
  // At most one command; none given is reported after parsing, so that an unknown word is
  // named as such ("The following arguments were not expected: frobnicate").
  app.require_subcommand(0, 1);
  app.fallthrough();
  std::string controller_flag;
  std::string output;
  app.add_option("--controller", controller_flag,
                 "controller HOST:PORT (default: $FLEET_CONFIG, ~/.config/fleet/config.yaml, "
                 "or the last `fleet up` cluster)");
  app.add_option("-o,--output", output, "output format: table, wide, json, yaml");

  ControllerFlags cflags;
  CLI::App* controller = app.add_subcommand("controller", "run the controller daemon");
  controller->add_option("--state-dir", cflags.state_dir, "state directory")->capture_default_str();
  controller->add_option("--listen", cflags.listen, "gRPC listen HOST:PORT (port 0: any free)")
      ->capture_default_str();
  controller
      ->add_option("--heartbeat-period", cflags.heartbeat_period, "heartbeat period told to agents")
      ->capture_default_str();
  controller
      ->add_option("--suspect-after", cflags.suspect_after, "silence after which a node is Suspect")
      ->capture_default_str();
  controller->add_option("--lost-after", cflags.lost_after, "silence after which a node is Lost")
      ->capture_default_str();

  agent::AgentOptions aopts;
  aopts.state_dir = "/var/lib/fleet-agent";
  CLI::App* agent = app.add_subcommand("agent", "run the node agent daemon");
  agent->add_option("--controller", aopts.controller, "controller HOST:PORT")->required();
  agent->add_option("--state-dir", aopts.state_dir, "state directory (keeps the node id)")
      ->capture_default_str();
  agent->add_option("--name", aopts.name, "node name (default: hostname)");
  agent->add_option("--listen", aopts.listen, "Agent service listen HOST:PORT (port 0: any free)")
      ->capture_default_str();
  agent->add_option("--advertise", aopts.advertise,
                    "HOST[:PORT] the controller reaches this agent at (default: the listen host)");
  agent->add_option("--root", aopts.root, "root directory the probes read (for recorded trees)")
      ->capture_default_str();

  CLI::App* nodes = app.add_subcommand("nodes", "list the nodes the controller knows");
  CLI::App* get = app.add_subcommand("get", "list resources (kubectl style)");
  get->require_subcommand(1);
  CLI::App* get_nodes = get->add_subcommand("nodes", "list the nodes the controller knows");
  get_nodes->alias("node");

  UpOptions up_opts;
  up_opts.dir = absl::StrCat(StateHome(), "/local");
  std::string up_timeout = "30s";
  CLI::App* up = app.add_subcommand("up", "start a local cluster on this machine");
  up->add_option("--nodes", up_opts.nodes, "number of agents")->capture_default_str();
  up->add_option("--dir", up_opts.dir, "cluster directory")->capture_default_str();
  up->add_flag("--detach,-d", up_opts.detach, "return once ready and leave it running");
  up->add_option("--timeout", up_timeout, "time to reach Ready")->capture_default_str();

  std::string down_dir = absl::StrCat(StateHome(), "/local");
  CLI::App* down = app.add_subcommand("down", "stop a local cluster started with --detach");
  down->add_option("--dir", down_dir, "cluster directory")->capture_default_str();

  CLI::App* version = app.add_subcommand("version", "print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (*controller) return RunController(cflags);
  if (*agent) return RunAgent(std::move(aopts));
  if (*nodes || *get_nodes) return RunNodes(controller_flag, output);
  if (*up) {
    absl::StatusOr<absl::Duration> timeout = ParseDurationFlag("timeout", up_timeout);
    if (!timeout.ok()) return Fail(timeout.status());
    up_opts.timeout = *timeout;
    up_opts.fleet_binary = SelfExecutable();
    BlockStopSignals();
    absl::Status st = RunUp(up_opts, std::cout);
    return st.ok() ? 0 : Fail(st);
  }
  if (*down) {
    absl::Status st = RunDown(down_dir, std::cout);
    return st.ok() ? 0 : Fail(st);
  }
  if (*version) {
    std::cout << "fleet " << kVersion << "\n";
    return 0;
  }
  std::cerr << "fleet: error: no command given; see `fleet --help`" << std::endl;
  return 2;
}

}  // namespace
}  // namespace fleet::cli

int main(int argc, char** argv) { return fleet::cli::Main(argc, argv); }
