// The `fleet` command: the CLI of SparkFleet, and the entry point of its daemons
// (`fleet controller`, `fleet agent`). Flags are defined here and nowhere else.
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <iostream>
#include <string>
#include <tuple>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/agent_server.h"
#include "cli/bench/bench_command.h"
#include "cli/bench/history.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "cli/export_commands.h"
#include "cli/fabric_commands.h"
#include "cli/group_commands.h"
#include "cli/heal_commands.h"
#include "cli/health_commands.h"
#include "cli/local_cluster.h"
#include "cli/probe_commands.h"
#include "cli/service_commands.h"
#include "cli/stage_commands.h"
#include "common/files.h"
#include "common/log.h"
#include "common/version.h"
#include "controller/controller_server.h"
#include "grpc/support/log.h"
#include "launch/docker_run.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {
namespace {

// Blocks the stop signals in this thread and every thread started after, so the daemon's main
// thread can wait for them and shut down in order.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

std::string SelfExecutable() {
  char path[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, static_cast<size_t>(n)) : "fleet";
}

// The controller's config file: a static list of nodes to probe and adopt.
//   nodes:
//     - {name: spark-1, address: 192.168.100.11}
absl::StatusOr<std::vector<std::string>> LoadStaticNodes(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::vector<std::string> addresses;
  try {
    YAML::Node root = YAML::Load(*text);
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      if (key != "nodes") {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", kv.first.Mark().line + 1,
                                                       ": unknown key `", key,
                                                       "`; the known key is `nodes`"));
      }
      for (const YAML::Node& node : kv.second) {
        if (!node["address"]) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ":", node.Mark().line + 1, ": a node needs `address: IPV4` (and a name)"));
        }
        addresses.push_back(node["address"].as<std::string>());
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  return addresses;
}

struct ControllerFlags {
  std::string state_dir = "/var/lib/fleet";
  std::string listen = "0.0.0.0:7100";
  std::string advertise;
  std::string admin_config;
  std::string config;
  std::string heartbeat_period = "1s";
  std::string suspect_after = "3s";
  std::string lost_after = "5s";
  std::string node_cert_validity = "720h";
  bool auto_adopt = false;
  uint16_t discovery_port = 7109;
  std::string metrics_listen;
};

int RunController(const ControllerFlags& flags) {
  controller::ControllerOptions options;
  options.state_dir = flags.state_dir;
  options.listen = flags.listen;
  options.advertise = flags.advertise;
  options.admin_config = flags.admin_config.empty() ? absl::StrCat(flags.state_dir, "/admin.yaml")
                                                    : flags.admin_config;
  options.discovery_port = flags.discovery_port;
  options.metrics_listen = flags.metrics_listen;
  if (flags.auto_adopt) {
    options.auto_adopt_period = absl::Seconds(2);
    options.auto_adopt_fabric = true;
  }
  for (auto [name, text, field] :
       {std::tuple{"heartbeat-period", &flags.heartbeat_period, &options.registry.heartbeat_period},
        std::tuple{"suspect-after", &flags.suspect_after, &options.registry.suspect_after},
        std::tuple{"lost-after", &flags.lost_after, &options.registry.lost_after},
        std::tuple{"node-cert-validity", &flags.node_cert_validity, &options.node_cert_validity}}) {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag(name, *text);
    if (!d.ok()) return Fail(std::string(d.status().message()));
    *field = *d;
  }
  if (!flags.config.empty()) {
    absl::StatusOr<std::vector<std::string>> nodes = LoadStaticNodes(flags.config);
    if (!nodes.ok()) return Fail(std::string(nodes.status().message()));
    options.static_nodes = *std::move(nodes);
    if (options.auto_adopt_period == absl::ZeroDuration()) {
      options.auto_adopt_period = absl::Seconds(2);
    }
  }
  sigset_t stop = BlockStopSignals();
  absl::StatusOr<std::unique_ptr<controller::ControllerServer>> server =
      controller::ControllerServer::Start(options);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  int sig = 0;
  sigwait(&stop, &sig);
  Log(LogLevel::kInfo, "controller", "stopping", {{"signal", ::strsignal(sig)}});
  (*server)->Shutdown();
  return 0;
}

