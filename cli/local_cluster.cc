// `fleet up` / `fleet down`.
#include "cli/local_cluster.h"

#include <curl/curl.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/config.h"
#include "cli/controller_api.h"
#include "cli/group_commands.h"
#include "cli/local_demo_recipe.h"
#include "cli/output.h"
#include "cli/service_commands.h"
#include "common/files.h"
#include "common/http/http_client.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr int kMaxNodes = 253;  // 127.0.0.2 .. 127.0.0.254

struct Member {
  std::string role;  // "controller", "node-1", ...
  std::string log;
  Process process;
};

std::string LogTail(const std::string& path, int lines) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return "";
  std::vector<absl::string_view> all = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  size_t from = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = from; i < all.size(); ++i) absl::StrAppend(&out, "\n    ", all[i]);
  return out;
}

absl::Status Died(const Member& m, int wait_status) {
  return absl::AbortedError(absl::StrCat(m.role, " ", DescribeWaitStatus(wait_status),
                                         "; last lines of ", m.log, ":", LogTail(m.log, 5)));
}

// Agents first so none of them reports the controller gone while stopping.
// Stops every group that still runs, before the agents go: shards outlive their agent by
// design, so stopping agents alone would leave engine processes behind.
absl::Status StopGroups(const std::string& config_path, std::ostream& out) {
  ASSIGN_OR_RETURN(CliConfig config, LoadConfigFile(config_path));
  ASSIGN_OR_RETURN(AdminClient client, AdminClient::Create(config, absl::Seconds(2)));
  ASSIGN_OR_RETURN(v1::ListGroupsResponse groups, client.ListGroups());
  for (const v1::Group& group : groups.groups()) {
    if (group.state() == v1::GROUP_STATE_STOPPED) continue;
    RETURN_IF_ERROR(client.StopGroup(group.name(), absl::Minutes(1)).status());
    out << "stopped group " << group.name() << "\n";
  }
  // The controller stops an application's router on its next reconcile after the last group
  // stopped; the agents must still run then, or the router's HAProxy outlives the cluster.
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (true) {
    ASSIGN_OR_RETURN(v1::ListServicesResponse services, client.ListServices(""));
    if (services.services().empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the router of ", services.services(0).name(),
          " still runs 15 s after its groups stopped; `fleet get services` shows where"));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

// Sends the demo group one real completion request and prints the request and its answer, so
// `fleet up` ends by showing the group serving.
absl::Status AskDemo(const std::string& endpoint, std::ostream& out) {
  const std::string url = endpoint + "/v1/completions";
  const std::string request = Json{{"prompt", "Hello from SparkFleet"}, {"max_tokens", 16}}.dump();
  ASSIGN_OR_RETURN(HttpClient http, HttpClient::Create());
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> body = http.Expect200("POST " + url, url, &request, 30000);
  if (!body.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "the demo group is Ready but ", body.status().message(), "; see `fleet logs local-demo`"));
  }
  Json answer = Json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (answer.is_discarded() || !answer.contains("choices") || answer["choices"].empty()) {
    return absl::DataLossError(absl::StrCat(
        "POST ", url, " answered something other than a completion: ", QuoteBody(*body)));
  }
  out << "  asked:  curl -s " << url << " -H 'Content-Type: application/json' -d '" << request
      << "'\n  answer: " << answer["choices"][0].value("text", Json("")).dump() << " ("
      << answer["usage"].value("completion_tokens", 0) << " tokens in "
      << absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)))
      << "; fleet-engine's weights are synthetic, so the text is not language)\n";
  return absl::OkStatus();
}

// Applies the local demo (or the given recipe) and waits until it is Ready.
absl::Status ApplyRecipe(const UpOptions& options, AdminClient& client, absl::Time deadline,
                         std::ostream& out) {
  v1::ApplyRequest request;
  if (options.recipe.empty()) {
    request.set_recipe_path("local-demo.yaml");
    request.set_recipe_yaml(kLocalDemoRecipe);
  } else {
    ASSIGN_OR_RETURN(std::string yaml, ReadFileToString(options.recipe));
    request.set_recipe_path(options.recipe);
    request.set_recipe_yaml(std::move(yaml));
  }
  for (const std::string& o : options.overrides) request.add_overrides(o);
  const absl::Time started = absl::Now();
  out << "applying " << request.recipe_path() << " ..." << std::endl;
  ASSIGN_OR_RETURN(v1::ApplyResponse applied, client.Apply(request, absl::Minutes(1)));
  for (const v1::Group& group : applied.groups()) {
    if (FollowGroup(client, group.name(), started, deadline) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("group ", group.name(),
                       " did not become Ready (above); the nodes keep running: "
                       "see `fleet describe group ",
                       group.name(), "`"));
    }
  }
  if (!applied.groups().empty() && !applied.groups(0).endpoint().empty()) {
    PrintService(client, applied.groups(0).application(), absl::Now() + kServiceWait, out);
  }
  if (options.recipe.empty() && applied.groups_size() == 1) {
    RETURN_IF_ERROR(AskDemo(applied.groups(0).endpoint(), out));
  }
  return absl::OkStatus();
}

