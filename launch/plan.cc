// Planning one group: a recipe placed on nodes becomes one ShardSpec per rank.
#include "launch/plan.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/host_port.h"
#include "common/status_macros.h"

namespace fleet::engine {
namespace {

using EnvList = std::vector<std::pair<std::string, std::string>>;

// vLLM's, Triton's, FlashInfer's and torch's JIT caches in an image that runs as root: kept on
// the host, a restart reuses kernels that otherwise take minutes to compile on every start.
constexpr absl::string_view kVllmCacheDirs[] = {"/root/.cache/vllm", "/root/.triton/cache",
                                                "/root/.cache/flashinfer", "/root/.cache/torch"};

// spark-vllm-docker's launch-cluster.sh mounts the host's Hugging Face cache here, and
// version-1 recipes name their model by its Hugging Face id, expecting the weights there.
constexpr absl::string_view kHfCacheSource = "~/.cache/huggingface";
constexpr absl::string_view kHfCacheTarget = "/root/.cache/huggingface";

// Sets `name` in place when present (one entry per name), else appends it.
void SetEnv(EnvList* env, absl::string_view name, std::string value) {
  for (auto& [existing, old_value] : *env) {
    if (existing == name) {
      old_value = std::move(value);
      return;
    }
  }
  env->emplace_back(std::string(name), std::move(value));
}

const std::string* FindValue(const EnvList& values, absl::string_view key) {
  for (const auto& [name, value] : values) {
    if (name == key) return &value;
  }
  return nullptr;
}

google::protobuf::Duration ToProto(absl::Duration duration) {
  absl::Duration remainder;
  const int64_t seconds = absl::IDivDuration(duration, absl::Seconds(1), &remainder);
  google::protobuf::Duration out;
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(remainder)));
  return out;
}

absl::Status CheckGroupSize(const Recipe& recipe, const EnvList& values,
                            const GroupContext& group) {
  ASSIGN_OR_RETURN(const int size, GroupSize(recipe, values));
  const size_t nodes = group.nodes.size();
  if (static_cast<size_t>(size) == nodes) return absl::OkStatus();
  const std::string have = absl::StrCat("the group has ", nodes);
  if (recipe.nodes.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(recipe, "nodes"), "nodes: ", size, " needs ", size, " nodes, ", have));
  }
  if (recipe.solo_only) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(recipe, "solo_only"), "solo_only: true needs 1 node, ", have));
  }
  return absl::InvalidArgumentError(absl::StrCat(Where(recipe, "defaults.tensor_parallel"),
                                                 "tensor_parallel × pipeline_parallel = ", size,
                                                 " needs ", size, " nodes, ", have));
}

// Mount paths as `docker run -v SRC:DST` takes them. A relative source would be resolved
// against whatever directory the agent runs in, so only absolute sources and ones under "~/"
// (expanded by the agent with its own HOME) are accepted.
absl::Status CheckMounts(const Recipe& recipe) {
  for (const MountSpec& mount : recipe.mounts) {
    const bool home = mount.source == "~" || absl::StartsWith(mount.source, "~/");
    if (!home && !absl::StartsWith(mount.source, "/")) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(recipe, "mounts"), "mount source \"", mount.source,
          "\" is relative; write an absolute host path or one under ~/ (the agent's home)"));
    }
    if (!absl::StartsWith(mount.target, "/")) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(recipe, "mounts"), "mount target \"", mount.target,
                       "\" must be an absolute path inside the container"));
    }
    if (absl::StrContains(mount.source, ':') || absl::StrContains(mount.target, ':')) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(recipe, "mounts"), "mount \"", mount.source, "\" → \"", mount.target,
                       "\" contains ':', which docker's -v SRC:DST cannot carry"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRuntime(const Recipe& recipe) {
  if (recipe.runtime == RuntimeKind::kDocker) {
    if (recipe.container.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(recipe, "container"),
                       "runtime docker needs `container:`, the image every rank runs"));
    }
    return CheckMounts(recipe);
  }
  if (!recipe.mounts.empty() || !recipe.cache_dirs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(recipe, recipe.mounts.empty() ? "cache_dirs" : "mounts"),
        "mounts and cache_dirs are bind mounts of the docker runtime; the process runtime "
        "runs on the host's file system (set runtime: docker, or remove them)"));
  }
  return absl::OkStatus();
}

// The port the head serves HTTP on: `health.port`, else `defaults.port` when it is a number.
std::optional<uint32_t> ServingPort(const Recipe& recipe, const EnvList& values) {
  if (recipe.health.port.has_value()) return *recipe.health.port;
  const std::string* port = FindValue(values, "port");
  uint32_t number = 0;
  if (port != nullptr && absl::SimpleAtoi(*port, &number) && number > 0 && number <= 65535) {
    return number;
  }
  return std::nullopt;
}