int RunAgent(agent::AgentOptions options, const std::string& join_file) {
  // The token comes from a file or the environment, never the command line, where `ps` shows it.
  if (!join_file.empty()) {
    absl::StatusOr<std::string> token = ReadFileToString(join_file);
    if (!token.ok()) return Fail(absl::StrCat("--join-file: ", token.status().message()));
    options.join_token = std::string(absl::StripAsciiWhitespace(*token));
  } else if (const char* env = std::getenv("FLEET_JOIN_TOKEN"); env != nullptr) {
    options.join_token = std::string(absl::StripAsciiWhitespace(env));
    ::unsetenv("FLEET_JOIN_TOKEN");  // not inherited by anything the agent starts
  }
  sigset_t stop = BlockStopSignals();
  absl::StatusOr<std::unique_ptr<agent::AgentServer>> server =
      agent::AgentServer::Start(std::move(options));
  if (!server.ok()) return Fail(std::string(server.status().message()));
  const timespec tick = {0, 200'000'000};
  while (true) {
    int sig = ::sigtimedwait(&stop, nullptr, &tick);
    if (sig > 0) {
      Log(LogLevel::kInfo, "agent", "stopping", {{"signal", ::strsignal(sig)}});
      (*server)->Shutdown();
      return 0;
    }
    if (std::optional<absl::Status> fatal = (*server)->fatal_error()) {
      (*server)->Shutdown();
      return Fail(std::string(fatal->message()));
    }
  }
}

// gRPC's own log lines: daemons write them in our format; the CLI drops them, since every
// failure reaches the user as one `fleet: error:` line with the fix.
void RouteGrpcLogs(bool daemon) {
  if (!daemon) {
    gpr_set_log_function(+[](gpr_log_func_args*) {});
    return;
  }
  gpr_set_log_function(+[](gpr_log_func_args* args) {
    LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kWarning
                     : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                               : LogLevel::kDebug;
    Log(level, "grpc", args->message, {{"at", absl::StrCat(args->file, ":", args->line)}});
  });
}