void StopAll(std::vector<Member>& members) {
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    if (it->process.Running()) (void)it->process.Signal(SIGTERM);
  }
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    (void)it->process.Stop(absl::Seconds(5));
  }
}

absl::Status WriteRecord(const std::string& dir, const std::string& controller,
                         std::vector<Member>& members) {
  Json procs = Json::array();
  for (Member& m : members) {
    ASSIGN_OR_RETURN(uint64_t ticks, ProcessStartTicks(m.process.pid()));
    procs.push_back({{"role", m.role}, {"pid", m.process.pid()}, {"startTicks", ticks}});
  }
  Json doc = {{"controller", controller}, {"processes", procs}};
  return WriteFileAtomically(absl::StrCat(dir, "/cluster.json"), doc.dump(2) + "\n");
}

// The processes recorded in DIR/cluster.json that still run.
absl::StatusOr<std::vector<std::pair<pid_t, uint64_t>>> LiveRecorded(const std::string& dir) {
  std::string path = absl::StrCat(dir, "/cluster.json");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (absl::IsNotFound(text.status())) return std::vector<std::pair<pid_t, uint64_t>>{};
  if (!text.ok()) return text.status();
  Json doc = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.contains("processes") || !doc["processes"].is_array()) {
    return absl::DataLossError(absl::StrCat(
        path, " is not a cluster record; stop stray `fleet` processes by hand and delete it"));
  }
  std::vector<std::pair<pid_t, uint64_t>> live;
  for (const Json& p : doc["processes"]) {
    if (!p.contains("pid") || !p.contains("startTicks")) continue;
    pid_t pid = p["pid"].get<pid_t>();
    uint64_t ticks = p["startTicks"].get<uint64_t>();
    absl::StatusOr<uint64_t> now = ProcessStartTicks(pid);
    if (now.ok() && *now == ticks) live.emplace_back(pid, ticks);
  }
  return live;
}

