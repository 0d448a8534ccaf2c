// The `fleet` commands for serving groups.
#include "cli/group_commands.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/config.h"
#include "cli/controller_api.h"
#include "cli/output.h"
#include "cli/service_commands.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/table.h"
#include "controller/groups/group_manager.h"
#include "controller/rendezvous/rendezvous_store.h"
#include "google/protobuf/util/time_util.h"
#include "launch/docker_run.h"
#include "launch/placement.h"
#include "launch/plan.h"
#include "launch/recipe.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {
namespace {

using google::protobuf::util::TimeUtil;
using Json = nlohmann::ordered_json;

double Seconds(const google::protobuf::Timestamp& from, const google::protobuf::Timestamp& to) {
  return static_cast<double>(TimeUtil::TimestampToNanoseconds(to) -
                             TimeUtil::TimestampToNanoseconds(from)) /
         1e9;
}

std::string RankWhere(const v1::GroupRank& rank) {
  const v1::ShardStatus& s = rank.status();
  if (s.pid() > 0) return absl::StrCat("pid ", s.pid());
  if (!s.container().empty()) return s.container();
  return "-";
}

std::string Describe(const v1::ShardStatus& s) {
  std::string text = s.message();
  if (!s.exit().empty()) absl::StrAppend(&text, text.empty() ? "" : "; ", s.exit());
  for (const std::string& w : s.warnings()) absl::StrAppend(&text, text.empty() ? "" : "; ", w);
  return text;
}

int ReadyRanks(const v1::Group& group) {
  return static_cast<int>(std::count_if(
      group.ranks().begin(), group.ranks().end(),
      [](const v1::GroupRank& r) { return r.status().state() == v1::SHARD_STATE_READY; }));
}

// What `fleet plan` knows of the agent that runs a docker rank: its directories and the image
// as the node's Docker engine has it (nullopt: not seen).
struct DockerFacts {
  v1::AgentPaths agent;
  std::optional<engine::ImageInfo> image;
};

// The agent's defaults, for a node that could not be asked.
DockerFacts AssumedDockerFacts() {
  DockerFacts facts;
  // No home: a mount under "~" stays for the pasting shell to expand.
  facts.agent = engine::AgentPathsFor("", engine::kAgentDefaultStateDir);
  return facts;
}

// What an assumed docker line may get wrong, and how to check before pasting it.
std::string AssumptionNote(absl::string_view who, const std::string& image, bool paths_known) {
  return absl::StrCat(
      who,
      paths_known ? ""
                  : absl::StrCat(": a mount under ~ is the agent's $HOME (left bare for your "
                                 "shell), env files and caches are under ",
                                 engine::kAgentDefaultStateDir, " (the agent's --state-dir)"),
      "; the ENTRYPOINT of ", image,
      " is not known, so the whole command follows the image. The agent drops the command's "
      "first words when the ENTRYPOINT already runs them (vllm/vllm-openai's is [\"vllm\", "
      "\"serve\"]): check `docker image inspect --format '{{json .Config.Entrypoint}}' ",
      image,
      "` and drop them too before pasting, or vLLM fails with `unrecognized arguments: "
      "serve`");
}

// Asks each node's agent for its directories and `image` (live plans), so the docker lines are
// the ones the agents will run; a node that cannot say gets the defaults and a note.
std::map<std::string, DockerFacts> ProbeDockerFacts(AdminClient& client,
                                                    const std::set<std::string>& nodes,
                                                    const std::string& image,
                                                    std::vector<std::string>* notes) {
  std::map<std::string, DockerFacts> facts;
  v1::ProbeRequest request;
  request.set_image(image);
  for (const std::string& node : nodes) {
    DockerFacts& f = facts[node] = AssumedDockerFacts();
    absl::StatusOr<v1::ProbeNodeResponse> probed =
        client.ProbeNode(node, absl::Minutes(1), request);
    if (!probed.ok()) {
      notes->push_back(AssumptionNote(
          absl::StrCat(node, " could not be probed (", probed.status().message(), ")"), image,
          false));
      continue;
    }
    const bool paths_known = !probed->probe().agent().state_dir().empty();
    if (paths_known) f.agent = probed->probe().agent();
    for (const v1::ImageProbe& seen : probed->probe().images()) {
      if (seen.image() == image) f.image = engine::ImageInfoFromProbe(seen);
    }
    if (f.image.has_value() && paths_known) continue;
    std::string why = "its agent does not report its directories (an older agent)";
    for (const v1::ImageProbe& seen : probed->probe().images()) {
      if (seen.image() == image && !seen.present()) why = seen.error();
    }
    notes->push_back(AssumptionNote(absl::StrCat(node, ": ", why), image, paths_known));
  }
  return facts;
}

// Prints a human summary of one planned group.
void PrintPlan(const engine::Recipe& recipe, const engine::GroupPlan& plan,
               const std::vector<engine::NodeView>& nodes,
               const std::vector<std::vector<std::string>>& docker_lines, std::ostream& out) {
  out << "group " << plan.group << ": recipe \"" << recipe.name << "\", engine " << recipe.engine
      << ", runtime " << (recipe.runtime == engine::RuntimeKind::kDocker ? "docker" : "process")
      << ", " << plan.ranks.size() << " rank" << (plan.ranks.size() == 1 ? "" : "s")
      << ", generation " << plan.generation << "\n";
  if (plan.launch_order == engine::LaunchOrder::kHeadFirst && plan.ranks.size() > 1) {
    out << "launch order: head first; ranks 1-" << plan.ranks.size() - 1
        << " start once the head's master port " << plan.ranks[1].wait_for_tcp()
        << " accepts connections\n";
  } else if (plan.launch_order == engine::LaunchOrder::kWorkersFirst && plan.ranks.size() > 1) {
    const v1::ShardSpec& head = plan.ranks[0];
    std::vector<std::string> waits = {head.wait_for_tcp()};
    waits.insert(waits.end(), head.also_wait_for_tcp().begin(), head.also_wait_for_tcp().end());
    out << "launch order: workers first; the head starts once " << absl::StrJoin(waits, ", ")
        << " accept connections\n";
  } else {
    out << "launch order: every rank at once\n";
  }
  out << "endpoint: " << (plan.endpoint.empty() ? "none (no port)" : plan.endpoint) << "\n";
  for (const std::string& note : plan.notes) out << "note: " << note << "\n";
  for (size_t k = 0; k < plan.ranks.size(); ++k) {
    const v1::ShardSpec& spec = plan.ranks[k];
    out << "\nrank " << k << " on " << nodes[k].name << " (" << nodes[k].address << ")"
        << (k == 0 ? ", head" : "") << "\n";
    out << "  command: " << engine::ShellLine({spec.argv().begin(), spec.argv().end()}) << "\n";
    out << "  env:\n";
    for (const v1::EnvVar& e : spec.env()) {
      const bool secret = e.name() == controller::kRendezvousTokenEnv;
      out << "    " << e.name() << "=" << (secret ? controller::kRendezvousTokenShown : e.value())
          << "\n";
    }
    for (const v1::Mount& m : spec.mounts()) {
      out << "  mount: " << m.source() << " -> " << m.target() << (m.read_only() ? " (ro)" : "")
          << "\n";
    }
    for (const std::string& c : spec.cache_dirs()) out << "  cache dir: " << c << "\n";
    if (!spec.wait_for_tcp().empty()) out << "  waits for: " << spec.wait_for_tcp() << "\n";
    if (spec.readiness().port() != 0) {
      const v1::ReadinessProbe& r = spec.readiness();
      out << "  ready when: GET http://" << r.host() << ":" << r.port()
          << (r.health_path().empty() ? "/health" : r.health_path())
          << (r.check_models() ? ", GET /v1/models" : "")
          << (r.check_completion() ? ", a one-token completion" : "") << "\n";
    }
    if (!docker_lines[k].empty()) out << "  docker: " << engine::ShellLine(docker_lines[k]) << "\n";
  }
}

}  // namespace