int Main(int argc, char** argv) {
  CLI::App app{"fleet: run a tensor/expert-parallel serving group across DGX Sparks", "fleet"};
  // At most one command; none given is reported after parsing, so that an unknown word is
  // named as such ("The following arguments were not expected: frobnicate").
  app.require_subcommand(0, 1);
  app.fallthrough();
  Globals g;
  app.add_option("--controller", g.controller,
                 "controller HOST:PORT (default: from $FLEET_CONFIG, ~/.config/fleet/config.yaml, "
                 "/var/lib/fleet/admin.yaml, or the last `fleet up` cluster)");
  app.add_option("-o,--output", g.output, "output format: table, wide, json, yaml");

  ControllerFlags cflags;
  CLI::App* controller = app.add_subcommand("controller", "run the controller daemon");
  controller->add_option("--state-dir", cflags.state_dir, "state directory")->capture_default_str();
  controller->add_option("--listen", cflags.listen, "gRPC listen HOST:PORT (port 0: any free)")
      ->capture_default_str();
  controller->add_option("--advertise", cflags.advertise,
                         "HOST:PORT adopted agents connect to (default: the listen address)");
  controller->add_option("--admin-config", cflags.admin_config,
                         "where to write the CLI's admin config (default: STATE_DIR/admin.yaml)");
  controller->add_option("--config", cflags.config,
                         "YAML file with a static node list (nodes: [{name, address}])");
  controller
      ->add_option("--heartbeat-period", cflags.heartbeat_period, "heartbeat period told to agents")
      ->capture_default_str();
  controller
      ->add_option("--suspect-after", cflags.suspect_after, "silence after which a node is Suspect")
      ->capture_default_str();
  controller->add_option("--lost-after", cflags.lost_after, "silence after which a node is Lost")
      ->capture_default_str();
  controller
      ->add_option("--node-cert-validity", cflags.node_cert_validity,
                   "lifetime of node certificates (renewed at two thirds)")
      ->capture_default_str();
  controller->add_flag("--auto-adopt", cflags.auto_adopt,
                       "probe every 2 s and adopt agents that prove a join token");
  controller->add_option("--discovery-port", cflags.discovery_port, "UDP port agents answer on")
      ->capture_default_str();
  controller->add_option("--metrics-listen", cflags.metrics_listen,
                         "HOST:PORT of the read-only Prometheus endpoint, e.g. 0.0.0.0:9100 "
                         "(port 0: any free; default: off)");

  agent::AgentOptions aopts;
  aopts.state_dir = engine::kAgentDefaultStateDir;
  std::string join_file;
  CLI::App* agent = app.add_subcommand("agent", "run the node agent daemon");
  agent->add_option("--controller", aopts.controller,
                    "controller HOST:PORT (default: the last one joined, or wait for discovery)");
  agent->add_option("--join-file", join_file,
                    "file holding the join token (or set FLEET_JOIN_TOKEN)");
  agent->add_option("--state-dir", aopts.state_dir, "state directory (node id, certificate)")
      ->capture_default_str();
  agent->add_option("--name", aopts.name, "node name (default: hostname)");
  agent->add_option("--listen", aopts.listen, "Agent service listen HOST:PORT (port 0: any free)")
      ->capture_default_str();
  agent->add_option("--advertise", aopts.advertise,
                    "HOST[:PORT] the controller reaches this agent at (default: the listen host)");
  agent
      ->add_option("--discovery-listen", aopts.discovery_listen,
                   "UDP HOST:PORT answering discovery probes (empty: off)")
      ->capture_default_str();
  agent->add_option("--root", aopts.root, "root directory the probes read (for recorded trees)")
      ->capture_default_str();
  agent->add_option("--metrics-listen", aopts.metrics_listen,
                    "HOST:PORT of the read-only Prometheus endpoint, e.g. 0.0.0.0:9101 "
                    "(port 0: any free; default: off)");
  // The staging tests' hooks (agent/stage/stage_endpoints.h), hidden from --help.
  agent->add_option("--stage-test-corrupt-chunks", aopts.stage_test_corrupt_chunks)->group("");
  agent->add_option("--stage-test-scan-chunk-ms", aopts.stage_test_scan_chunk_ms)->group("");
  agent->add_option("--stage-prefix", aopts.stage_prefix,
                    "directory that `fleet stage` destinations are written under (default: none; "
                    "`fleet up` gives each local agent its own)");

  CLI::App* nodes = app.add_subcommand("nodes", "list the nodes the controller knows");
  CLI::App* get = app.add_subcommand("get", "list resources (kubectl style)");
  get->require_subcommand(1);
  CLI::App* get_nodes = get->add_subcommand("nodes", "list the nodes the controller knows");
  get_nodes->alias("node");

  CLI::App* node = app.add_subcommand("node", "act on one node");
  node->require_subcommand(1);
  std::string remove_name;
  CLI::App* node_remove =
      node->add_subcommand("remove", "forget a node and revoke its certificate");
  node_remove->add_option("NAME", remove_name, "node name or id")->required();

  CLI::App* token = app.add_subcommand("token", "join tokens");
  token->require_subcommand(1);
  std::string token_ttl = "24h", token_description, revoke_id;
  int64_t token_uses = 0;
  CLI::App* token_create = token->add_subcommand("create", "make a join token (printed once)");
  token_create->add_option("--ttl", token_ttl, "lifetime, or never")->capture_default_str();
  token_create->add_option("--uses", token_uses, "joins it admits (0: unlimited)")
      ->capture_default_str();
  token_create->add_option("--description", token_description, "free text shown in the list");
  CLI::App* token_list = token->add_subcommand("list", "list join tokens (never their secrets)");
  CLI::App* token_revoke = token->add_subcommand("revoke", "revoke a join token");
  token_revoke->add_option("ID", revoke_id, "token id")->required();

  std::vector<std::string> discover_interfaces, discover_targets;
  std::string discover_timeout = "2s";
  bool discover_adopt = false;
  CLI::App* discover =
      app.add_subcommand("discover", "probe the fabric for agents (UDP) from the controller");
  discover->add_option("--interface", discover_interfaces, "interface to probe on (repeatable)");
  discover->add_option("--target", discover_targets, "extra IPv4 address to probe (repeatable)");
  discover->add_option("--timeout", discover_timeout, "how long to listen for answers")
      ->capture_default_str();
  discover->add_flag("--adopt", discover_adopt, "tell proven agents to join");

  UpOptions up_opts;
  up_opts.dir = absl::StrCat(StateHome(), "/local");
  std::string up_timeout = "30s";
  CLI::App* up = app.add_subcommand("up", "start a local cluster on this machine");
  up->add_option("--nodes", up_opts.nodes, "number of agents")->capture_default_str();
  up->add_option("--dir", up_opts.dir, "cluster directory")->capture_default_str();
  up->add_flag("--detach,-d", up_opts.detach, "return once ready and leave it running");
  up->add_option("--timeout", up_timeout, "time to reach Ready")->capture_default_str();
  up->add_option("--recipe", up_opts.recipe,
                 "recipe to apply once the nodes are Ready (default: the built-in local demo)");
  up->add_option("-o", up_opts.overrides, "override key=value of the recipe (repeatable)");
  up->add_flag("--no-recipe", up_opts.no_recipe, "start the nodes only");

  std::string down_dir = absl::StrCat(StateHome(), "/local");
  CLI::App* down = app.add_subcommand("down", "stop a local cluster started with --detach");
  down->add_option("--dir", down_dir, "cluster directory")->capture_default_str();

  RecipeFlags plan_flags;
  std::string plan_nodes, plan_inventory;
  CLI::App* plan =
      app.add_subcommand("plan", "show what apply would run on every rank (no side effects)");
  plan->add_option("RECIPE", plan_flags.recipe, "recipe file")->required();
  plan->add_option("-o", plan_flags.o, "override key=value (repeatable), or json / yaml");
  plan->add_option("--name", plan_flags.name, "group name (default: the recipe file's name)");
  plan->add_option("--nodes", plan_nodes, "nodes to place on, head first: a,b");
  plan->add_option("--inventory", plan_inventory,
                   "YAML file of nodes (nodes: [{name, address, fabric_interface, "
                   "fabric_address, rdma_devices, gpus, infiniband}]): plan without a controller");

  RecipeFlags apply_flags;
  bool apply_wait = true;
  std::string apply_timeout;
  CLI::App* apply = app.add_subcommand("apply", "launch a recipe's serving group and wait for it");
  apply->add_option("RECIPE", apply_flags.recipe, "recipe file")->required();
  apply->add_option("-o", apply_flags.o, "override key=value (repeatable), or json / yaml");
  apply->add_option("--name", apply_flags.name, "group name (default: the recipe file's name)");
  apply->add_flag("--wait,!--no-wait", apply_wait,
                  "wait until the group is Ready (default), or return once every rank is ordered "
                  "to start");
  apply->add_option("--timeout", apply_timeout,
                    "how long to wait for Ready (default: the recipe's health.start_timeout)");

  apply->add_flag("--force", apply_flags.force, "launch even when preflight fails");

  RecipeFlags preflight_flags;
  CLI::App* preflight = app.add_subcommand(
      "preflight", "check that a recipe can launch on the nodes apply would choose");
  preflight->add_option("RECIPE", preflight_flags.recipe, "recipe file")->required();
  preflight->add_option("-o", preflight_flags.o, "override key=value (repeatable), or json/yaml");
  preflight->add_option("--name", preflight_flags.name, "group name");
  preflight->add_flag("--force", preflight_flags.force, "report failures as warnings");

  std::string probe_root = "/";
  CLI::App* probe = app.add_subcommand("probe", "run every node probe on this machine");
  probe->add_option("--root", probe_root, "root directory to read (a recorded tree)")
      ->capture_default_str();

  CLI::App* get_links = get->add_subcommand("links", "RDMA ports of every Ready node");
  get_links->alias("link");

  CLI::App* get_groups = get->add_subcommand("groups", "list serving groups");
  get_groups->alias("group");
  CLI::App* describe = app.add_subcommand("describe", "show one resource in detail");
  describe->require_subcommand(1);
  std::string describe_name;
  CLI::App* describe_group = describe->add_subcommand("group", "a serving group");
  describe_group->add_option("NAME", describe_name, "group name")->required();
  std::string describe_node_name;
  CLI::App* describe_node = describe->add_subcommand("node", "a node, probed now");
  describe_node->add_option("NAME", describe_node_name, "node name or id")->required();

  std::string stop_name;
  CLI::App* stop = app.add_subcommand("stop", "stop every rank of a group on every node");
  stop->add_option("NAME", stop_name, "group (or application) name")->required();

  std::string logs_name;
  int logs_rank = 0, logs_tail = 0;
  bool logs_follow = false;
  CLI::App* logs = app.add_subcommand("logs", "output of one rank of a group");
  logs->add_option("NAME", logs_name, "group name")->required();
  logs->add_option("--rank", logs_rank, "rank")->capture_default_str();
  logs->add_flag("-f,--follow", logs_follow, "keep printing new output");
  logs->add_option("--tail", logs_tail, "last N lines (0: everything kept)")->capture_default_str();

  std::string restart_name;
  CLI::App* restart = app.add_subcommand(
      "restart",
      "restart a group now: every rank stopped and confirmed gone, then a new generation");
  restart->add_option("NAME", restart_name, "group (or application) name")->required();
  std::string roll_name;
  CLI::App* roll = app.add_subcommand(
      "roll", "restart an application's replicas one at a time behind its router, no request lost");
  roll->add_option("NAME", roll_name, "application (or group) name")->required();
  CLI::App* get_services =
      get->add_subcommand("services", "each applied recipe's one endpoint (its router)");
  std::string events_name;
  bool events_follow = false;
  CLI::App* events =
      app.add_subcommand("events", "rank exits, restarts and failures of groups, oldest first");
  events->add_option("NAME", events_name, "group (or application) name; default: every group");
  events->add_flag("-f,--follow", events_follow, "keep printing new events");

  ExportFlags export_flags;
  CLI::App* export_cmd = app.add_subcommand(
      "export", "render a recipe's launch for Kubernetes LeaderWorkerSet or Slurm (offline)");
  export_cmd->add_option("RECIPE", export_flags.recipe, "recipe file")->required();
  export_cmd->add_option("--format", export_flags.format, "lws or slurm")->required();
  export_cmd->add_option("-o", export_flags.o, "override key=value (repeatable)");
  export_cmd->add_option("--nodes", export_flags.nodes,
                         "ranks of the group (default: the recipe's)");
  export_cmd->add_option("--name", export_flags.name,
                         "group name (default: the recipe file's name)");
  export_cmd->add_option("--fabric-interface", export_flags.fabric_interface,
                         "NCCL/Gloo interface on every node, e.g. enp1s0f1np1 (default: unset)");
  export_cmd->add_option("--rdma-devices", export_flags.rdma_devices,
                         "RDMA devices for NCCL_IB_HCA, e.g. rocep1s0f1,roceP2p1s0f1");
  export_cmd->add_option("--gpus-per-node", export_flags.gpus_per_node, "GPUs each rank gets")
      ->capture_default_str();
  export_cmd->add_option("--master-port", export_flags.master_port, "rank 0's rendezvous port")
      ->capture_default_str();
  export_cmd->add_option("--rdma", export_flags.rdma, "lws: host-network or device-plugin")
      ->capture_default_str();
  export_cmd
      ->add_option("--rdma-resource", export_flags.rdma_resource,
                   "lws: the RDMA device plugin's resource name")
      ->capture_default_str();
  export_cmd->add_option("--image", export_flags.image,
                         "lws: image holding the engine, for runtime: process recipes");
  export_cmd->add_option("--namespace", export_flags.k8s_namespace, "lws: namespace");
  export_cmd
      ->add_option("--max-unavailable", export_flags.max_unavailable,
                   "lws: groups down at once in a rollout (number or percentage)")
      ->capture_default_str();
  export_cmd->add_option("--partition", export_flags.partition, "slurm: partition");
  export_cmd->add_option("--time", export_flags.time_limit, "slurm: time limit, e.g. 24:00:00");

  FabricFlags fabric_flags;
  CLI::App* fabric = app.add_subcommand("fabric", "measure fabric bandwidth between nodes");
  fabric->add_option("--nodes", fabric_flags.nodes, "nodes to test: a,b,... (default: every Ready)")
      ->delimiter(',');
  fabric->add_option("--tests", fabric_flags.tests, "tcp, rdma, nccl (default: tcp)")
      ->delimiter(',');
  fabric->add_flag("--ring", fabric_flags.ring, "test a ring (a>b>c>a) instead of every pair");
  fabric->add_option("--duration", fabric_flags.duration, "time each test sends")
      ->capture_default_str();
  fabric->add_option("--streams", fabric_flags.streams, "TCP streams per test (1..64)")
      ->capture_default_str();
  fabric->add_option("--buffer-bytes", fabric_flags.buffer_bytes, "bytes per write (4096..16Mi)")
      ->capture_default_str();
  fabric->add_option("--rdma-qps", fabric_flags.rdma_qps,
                     "rdma: RC queue pairs per device (1..16; default 4, perftest -q)");
  fabric->add_option("--rdma-size", fabric_flags.rdma_size,
                     "rdma: bytes per WRITE (1024..8Mi; default 65536, perftest -s)");
  fabric->add_option("--rdma-tx-depth", fabric_flags.rdma_tx_depth,
                     "rdma: send queue depth (1..1024; default 128, perftest -t)");
  fabric->add_option("--rdma-cq-mod", fabric_flags.rdma_cq_mod,
                     "rdma: one signaled WRITE every N (1..tx depth; default 100, perftest -Q)");
  fabric->add_option("--rdma-latency-iters", fabric_flags.rdma_latency_iters,
                     "rdma: latency round trips (1..100000; default 1000, ib_write_lat -n)");
  int history_limit = 20;
  CLI::App* fabric_history =
      fabric->add_subcommand("history", "stored fabric results per link, oldest first");
  fabric_history->add_option("--limit", history_limit, "results per link and test")
      ->capture_default_str();

  StageFlags stage_flags;
  CLI::App* stage =
      app.add_subcommand("stage", "copy model weights and images to nodes at link rate");
  stage->require_subcommand(1);
  CLI::App* stage_model =
      stage->add_subcommand("model", "copy a model directory from one node to others, verified");
  stage_model->add_option("path", stage_flags.path, "absolute model directory on the source node")
      ->required();
  stage_model->add_option("--from", stage_flags.from,
                          "source node (default: the first Ready non-target that has the path)");
  stage_model->add_option("--to", stage_flags.to, "target nodes: a,b,...")
      ->delimiter(',')
      ->required();
  stage_model->add_option("--dest", stage_flags.dest,
                          "absolute destination directory (default: the same path)");
  stage_model->add_option("--streams", stage_flags.streams, "TCP streams per link (1..16)")
      ->capture_default_str();
  StageImageFlags stage_image_flags;
  CLI::App* stage_image = stage->add_subcommand(
      "image", "copy a Docker image from one node's engine to others (docker save -> load)");
  stage_image->add_option("ref", stage_image_flags.ref, "image: repo/name:tag or an image ID")
      ->required();
  stage_image->add_option("--from", stage_image_flags.from,
                          "source node (default: the first Ready non-target that has the image)");
  stage_image->add_option("--to", stage_image_flags.to, "target nodes: a,b,...")
      ->delimiter(',')
      ->required();
  CLI::App* stage_status = stage->add_subcommand("status", "the current or last staging run");
  CLI::App* stage_cancel = stage->add_subcommand(
      "cancel", "stop the staging run in flight (the next run resumes what it verified)");

  CLI::App* health = app.add_subcommand(
      "health", "nodes, links, limits, fabric results and groups, each with a verdict");
  bool health_watch = false;
  health->add_flag("--watch,-w", health_watch, "redraw every 2 s until interrupted");

  BenchFlags bench_flags;
  CLI::App* bench = app.add_subcommand(
      "bench", "prefill/decode speed at each depth and concurrency (llama-benchy's table)");
  // Not required(): `fleet bench history NAME` has no TARGET; Bench() asks for it.
  bench->add_option("TARGET", bench_flags.target,
                    "a group, a service, or http://HOST:PORT of an OpenAI API");
  bench->add_option("--pp", bench_flags.pp, "prompt tokens")->capture_default_str();
  bench->add_option("--tg", bench_flags.tg, "generated tokens")->capture_default_str();
  bench->add_option("--depth", bench_flags.depth, "context tokens cached before the prompt")
      ->capture_default_str();
  bench->add_option("--concurrency", bench_flags.concurrency, "requests sent together")
      ->capture_default_str();
  bench->add_option("--runs", bench_flags.runs, "runs of each row")->capture_default_str();
  bench->add_option("--model", bench_flags.model, "model (default: the first /v1/models lists)");
  bench->add_flag("--chat", bench_flags.chat, "/v1/chat/completions instead of /v1/completions");
  bench->add_option("--plot", bench_flags.plot, "write total decode t/s vs concurrency, FILE.svg");
  bench->add_option("--timeout", bench_flags.timeout, "limit of each request")
      ->capture_default_str();
  bench->add_option("--deadline", bench_flags.deadline, "limit of the whole sweep")
      ->capture_default_str();
  std::string bench_history_name;
  int bench_history_limit = 20;
  CLI::App* bench_history = bench->add_subcommand(
      "history", "stored sweeps of a group or application, with drops of more than 10%");
  bench_history->add_option("NAME", bench_history_name, "a group or application")->required();
  bench_history->add_option("--limit", bench_history_limit, "the last runs shown")
      ->capture_default_str();

  CLI::App* version = app.add_subcommand("version", "print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  RouteGrpcLogs(/*daemon=*/*controller || *agent);
  // Debian's Abseil is built with mutex deadlock detection on, a debugging aid that cost the
  // controller about 3% of a core at 1,000 heartbeats a second (tests/bench).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (*controller) return RunController(cflags);
  if (*agent) return RunAgent(std::move(aopts), join_file);
  if (*nodes || *get_nodes) return GetNodes(g);
  if (*node_remove) return RemoveNode(g, remove_name);
  if (*token_create) return CreateToken(g, token_ttl, token_uses, token_description);
  if (*token_list) return ListTokens(g);
  if (*token_revoke) return RevokeToken(g, revoke_id);
  if (*plan) return Plan(g, plan_flags, plan_nodes, plan_inventory);
  if (*apply) return Apply(g, apply_flags, apply_wait, apply_timeout);
  if (*get_groups) return GetGroups(g);
  if (*preflight) return Preflight(g, preflight_flags, preflight_flags.force);
  if (*probe) return Probe(g, probe_root);
  if (*get_links) return GetLinks(g);
  if (*describe_node) return DescribeNode(g, describe_node_name);
  if (*describe_group) return DescribeGroup(g, describe_name);
  if (*stop) return StopGroup(g, stop_name);
  if (*logs) return Logs(g, logs_name, logs_rank, logs_follow, logs_tail);
  if (*restart) return RestartGroup(g, restart_name);
  if (*roll) return RollGroup(g, roll_name);
  if (*get_services) return GetServices(g);
  if (*events) return Events(g, events_name, events_follow);
  if (*discover) {
    return Discover(g, discover_interfaces, discover_targets, discover_timeout, discover_adopt);
  }
  if (*up) {
    absl::StatusOr<absl::Duration> timeout = ParseDurationFlag("timeout", up_timeout);
    if (!timeout.ok()) return Fail(std::string(timeout.status().message()));
    up_opts.timeout = *timeout;
    up_opts.fleet_binary = SelfExecutable();
    BlockStopSignals();
    absl::Status st = RunUp(up_opts, std::cout);
    return st.ok() ? 0 : Fail(std::string(st.message()));
  }
  if (*down) {
    absl::Status st = RunDown(down_dir, std::cout);
    return st.ok() ? 0 : Fail(std::string(st.message()));
  }
  if (*export_cmd) return Export(export_flags);
  if (*fabric_history) return FabricHistory(g, history_limit);
  if (*fabric) return Fabric(g, fabric_flags);
  if (*stage_model) return StageModel(g, stage_flags);
  if (*stage_image) return StageImage(g, stage_image_flags);
  if (*stage_status) return StageStatus(g);
  if (*stage_cancel) return StageCancel(g);
  if (*health) return Health(g, health_watch);
  if (*bench_history) return BenchHistory(g, bench_history_name, bench_history_limit);
  if (*bench) return Bench(g, bench_flags);
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