// Waits until the controller has written its address and then its admin config.
absl::StatusOr<std::string> WaitForControllerAddress(const std::string& path,
                                                     const std::string& config, Member& controller,
                                                     absl::Time deadline) {
  while (absl::Now() < deadline) {
    absl::StatusOr<std::string> addr = ReadFileToString(path);
    if (addr.ok() && ::access(config.c_str(), R_OK) == 0) {
      return std::string(absl::StripAsciiWhitespace(*addr));
    }
    if (!controller.process.Running()) {
      absl::StatusOr<int> st = controller.process.Wait(absl::ZeroDuration());
      return Died(controller, st.ok() ? *st : 0);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the controller did not start listening in time; see ", controller.log));
}

// Where the controller and every agent serve metrics (each wrote STATE_DIR/metrics.addr before
// it could become Ready), and DIR/prometheus.yml, a scrape config for exactly these targets.
absl::Status ReportMetrics(const std::string& dir, int nodes, std::ostream& out) {
  std::vector<std::pair<std::string, std::string>> targets;
  for (int i = 0; i <= nodes; ++i) {
    std::string role = i == 0 ? "controller" : absl::StrCat("node-", i);
    ASSIGN_OR_RETURN(std::string addr,
                     ReadFileToString(absl::StrCat(dir, "/", role, "/metrics.addr")));
    targets.emplace_back(role, std::string(absl::StripAsciiWhitespace(addr)));
  }
  std::string yaml =
      absl::StrCat("# Scrape config for the local cluster in ", dir,
                   ": prometheus --config.file=", dir, "/prometheus.yml\nscrape_configs:\n");
  out << "  metrics (Prometheus text, GET /metrics; scrape config " << dir << "/prometheus.yml):\n";
  for (const auto& [role, addr] : targets) {
    out << "    " << role << "  http://" << addr << "/metrics\n";
    absl::StrAppend(&yaml, "  - job_name: fleet-", role == "controller" ? "controller" : "agent",
                    "-", role, "\n    static_configs:\n      - targets: ['", addr,
                    "']\n        labels: {node: ", role, "}\n");
  }
  return WriteFileAtomically(absl::StrCat(dir, "/prometheus.yml"), yaml);
}

absl::Status WaitReady(AdminClient& client, std::vector<Member>& members, int nodes,
                       absl::Time deadline, v1::ListNodesResponse& last) {
  std::string why = "no answer yet";
  while (absl::Now() < deadline) {
    for (Member& m : members) {
      if (!m.process.Running()) {
        absl::StatusOr<int> st = m.process.Wait(absl::ZeroDuration());
        return Died(m, st.ok() ? *st : 0);
      }
    }
    absl::StatusOr<v1::ListNodesResponse> list = client.ListNodes();
    if (list.ok()) {
      int ready = 0;
      for (const v1::Node& n : list->nodes()) {
        if (n.state() == v1::NODE_STATE_READY && n.reachable()) ++ready;
      }
      if (ready == nodes) {
        last = *std::move(list);
        return absl::OkStatus();
      }
      why = absl::StrCat(ready, " of ", nodes, " nodes ready");
    } else {
      why = std::string(list.status().message());
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the local cluster did not become ready in time (", why, "); logs are in ",
                   members.front().log.substr(0, members.front().log.rfind('/'))));
}

// A join token for the cluster's agents, in DIR/join-token (0600): one use per agent, one hour.
absl::StatusOr<std::string> MakeJoinFile(AdminClient& client, const std::string& dir, int nodes) {
  v1::CreateTokenRequest request;
  request.mutable_ttl()->set_seconds(3600);
  request.set_uses(nodes);
  request.set_description("fleet up");
  ASSIGN_OR_RETURN(v1::CreateTokenResponse created, client.CreateToken(request));
  std::string path = absl::StrCat(dir, "/join-token");
  RETURN_IF_ERROR(WriteFileAtomically(path, created.token() + "\n", 0600));
  return path;
}

// Waits for a stop signal or for a member to die on its own.
absl::Status Supervise(std::vector<Member>& members, std::ostream& out) {
  sigset_t stop;
  sigemptyset(&stop);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, s);
  const timespec tick = {0, 200'000'000};
  while (true) {
    int sig = ::sigtimedwait(&stop, nullptr, &tick);
    if (sig > 0) {
      out << "\nstopping (" << ::strsignal(sig) << ") ..." << std::endl;
      return absl::OkStatus();
    }
    for (Member& m : members) {
      if (!m.process.Running()) {
        absl::StatusOr<int> st = m.process.Wait(absl::ZeroDuration());
        return Died(m, st.ok() ? *st : 0);
      }
    }
  }
}

}  // namespace