int FollowGroup(AdminClient& client, const std::string& name, absl::Time started,
                absl::Time deadline) {
  std::map<uint32_t, std::string> shown;
  std::set<std::string> warned;
  int errors = 0;
  while (true) {
    absl::StatusOr<v1::GetGroupResponse> r = client.GetGroup(name);
    if (!r.ok()) {
      // The controller may restart while we wait; a few misses in a row are an error.
      if (++errors >= 20) return Fail(std::string(r.status().message()));
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      continue;
    }
    errors = 0;
    const v1::Group& group = r->group();
    for (const v1::GroupRank& rank : group.ranks()) {
      const v1::ShardStatus& s = rank.status();
      std::string line =
          absl::StrCat(controller::ShardStateName(s.state()), s.message().empty() ? "" : "  ",
                       s.message(), s.exit().empty() ? "" : "  ", s.exit());
      if (shown[rank.rank()] == line) continue;
      shown[rank.rank()] = line;
      std::cout << "  " << group.name() << " rank " << rank.rank() << " on " << rank.node_name()
                << ": " << line << std::endl;
      for (const std::string& w : s.warnings()) {
        if (warned.insert(absl::StrCat(rank.rank(), w)).second) {
          std::cout << "  " << group.name() << " rank " << rank.rank() << " warning: " << w
                    << std::endl;
        }
      }
    }
    switch (group.state()) {
      case v1::GROUP_STATE_READY:
        std::cout << "group " << group.name() << " Ready in "
                  << absl::FormatDuration(absl::Trunc(absl::Now() - started, absl::Milliseconds(1)))
                  << (group.endpoint().empty() ? "" : absl::StrCat(": ", group.endpoint()))
                  << std::endl;
        return 0;
      case v1::GROUP_STATE_FAILED:
      case v1::GROUP_STATE_STOPPED: {
        std::cerr << "fleet: error: group " << group.name() << " "
                  << controller::GroupStateName(group.state()) << ": " << group.message()
                  << std::endl;
        // The failing rank's last lines say more than any summary.
        for (const v1::GroupRank& rank : group.ranks()) {
          v1::ShardState s = rank.status().state();
          if (s != v1::SHARD_STATE_FAILED && s != v1::SHARD_STATE_EXITED) continue;
          v1::GroupLogsRequest logs;
          logs.set_name(group.name());
          logs.set_rank(rank.rank());
          logs.set_tail_lines(20);
          if (absl::StatusOr<v1::GroupLogsResponse> l = client.GroupLogs(logs); l.ok()) {
            std::cerr << "--- last lines of rank " << rank.rank() << " on " << rank.node_name()
                      << " ---\n"
                      << l->data() << (l->data().empty() || l->data().back() == '\n' ? "" : "\n")
                      << "---" << std::endl;
          }
          break;
        }
        return 1;
      }
      default:
        break;
    }
    if (absl::Now() > deadline) {
      return Fail(absl::StrCat("group ", group.name(), " is not Ready after ",
                               absl::FormatDuration(absl::Now() - started), " (", group.message(),
                               "); it keeps starting: follow it with `fleet describe group ",
                               group.name(), "` and `fleet logs ", group.name(), " --rank 0 -f`"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::Status SplitOutputFlags(const std::vector<std::string>& o, std::string* format,
                              std::vector<std::string>* overrides) {
  for (const std::string& value : o) {
    if (value.find('=') != std::string::npos) {
      overrides->push_back(value);
    } else if (!format->empty()) {
      return absl::InvalidArgumentError(absl::StrCat("-o given two output formats (", *format, ", ",
                                                     value,
                                                     "); an override is written -o key=value"));
    } else {
      *format = value;
    }
  }
  if (!format->empty() && *format != "json" && *format != "yaml" && *format != "table") {
    return absl::InvalidArgumentError(absl::StrCat(
        "-o ", *format, " is neither an output format (json, yaml) nor an override key=value"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<engine::NodeView>> LoadInventory(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::NotFoundError(
        absl::StrCat("--inventory: ", text.status().message(),
                     "; write one as shown in `fleet plan --help` or drop --inventory to use the "
                     "controller's nodes"));
  }
  std::vector<engine::NodeView> nodes;
  auto where = [&](const YAML::Node& n) {
    return absl::StrCat(path, ":", n.Mark().line + 1, ":", n.Mark().column + 1, ": ");
  };
  try {
    YAML::Node root = YAML::Load(*text);
    if (!root.IsMap() || !root["nodes"] || !root["nodes"].IsSequence()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected a map with `nodes:`, a list of {name, address, ...}"));
    }
    for (const YAML::Node& n : root["nodes"]) {
      if (!n.IsMap()) {
        return absl::InvalidArgumentError(absl::StrCat(where(n), "a node is a map"));
      }
      engine::NodeView view;
      for (const auto& kv : n) {
        std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        if (key == "name") {
          view.name = v.as<std::string>();
        } else if (key == "address") {
          view.address = v.as<std::string>();
        } else if (key == "fabric_interface") {
          view.fabric_interface = v.as<std::string>();
        } else if (key == "fabric_address") {
          view.fabric_address = v.as<std::string>();
        } else if (key == "rdma_devices") {
          view.rdma_devices = v.as<std::vector<std::string>>();
        } else if (key == "gpus") {
          view.has_gpus = v.as<bool>();
        } else if (key == "infiniband") {
          view.has_infiniband = v.as<bool>();
        } else {
          return absl::InvalidArgumentError(absl::StrCat(
              where(kv.first), "unknown key \"", key,
              "\"; known: name, address, fabric_interface, fabric_address, rdma_devices, gpus, "
              "infiniband"));
        }
      }
      if (view.name.empty() || view.address.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(n), "a node needs `name` and `address`"));
      }
      if (view.fabric_address.empty()) view.fabric_address = view.address;
      view.node_id = view.name;
      nodes.push_back(std::move(view));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  return nodes;
}

int Plan(const Globals& g, const RecipeFlags& flags, const std::string& nodes_flag,
         const std::string& inventory) {
  std::string format = g.output;
  std::vector<std::string> override_texts;
  if (absl::Status st = SplitOutputFlags(flags.o, &format, &override_texts); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  absl::StatusOr<std::string> yaml = ReadFileToString(flags.recipe);
  if (!yaml.ok()) return Fail(std::string(yaml.status().message()));
  absl::StatusOr<engine::Recipe> recipe = engine::ParseRecipe(flags.recipe, *yaml);
  if (!recipe.ok()) return Fail(std::string(recipe.status().message()));
  std::vector<engine::Override> overrides;
  for (const std::string& text : override_texts) {
    absl::StatusOr<engine::Override> o = engine::ParseOverride(text);
    if (!o.ok()) return Fail(std::string(o.status().message()));
    overrides.push_back(*o);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> values =
      engine::EffectiveValues(*recipe, overrides);
  if (!values.ok()) return Fail(std::string(values.status().message()));
  absl::StatusOr<int> size = engine::GroupSize(*recipe, *values);
  if (!size.ok()) return Fail(std::string(size.status().message()));

  std::vector<engine::NodeView> candidates;
  std::optional<AdminClient> client;
  if (!inventory.empty()) {
    absl::StatusOr<std::vector<engine::NodeView>> loaded = LoadInventory(inventory);
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
    candidates = *std::move(loaded);
  } else {
    absl::StatusOr<AdminClient> connected = Connect(g);
    if (!connected.ok()) {
      return Fail(
          absl::StrCat(connected.status().message(), " (or plan offline with --inventory FILE)"));
    }
    client.emplace(*std::move(connected));
    absl::StatusOr<v1::ListNodesResponse> listed = client->ListNodes();
    if (!listed.ok()) {
      return Fail(
          absl::StrCat(listed.status().message(), " (or plan offline with --inventory FILE)"));
    }
    for (const v1::Node& node : listed->nodes()) {
      if (node.state() == v1::NODE_STATE_READY) candidates.push_back(controller::ToNodeView(node));
    }
  }
  engine::Recipe placed_recipe = *recipe;
  if (!nodes_flag.empty()) {
    placed_recipe.placement = absl::StrSplit(nodes_flag, ',', absl::SkipEmpty());
  }
  absl::StatusOr<std::vector<std::vector<engine::NodeView>>> placed =
      controller::PlaceReplicas(placed_recipe, *size, candidates, {}, {});
  if (!placed.ok()) return Fail(std::string(placed.status().message()));

  std::string app = flags.name;
  if (app.empty()) {
    std::string base = flags.recipe.substr(flags.recipe.rfind('/') + 1);
    app = base.substr(0, base.find('.'));
  }
  std::map<std::string, DockerFacts> docker_facts;
  std::vector<std::string> docker_notes;
  if (recipe->runtime == engine::RuntimeKind::kDocker) {
    std::set<std::string> names;
    for (const std::vector<engine::NodeView>& nodes : *placed) {
      for (const engine::NodeView& node : nodes) names.insert(node.name);
    }
    if (client.has_value()) {
      docker_facts = ProbeDockerFacts(*client, names, recipe->container, &docker_notes);
    } else {
      for (const std::string& name : names) docker_facts[name] = AssumedDockerFacts();
      docker_notes.push_back(AssumptionNote("offline plan", recipe->container, false));
    }
  }
  Json doc = Json::object();
  doc["apiVersion"] = "fleet/v1";
  doc["kind"] = "Plan";
  Json& groups = doc["groups"] = Json::array();
  for (size_t r = 0; r < placed->size(); ++r) {
    const std::vector<engine::NodeView>& nodes = (*placed)[r];
    engine::GroupContext context;
    context.group = placed->size() == 1 ? app : absl::StrCat(app, "-", r);
    context.generation = 1;
    context.master_addr = nodes[0].fabric_address;
    // The controller picks the lowest free port of this range on the head at apply.
    context.master_port = controller::GroupManagerConfig{}.master_port_first;
    context.nodes = nodes;
    absl::StatusOr<engine::GroupPlan> plan = engine::PlanGroup(*recipe, overrides, context);
    if (!plan.ok()) return Fail(std::string(plan.status().message()));
    plan->notes.insert(plan->notes.end(), docker_notes.begin(), docker_notes.end());
    std::vector<std::vector<std::string>> docker_lines(plan->ranks.size());
    for (size_t k = 0; k < plan->ranks.size(); ++k) {
      if (plan->ranks[k].runtime() != v1::SHARD_RUNTIME_DOCKER) continue;
      const DockerFacts& facts = docker_facts[nodes[k].name];
      docker_lines[k] = engine::RenderDockerRunOn(plan->ranks[k], facts.agent, facts.image);
    }
    if (format == "json" || format == "yaml") {
      Json group = {{"name", plan->group},
                    {"launchOrder", engine::LaunchOrderName(plan->launch_order)},
                    {"endpoint", plan->endpoint},
                    {"notes", plan->notes}};
      Json& ranks = group["ranks"] = Json::array();
      for (size_t k = 0; k < plan->ranks.size(); ++k) {
        Json rank = {{"rank", k}, {"node", nodes[k].name}, {"spec", ProtoToJson(plan->ranks[k])}};
        if (!docker_lines[k].empty()) rank["dockerRun"] = docker_lines[k];
        ranks.push_back(std::move(rank));
      }
      groups.push_back(std::move(group));
    } else {
      if (r > 0) std::cout << "\n";
      PrintPlan(*recipe, *plan, nodes, docker_lines, std::cout);
    }
  }
  if (format == "json" || format == "yaml") std::cout << PrintDocument(doc, format);
  return 0;
}

absl::StatusOr<v1::ApplyRequest> ReadApplyRequest(const RecipeFlags& flags,
                                                  const std::vector<std::string>& overrides,
                                                  bool force) {
  ASSIGN_OR_RETURN(std::string yaml, ReadFileToString(flags.recipe));
  // The request carries the recipe in a protobuf string, which gRPC refuses to send unless it
  // is UTF-8: say where the file is broken instead of sending nothing.
  RETURN_IF_ERROR(engine::CheckUtf8(flags.recipe, yaml));
  for (const std::string& o : overrides) RETURN_IF_ERROR(engine::CheckUtf8("-o", o));
  v1::ApplyRequest request;
  request.set_recipe_path(flags.recipe);
  request.set_recipe_yaml(std::move(yaml));
  for (const std::string& o : overrides) request.add_overrides(o);
  request.set_name(flags.name);
  request.set_force(force);
  return request;
}

int Apply(const Globals& g, const RecipeFlags& flags, bool wait, const std::string& timeout) {
  std::string format = g.output;
  std::vector<std::string> overrides;
  if (absl::Status st = SplitOutputFlags(flags.o, &format, &overrides); !st.ok()) {
    return Fail(std::string(st.message()));
  }
  absl::StatusOr<v1::ApplyRequest> request = ReadApplyRequest(flags, overrides, flags.force);
  if (!request.ok()) return Fail(std::string(request.status().message()));
  std::optional<absl::Duration> wait_for;
  if (!timeout.empty()) {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag("timeout", timeout);
    if (!d.ok()) return Fail(std::string(d.status().message()));
    wait_for = *d;
  }
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  const absl::Time started = absl::Now();
  // Preflight may hash a model the first time, and replacing a group first stops the old one,
  // which waits for its ranks' grace periods.
  absl::StatusOr<v1::ApplyResponse> applied = client->Apply(*request, absl::Minutes(20));
  if (!applied.ok()) return Fail(std::string(applied.status().message()));
  if (format == "json" || format == "yaml") {
    std::cout << PrintDocument(ProtoToJson(*applied), format);
  } else {
    for (const std::string& note : applied->notes()) std::cout << "note: " << note << "\n";
    for (const v1::PreflightRow& row : applied->preflight()) {
      if (row.verdict() == "pass") continue;
      std::cout << "preflight " << row.verdict() << ": " << row.node() << " " << row.check() << ": "
                << row.observed() << " (expected " << row.expected() << ")"
                << (row.fix().empty() ? "" : absl::StrCat(": ", row.fix())) << "\n";
    }
    for (const v1::Group& group : applied->groups()) {
      std::vector<std::string> nodes;
      for (const v1::GroupRank& rank : group.ranks()) nodes.push_back(rank.node_name());
      std::cout << "group " << group.name() << " " << applied->action() << ": generation "
                << group.generation() << " on " << absl::StrJoin(nodes, ", ") << std::endl;
    }
  }
  if (!wait) return 0;
  for (const v1::Group& group : applied->groups()) {
    absl::Duration limit = wait_for.value_or(
        absl::Nanoseconds(TimeUtil::DurationToNanoseconds(group.start_timeout())));
    if (applied->action() == "unchanged" && group.state() == v1::GROUP_STATE_READY) {
      std::cout << "group " << group.name() << " already Ready: " << group.endpoint() << std::endl;
      continue;
    }
    int code = FollowGroup(*client, group.name(), started, started + limit);
    if (code != 0) return code;
  }
  // The one endpoint of the application (its router), which outlives restarts and re-placement.
  if (!applied->groups().empty() && !applied->groups(0).endpoint().empty() && format != "json" &&
      format != "yaml") {
    PrintService(*client, applied->groups(0).application(), absl::Now() + kServiceWait, std::cout);
  }
  return 0;
}

int GetGroups(const Globals& g) {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(g.output);
  if (!format.ok()) return Fail(std::string(format.status().message()));
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::ListGroupsResponse> list = client->ListGroups();
  if (!list.ok()) return Fail(std::string(list.status().message()));
  if (*format == OutputFormat::kJson || *format == OutputFormat::kYaml) {
    Json doc = Json::object();
    doc["apiVersion"] = "fleet/v1";
    doc["kind"] = "GroupList";
    Json& items = doc["items"] = Json::array();
    for (const v1::Group& group : list->groups()) items.push_back(ProtoToJson(group));
    std::cout << PrintDocument(doc, *format == OutputFormat::kJson ? "json" : "yaml");
    return 0;
  }
  bool wide = *format == OutputFormat::kWide;
  std::vector<std::string> headers = {"NAME",   "STATE", "GENERATION", "READY",
                                      "ENGINE", "NODES", "ENDPOINT",   "AGE"};
  if (wide) headers.push_back("MESSAGE");
  Table table(headers);
  for (const v1::Group& group : list->groups()) {
    std::vector<std::string> nodes;
    for (const v1::GroupRank& rank : group.ranks()) nodes.push_back(rank.node_name());
    std::vector<std::string> row = {group.name(),
                                    std::string(controller::GroupStateName(group.state())),
                                    absl::StrCat(group.generation()),
                                    absl::StrCat(ReadyRanks(group), "/", group.ranks_size()),
                                    group.engine(),
                                    absl::StrJoin(nodes, ","),
                                    group.endpoint().empty() ? "-" : group.endpoint(),
                                    FormatAge(Seconds(group.created_at(), list->now()))};
    if (wide) row.push_back(group.message());
    table.AddRow(std::move(row));
  }
  std::cout << table.Render();
  return 0;
}

int DescribeGroup(const Globals& g, const std::string& name) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::GetGroupResponse> r = client->GetGroup(name);
  if (!r.ok()) return Fail(std::string(r.status().message()));
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(ProtoToJson(*r), g.output);
    return 0;
  }
  const v1::Group& group = r->group();
  auto when = [&](const google::protobuf::Timestamp& t) {
    return absl::StrCat(TimeUtil::ToString(t), " (", FormatAge(Seconds(t, r->now())), " ago)");
  };
  std::cout << "Name:         " << group.name() << "\n"
            << "Recipe:       " << group.recipe_name() << " (" << group.recipe_path() << ")\n"
            << "Engine:       " << group.engine() << ", launch order " << group.launch_order()
            << "\n"
            << "Generation:   " << group.generation() << "\n"
            << "State:        " << controller::GroupStateName(group.state())
            << (group.message().empty() ? "" : absl::StrCat(": ", group.message())) << "\n"
            << "Endpoint:     " << (group.endpoint().empty() ? "-" : group.endpoint()) << "\n"
            << "Created:      " << when(group.created_at()) << "\n"
            << "Started:      " << when(group.started_at()) << "\n";
  if (group.has_ready_at()) {
    std::cout << "Ready:        " << when(group.ready_at()) << ", "
              << absl::FormatDuration(
                     absl::Trunc(absl::Seconds(Seconds(group.started_at(), group.ready_at())),
                                 absl::Milliseconds(1)))
              << " after the start orders\n";
  }
  std::cout << "Ranks:\n";
  Table ranks({"RANK", "NODE", "STATE", "PROCESS", "MESSAGE"});
  for (const v1::GroupRank& rank : group.ranks()) {
    ranks.AddRow({absl::StrCat(rank.rank()), rank.node_name(),
                  std::string(controller::ShardStateName(rank.status().state())), RankWhere(rank),
                  Describe(rank.status())});
  }
  for (absl::string_view line : absl::StrSplit(ranks.Render(), '\n', absl::SkipEmpty())) {
    std::cout << "  " << line << "\n";
  }
  if (group.notes_size() > 0) {
    std::cout << "Notes:\n";
    for (const std::string& note : group.notes()) std::cout << "  " << note << "\n";
  }
  std::cout << "Events:\n";
  Table events({"AGE", "KIND", "MESSAGE"});
  for (const v1::GroupEvent& e : r->events()) {
    events.AddRow({FormatAge(Seconds(e.at(), r->now())), e.kind(), e.message()});
  }
  for (absl::string_view line : absl::StrSplit(events.Render(), '\n', absl::SkipEmpty())) {
    std::cout << "  " << line << "\n";
  }
  return 0;
}

int StopGroup(const Globals& g, const std::string& name) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::StopGroupResponse> r = client->StopGroup(name, absl::Minutes(2));
  if (!r.ok()) return Fail(std::string(r.status().message()));
  std::vector<std::string> nodes;
  for (const v1::GroupRank& rank : r->group().ranks()) nodes.push_back(rank.node_name());
  std::cout << "group " << name << " stopped: every rank confirmed gone on "
            << absl::StrJoin(nodes, ", ") << std::endl;
  return 0;
}

int Logs(const Globals& g, const std::string& name, int rank, bool follow, int tail) {
  if (rank < 0 || tail < 0) return Fail("--rank and --tail must be 0 or more");
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  v1::GroupLogsRequest request;
  request.set_name(name);
  request.set_rank(static_cast<uint32_t>(rank));
  request.set_tail_lines(static_cast<uint32_t>(tail));
  while (true) {
    absl::StatusOr<v1::GroupLogsResponse> r = client->GroupLogs(request);
    if (!r.ok()) return Fail(std::string(r.status().message()));
    if (r->truncated()) {
      std::cerr << "fleet: note: earlier output of rank " << rank << " was rotated away\n";
    }
    std::cout << r->data() << std::flush;
    if (!follow) return 0;
    bool more = r->next_offset() > request.offset() && request.has_offset() &&
                r->data().size() == (request.max_bytes() ? request.max_bytes() : 1u << 20);
    request.set_offset(r->next_offset());
    if (!more) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

}  // namespace fleet::cli