// The launch checks (controller/preflight CheckEngineLog) read NCCL's version banner and the
// transport it chose ("NET/IB : Using ...") from each rank's log, and NCCL prints those only at
// NCCL_DEBUG=INFO. Below INFO, INFO is turned on for the INIT and NET subsystems alone: a few
// dozen lines a communicator, with every warning still printed. A recipe that chose the
// subsystems, or sends NCCL's output to a file (NCCL_DEBUG_FILE), keeps its choice; the
// checks then say what they could not see.
void ShowNcclSetup(EnvList* env, std::vector<std::string>* notes) {
  if (FindValue(*env, "NCCL_DEBUG_SUBSYS") != nullptr) return;
  if (const std::string* file = FindValue(*env, "NCCL_DEBUG_FILE"); file != nullptr) {
    AddNote(notes, absl::StrCat("NCCL_DEBUG_FILE=", *file,
                                " sends NCCL's lines to that file, which the agent does not read: "
                                "the launch checks report the NCCL version and transport as not "
                                "checked"));
    return;
  }
  const std::string* level = FindValue(*env, "NCCL_DEBUG");
  const std::string upper = level == nullptr ? "" : absl::AsciiStrToUpper(*level);
  if (upper == "INFO" || upper == "TRACE") return;
  AddNote(notes,
          absl::StrCat(
              "NCCL_DEBUG=INFO with NCCL_DEBUG_SUBSYS=INIT,NET",
              level == nullptr ? "" : absl::StrCat(" (the recipe had NCCL_DEBUG=", *level, ")"),
              ": the launch checks read NCCL's version banner and its NET/IB or "
              "NET/Socket line, which NCCL logs only at INFO; INIT and NET add a "
              "few dozen lines a communicator and every warning is still logged. "
              "Set NCCL_DEBUG_SUBSYS in the recipe's env to choose otherwise"));
  SetEnv(env, "NCCL_DEBUG", "INFO");
  SetEnv(env, "NCCL_DEBUG_SUBSYS", "INIT,NET");
}

// The fabric variables of one node, then MASTER_ADDR/MASTER_PORT (see plan.h for the order).
EnvList NodeEnv(const NodeView& node, bool vllm, const GroupContext& group,
                std::vector<std::string>* notes) {
  const bool multi_node = group.nodes.size() > 1;
  EnvList env;
  if (!node.fabric_interface.empty()) {
    for (absl::string_view name :
         {"NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"}) {
      env.emplace_back(std::string(name), node.fabric_interface);
    }
  } else if (multi_node) {
    AddNote(notes, absl::StrCat(node.name,
                                "'s fabric interface is unknown: NCCL_SOCKET_IFNAME, "
                                "GLOO_SOCKET_IFNAME and TP_SOCKET_IFNAME are left unset, so NCCL "
                                "and Gloo pick an interface themselves"));
  }
  if (!node.rdma_devices.empty()) {
    // "=" makes NCCL match the names exactly (a bare "rocep1s0f1" also matches "rocep1s0f10");
    // both halves of a CX-7 port are listed so NCCL spreads traffic over the whole port.
    env.emplace_back("NCCL_IB_HCA", absl::StrCat("=", absl::StrJoin(node.rdma_devices, ",")));
    env.emplace_back("NCCL_IB_DISABLE", "0");
  } else if (multi_node) {
    AddNote(notes, absl::StrCat(node.name,
                                " has no RDMA device: NCCL_IB_HCA is unset and NCCL "
                                "falls back to TCP sockets between nodes"));
  }
  if (vllm) {
    // vLLM otherwise guesses its address from the default route, which on a Spark is the
    // control network rather than the ConnectX-7 link.
    if (!node.fabric_address.empty()) {
      env.emplace_back("VLLM_HOST_IP", node.fabric_address);
    } else if (multi_node) {
      AddNote(notes, absl::StrCat(node.name,
                                  "'s fabric address is unknown: VLLM_HOST_IP is "
                                  "unset, so vLLM uses the address of its default route"));
    }
  }
  env.emplace_back("MASTER_ADDR", group.master_addr);
  env.emplace_back("MASTER_PORT", absl::StrCat(group.master_port));
  return env;
}

}  // namespace