absl::Status RunUp(const UpOptions& options, std::ostream& out) {
  if (options.nodes < 1 || options.nodes > kMaxNodes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--nodes must be between 1 and ", kMaxNodes, "; got ", options.nodes));
  }
  const std::string dir = std::filesystem::absolute(options.dir).lexically_normal();
  const std::string logs = absl::StrCat(dir, "/logs");
  RETURN_IF_ERROR(MakeDirectories(logs, 0700));
  ASSIGN_OR_RETURN(auto live, LiveRecorded(dir));
  if (!live.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a local cluster already runs in ", dir, " (pid ", live.front().first,
                     "); stop it with `fleet down --dir ", dir, "` or pass another --dir"));
  }
  const std::string addr_file = absl::StrCat(dir, "/controller/controller.addr");
  const std::string config_path = absl::StrCat(dir, "/config.yaml");
  ::unlink(addr_file.c_str());
  ::unlink(config_path.c_str());
  for (int i = 0; i <= options.nodes; ++i) {
    std::string role = i == 0 ? "controller" : absl::StrCat("node-", i);
    ::unlink(absl::StrCat(dir, "/", role, "/metrics.addr").c_str());
  }

  std::vector<Member> members;
  auto start = [&](std::string role, std::vector<std::string> args) -> absl::Status {
    std::string log = absl::StrCat(logs, "/", role, ".log");
    args.insert(args.begin(), options.fleet_binary);
    ASSIGN_OR_RETURN(Process p, Process::Start({.argv = std::move(args),
                                                .output_path = log,
                                                .new_session = true,
                                                .die_with_parent = !options.detach}));
    members.push_back({std::move(role), log, std::move(p)});
    return absl::OkStatus();
  };
  absl::Time deadline = absl::Now() + options.timeout;
  absl::Status st = [&]() -> absl::Status {
    RETURN_IF_ERROR(start(
        "controller", {"controller", "--state-dir", dir + "/controller", "--listen", "127.0.0.1:0",
                       "--admin-config", config_path, "--metrics-listen", "127.0.0.1:0"}));
    ASSIGN_OR_RETURN(std::string controller,
                     WaitForControllerAddress(addr_file, config_path, members.front(), deadline));
    ASSIGN_OR_RETURN(CliConfig config, LoadConfigFile(config_path));
    ASSIGN_OR_RETURN(AdminClient client, AdminClient::Create(config, absl::Seconds(2)));
    ASSIGN_OR_RETURN(std::string join_file, MakeJoinFile(client, dir, options.nodes));
    for (int i = 1; i <= options.nodes; ++i) {
      std::string ip = absl::StrCat("127.0.0.", i + 1);
      // The agents are told where the controller is, so they need no discovery; several local
      // clusters may then run side by side. They share this file system, so each writes what
      // `fleet stage` copies to it under its own directory, NODE_DIR/staged.
      const std::string node_dir = absl::StrCat(dir, "/node-", i);
      RETURN_IF_ERROR(
          start(absl::StrCat("node-", i),
                {"agent", "--controller", controller, "--join-file", join_file, "--state-dir",
                 node_dir, "--name", absl::StrCat("node-", i), "--listen", ip + ":0", "--advertise",
                 ip, "--discovery-listen", "", "--metrics-listen", ip + ":0", "--stage-prefix",
                 node_dir + "/staged"}));
    }
    RETURN_IF_ERROR(WriteRecord(dir, controller, members));
    RETURN_IF_ERROR(RememberLocalCluster(dir));
    v1::ListNodesResponse nodes;
    RETURN_IF_ERROR(WaitReady(client, members, options.nodes, deadline, nodes));
    out << RenderNodes(nodes, OutputFormat::kTable) << "\n"
        << "Local cluster of " << options.nodes << " nodes is ready; controller at " << controller
        << ".\n"
        << "  FLEET_CONFIG=" << config_path << " fleet nodes   (plain `fleet nodes` works too)\n"
        << "  logs: " << logs << "/\n";
    RETURN_IF_ERROR(ReportMetrics(dir, options.nodes, out));
    if (!options.no_recipe) RETURN_IF_ERROR(ApplyRecipe(options, client, deadline, out));
    return absl::OkStatus();
  }();
  if (!st.ok()) {
    (void)StopGroups(config_path, out);
    StopAll(members);
    ::unlink(absl::StrCat(dir, "/cluster.json").c_str());
    return st;
  }
  if (options.detach) {
    out << "  stop it with: fleet down --dir " << dir << std::endl;
    for (Member& m : members) m.process.Release();
    return absl::OkStatus();
  }
  out << "  Ctrl-C stops it." << std::endl;
  st = Supervise(members, out);
  if (absl::Status stopped = StopGroups(config_path, out); !stopped.ok()) {
    out << "could not stop the groups first: " << stopped.message() << "\n";
  }
  StopAll(members);
  ::unlink(absl::StrCat(dir, "/cluster.json").c_str());
  if (st.ok()) out << "stopped." << std::endl;
  return st;
}

absl::Status RunDown(const std::string& dir_flag, std::ostream& out) {
  const std::string dir = std::filesystem::absolute(dir_flag).lexically_normal();
  ASSIGN_OR_RETURN(auto live, LiveRecorded(dir));
  if (!live.empty()) {
    if (absl::Status st = StopGroups(absl::StrCat(dir, "/config.yaml"), out); !st.ok()) {
      return absl::Status(st.code(),
                          absl::StrCat("stopping the cluster's groups first: ", st.message(),
                                       "; nothing was stopped, try again"));
    }
  }
  // Recorded controller first in the file, agents after: stop in reverse.
  for (auto it = live.rbegin(); it != live.rend(); ++it) ::kill(it->first, SIGTERM);
  absl::Status result;
  for (auto it = live.rbegin(); it != live.rend(); ++it) {
    absl::Status st = StopProcess(it->first, it->second, absl::Seconds(5));
    if (!st.ok()) result = st;
  }
  RETURN_IF_ERROR(result);
  ::unlink(absl::StrCat(dir, "/cluster.json").c_str());
  if (live.empty()) {
    out << "no local cluster runs in " << dir << "\n";
  } else {
    out << "stopped the local cluster in " << dir << " (" << live.size() << " processes)\n";
  }
  return absl::OkStatus();
}

}  // namespace fleet::cli