absl::StatusOr<GroupPlan> PlanGroup(const Recipe& recipe, const std::vector<Override>& overrides,
                                    const GroupContext& group) {
  ASSIGN_OR_RETURN(const EnvList values, EffectiveValues(recipe, overrides));
  ASSIGN_OR_RETURN(const std::string rendered, RenderCommand(recipe, values));
  ASSIGN_OR_RETURN(const std::vector<std::string> command, SplitCommand(rendered));
  if (command.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(recipe, "command"),
                     "the command is empty once rendered; write the engine's command line, "
                     "e.g. `vllm serve MODEL --port {port}`"));
  }
  RETURN_IF_ERROR(CheckGroupSize(recipe, values, group));
  absl::StatusOr<const EngineAdapter*> found = FindAdapter(recipe.engine);
  if (!found.ok()) {
    return absl::Status(found.status().code(),
                        absl::StrCat(Where(recipe, "engine"), found.status().message()));
  }
  const EngineAdapter& adapter = **found;
  if (group.master_addr.empty() || group.master_port <= 0 || group.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group ", group.group, " has master address \"", group.master_addr, "\" and port ",
        group.master_port, "; placement must choose rank 0's fabric address and a free port"));
  }
  RETURN_IF_ERROR(CheckRuntime(recipe));
  absl::StatusOr<std::optional<int>> fixed_port = adapter.FixedMasterPort(command);
  if (!fixed_port.ok()) {
    return absl::Status(fixed_port.status().code(),
                        absl::StrCat(Where(recipe, "command"), fixed_port.status().message()));
  }

  GroupPlan plan;
  // The group as placed, with the master port the command fixes itself, if it does.
  GroupContext placed = group;
  if (fixed_port->has_value() && **fixed_port != group.master_port) {
    placed.master_port = **fixed_port;
    plan.notes.push_back(
        absl::StrCat("the script listens on master port ", placed.master_port,
                     " itself: MASTER_PORT is ", placed.master_port, " and workers wait for ",
                     JoinHostPort(placed.master_addr, static_cast<uint16_t>(placed.master_port)),
                     " (placement had chosen ", group.master_port, ")"));
  }
  plan.group = group.group;
  plan.generation = group.generation;
  plan.launch_order = adapter.launch_order();
  const bool docker = recipe.runtime == RuntimeKind::kDocker;
  const bool vllm = adapter.name() == "vllm";

  std::vector<MountSpec> mounts = recipe.mounts;
  if (docker && recipe.version == 1) {
    mounts.push_back({.source = std::string(kHfCacheSource),
                      .target = std::string(kHfCacheTarget),
                      .read_only = false});
    plan.notes.push_back(absl::StrCat(
        "mounted ", kHfCacheSource, " at ", kHfCacheTarget,
        " as spark-vllm-docker does: a version-1 recipe finds its model in the host's Hugging "
        "Face cache"));
  }
  std::vector<std::string> cache_dirs = recipe.cache_dirs;
  if (docker && vllm && cache_dirs.empty()) {
    for (absl::string_view dir : kVllmCacheDirs) cache_dirs.emplace_back(dir);
    plan.notes.push_back(absl::StrCat(
        "kept vLLM's JIT caches across restarts (cache_dirs: ", absl::StrJoin(cache_dirs, ", "),
        "); set cache_dirs to choose others"));
  }

  // A plan reads no node, so it cannot judge these; preflight does, on the nodes apply picks.
  const Requirements& req = recipe.requirements;
  std::vector<std::string> unchecked;
  if (!req.nccl.empty()) unchecked.push_back(absl::StrCat("nccl ", req.nccl));
  if (req.mtu) unchecked.push_back(absl::StrCat("mtu ", *req.mtu));
  if (!req.gpu_arch.empty()) unchecked.push_back(absl::StrCat("gpu_arch ", req.gpu_arch));
  if (req.min_free_disk_bytes) unchecked.push_back("min_free_disk");
  if (!unchecked.empty()) {
    plan.notes.push_back(absl::StrCat(
        "requires ", absl::StrJoin(unchecked, ", "),
        " are not checked by a plan: `fleet preflight` and `fleet apply` check them on the nodes"));
  }

  const std::optional<uint32_t> port = ServingPort(recipe, values);
  const NodeView& head = group.nodes.front();
  const std::string& head_host = head.fabric_address.empty() ? head.address : head.fabric_address;
  if (port.has_value()) {
    plan.endpoint = absl::StrCat("http://", JoinHostPort(head_host, static_cast<uint16_t>(*port)));
  } else {
    plan.notes.push_back(
        "the head serves no known port (no health.port, no numeric defaults.port): no "
        "readiness probe and no endpoint; the group is ready once every rank runs");
  }

  const int world = static_cast<int>(group.nodes.size());
  for (int rank = 0; rank < world; ++rank) {
    const NodeView& node = group.nodes[rank];
    ASSIGN_OR_RETURN(RankCommand rank_command,
                     adapter.RenderRank(recipe, command, placed, rank, &plan.notes));
    EnvList env = NodeEnv(node, vllm, placed, &plan.notes);
    for (auto& [name, value] : rank_command.env) SetEnv(&env, name, std::move(value));
    for (const auto& [name, value] : recipe.env) {
      const std::string* planned = FindValue(env, name);
      if (planned != nullptr && *planned != value) {
        AddNote(&plan.notes, absl::StrCat("recipe env ", name, "=", value, " replaces ", *planned,
                                          " on ", node.name));
      }
      SetEnv(&env, name, value);
    }
    // vLLM logs NCCL's setup only through NCCL itself (fleet-engine prints its own banner).
    if (world > 1 && vllm) ShowNcclSetup(&env, &plan.notes);

    v1::ShardSpec& spec = plan.ranks.emplace_back();
    spec.set_group(group.group);
    spec.set_generation(group.generation);
    spec.set_rank(rank);
    spec.set_world_size(world);
    spec.set_runtime(docker ? v1::SHARD_RUNTIME_DOCKER : v1::SHARD_RUNTIME_PROCESS);
    for (std::string& word : rank_command.argv) spec.add_argv(std::move(word));
    for (auto& [name, value] : env) {
      v1::EnvVar* var = spec.add_env();
      var->set_name(name);
      var->set_value(value);
    }
    if (docker) {
      spec.set_image(recipe.container);
      for (const MountSpec& mount : mounts) {
        v1::Mount* out = spec.add_mounts();
        out->set_source(mount.source);
        out->set_target(mount.target);
        out->set_read_only(mount.read_only);
      }
      for (const std::string& dir : cache_dirs) spec.add_cache_dirs(dir);
      if (recipe.requirements.shm_bytes.has_value()) {
        spec.set_shm_bytes(*recipe.requirements.shm_bytes);
      }
      spec.set_gpus(node.has_gpus);
      spec.set_infiniband(node.has_infiniband);
    }
    if (recipe.requirements.memlock_bytes.has_value()) {
      spec.set_memlock_bytes(*recipe.requirements.memlock_bytes);
    }
    for (const UlimitSpec& limit : recipe.ulimits) {
      if (limit.name == "memlock") continue;  // memlock_bytes
      v1::Ulimit* out = spec.add_ulimits();
      out->set_name(limit.name);
      out->set_soft(limit.soft);
      out->set_hard(limit.hard);
    }
    if (plan.launch_order == LaunchOrder::kHeadFirst && rank > 0) {
      spec.set_wait_for_tcp(
          JoinHostPort(placed.master_addr, static_cast<uint16_t>(placed.master_port)));
      *spec.mutable_wait_timeout() = ToProto(recipe.health.start_timeout);
    }
    if (plan.launch_order == LaunchOrder::kWorkersFirst && rank == 0 && world > 1) {
      for (int k = 1; k < world; ++k) {
        std::string worker =
            JoinHostPort(placed.nodes[k].fabric_address, static_cast<uint16_t>(placed.master_port));
        if (k == 1) {
          spec.set_wait_for_tcp(std::move(worker));
        } else {
          spec.add_also_wait_for_tcp(std::move(worker));
        }
      }
      *spec.mutable_wait_timeout() = ToProto(recipe.health.start_timeout);
    }
    if (rank == 0 && port.has_value()) {
      v1::ReadinessProbe& probe = *spec.mutable_readiness();
      probe.set_host(head_host);
      probe.set_port(*port);
      probe.set_health_path(recipe.health.path);
      probe.set_check_models(recipe.health.check_models);
      probe.set_check_completion(recipe.health.check_completion);
      *probe.mutable_period() = ToProto(recipe.health.period);
      *probe.mutable_request_timeout() = ToProto(recipe.health.request_timeout);
      v1::HeadWatch& watch = *probe.mutable_watch();
      *watch.mutable_period() = ToProto(recipe.health.watch_period);
      watch.set_failure_threshold(static_cast<uint32_t>(recipe.health.failure_threshold));
      watch.set_metrics_path("/metrics");
      *watch.mutable_stall_timeout() = ToProto(recipe.health.stall_timeout);
      *watch.mutable_idle_probe_after() = ToProto(recipe.health.idle_probe_after);
      *watch.mutable_idle_probe_timeout() = ToProto(recipe.health.idle_probe_timeout);
    }
  }
  return plan;
}

}  // namespace fleet::engine
