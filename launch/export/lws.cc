// ExportLeaderWorkerSet: a LeaderWorkerSet whose leader runs rank 0 and whose one worker template
// runs every other rank, plus a Service in front of the leaders.
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "launch/export/export.h"
#include "launch/export/yaml_writer.h"

namespace fleet::engine {
namespace {

using EnvList = std::vector<std::pair<std::string, std::string>>;

// Labels every pod of the group carries; LWS adds its own (name, group and worker index).
constexpr char kRoleLabel[] = "sparkfleet.io/role";
// Stands for the worker index in a generalized value until Resolve writes $(LWS_WORKER_INDEX).
constexpr char kWorkerIndex[] = "fleet-worker-index.invalid";
// The pod's own IP, declared first in every container's env so later values can refer to it
// (Kubernetes expands $(NAME) only for variables declared before).
constexpr char kPodIpVar[] = "FLEET_POD_IP";

// A value of the plan as Kubernetes reads it: "$(" escaped as "$$(" (Kubernetes would expand
// it), then the placeholders replaced by the variables LWS and the downward API provide.
std::string Resolve(const std::string& value) {
  std::string out = absl::StrReplaceAll(value, {{"$(", "$$("}});
  return absl::StrReplaceAll(out, {{kHeadAddress, "$(LWS_LEADER_ADDRESS)"},
                                   {kSelfAddress, absl::StrCat("$(", kPodIpVar, ")")},
                                   {kHome, "/root"},
                                   {kWorkerIndex, "$(LWS_WORKER_INDEX)"}});
}

// A value that differs between worker ranks: `first` and `second` are the values of ranks 1 and
// 2 of a larger plan; they must differ only by "1" against "2", which becomes LWS_WORKER_INDEX.
absl::StatusOr<std::string> Generalize(const std::string& what, const std::string& actual,
                                       const std::string& first, const std::string& second) {
  size_t prefix = 0;
  while (prefix < first.size() && prefix < second.size() && first[prefix] == second[prefix]) {
    ++prefix;
  }
  size_t suffix = 0;
  while (suffix < first.size() - prefix && suffix < second.size() - prefix &&
         first[first.size() - 1 - suffix] == second[second.size() - 1 - suffix]) {
    ++suffix;
  }
  if (actual != first || first.substr(prefix, first.size() - prefix - suffix) != "1" ||
      second.substr(prefix, second.size() - prefix - suffix) != "2") {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " differs between worker ranks (\"", first, "\" on rank 1, \"", second,
        "\" on rank 2) by more than the rank number, so one LWS worker template cannot carry it; "
        "export for Slurm, whose script holds every rank"));
  }
  return absl::StrCat(first.substr(0, prefix), kWorkerIndex, first.substr(first.size() - suffix));
}

struct Launch {
  std::vector<std::string> argv;
  EnvList env;
};

Launch LaunchOf(const v1::ShardSpec& spec) {
  Launch launch{.argv = {spec.argv().begin(), spec.argv().end()}};
  for (const v1::EnvVar& var : spec.env()) launch.env.emplace_back(var.name(), var.value());
  return launch;
}

// The worker template's launch: rank 1's, with what varies by rank written with
// LWS_WORKER_INDEX, found by comparing ranks 1 and 2 of a plan one rank larger.
absl::StatusOr<Launch> WorkerLaunch(const v1::ShardSpec& actual, const v1::ShardSpec& first,
                                    const v1::ShardSpec& second) {
  Launch out = LaunchOf(actual);
  const Launch a = LaunchOf(first), b = LaunchOf(second);
  if (a.argv.size() != b.argv.size() || a.env.size() != b.env.size() ||
      out.argv.size() != a.argv.size() || out.env.size() != a.env.size()) {
    return absl::FailedPreconditionError(
        "the engine's worker ranks differ in the number of their arguments or variables, so one "
        "LWS worker template cannot carry them; export for Slurm, whose script holds every rank");
  }
  for (size_t k = 0; k < a.argv.size(); ++k) {
    if (a.argv[k] == b.argv[k]) continue;
    ASSIGN_OR_RETURN(out.argv[k],
                     Generalize(absl::StrCat("argument ", k), out.argv[k], a.argv[k], b.argv[k]));
  }
  for (size_t k = 0; k < a.env.size(); ++k) {
    if (a.env[k] == b.env[k]) continue;
    if (a.env[k].first != b.env[k].first) {
      return absl::FailedPreconditionError(
          "the engine's worker ranks set different variables, so one LWS worker template cannot "
          "carry them; export for Slurm, whose script holds every rank");
    }
    ASSIGN_OR_RETURN(out.env[k].second, Generalize(a.env[k].first, out.env[k].second,
                                                   a.env[k].second, b.env[k].second));
  }
  return out;
}

int64_t Seconds(const google::protobuf::Duration& d, int64_t fallback) {
  return d.seconds() > 0 ? d.seconds() : fallback;
}

// Container path "/root/.cache/vllm" → volume name "cache-root-cache-vllm".
std::string VolumeName(absl::string_view prefix, absl::string_view path) {
  std::string name(prefix);
  for (char c : path) {
    const bool keep = absl::ascii_isalnum(c);
    if (!keep && !name.empty() && name.back() == '-') continue;
    name += keep ? absl::ascii_tolower(c) : '-';
  }
  while (!name.empty() && name.back() == '-') name.pop_back();
  return name.substr(0, 63);
}

OrderedJson PodSpec(const v1::ShardSpec& spec, const Launch& launch, const Recipe& recipe,
                    const ExportOptions& options, const std::string& image, bool leader,
                    bool head_first) {
  OrderedJson container = OrderedJson::object();
  container["name"] = "engine";
  container["image"] = image;
  OrderedJson command = OrderedJson::array();
  for (const std::string& word : launch.argv) command.push_back(Resolve(word));
  container["command"] = std::move(command);
  OrderedJson env = OrderedJson::array();
  env.push_back(
      {{"name", kPodIpVar}, {"valueFrom", {{"fieldRef", {{"fieldPath", "status.podIP"}}}}}});
  for (const auto& [name, value] : launch.env) {
    env.push_back({{"name", name}, {"value", Resolve(value)}});
  }
  container["env"] = std::move(env);

  if (leader && spec.readiness().port() > 0) {
    const v1::ReadinessProbe& probe = spec.readiness();
    const int port = static_cast<int>(probe.port());
    container["ports"] = OrderedJson::array({{{"name", "http"}, {"containerPort", port}}});
    const int64_t period = std::max<int64_t>(1, Seconds(probe.period(), 1));
    const int64_t timeout = std::max<int64_t>(1, Seconds(probe.request_timeout(), 2));
    OrderedJson http = {{"path", probe.health_path()}, {"port", port}};
    // The group may take the recipe's start_timeout to load; the startup probe allows that
    // much, after which readiness takes over.
    container["startupProbe"] = {
        {"httpGet", http},
        {"periodSeconds", 10},
        {"failureThreshold",
         std::max<int64_t>(1, absl::ToInt64Seconds(recipe.health.start_timeout) / 10)}};
    container["readinessProbe"] = {{"httpGet", http},
                                   {"periodSeconds", period},
                                   {"timeoutSeconds", timeout},
                                   {"failureThreshold", 3}};
  }

  OrderedJson limits = OrderedJson::object();
  if (options.gpus_per_node > 0) limits["nvidia.com/gpu"] = options.gpus_per_node;
  if (options.rdma == RdmaAccess::kDevicePlugin) limits[options.rdma_resource] = 1;
  if (!limits.empty()) container["resources"] = {{"limits", limits}};
  // IPC_LOCK lifts RLIMIT_MEMLOCK for the engine (Kubernetes has no ulimit setting); the
  // host-network RDMA path also needs the host's /dev/infiniband, hence privileged.
  OrderedJson security = {{"capabilities", {{"add", OrderedJson::array({"IPC_LOCK"})}}}};
  if (options.rdma == RdmaAccess::kHostNetwork && spec.infiniband()) security["privileged"] = true;
  container["securityContext"] = std::move(security);

  OrderedJson mounts = OrderedJson::array();
  OrderedJson volumes = OrderedJson::array();
  OrderedJson shm = {{"medium", "Memory"}};
  if (spec.shm_bytes() > 0) shm["sizeLimit"] = absl::StrCat(spec.shm_bytes());
  mounts.push_back({{"name", "dshm"}, {"mountPath", "/dev/shm"}});
  volumes.push_back({{"name", "dshm"}, {"emptyDir", shm}});
  for (const v1::Mount& mount : spec.mounts()) {
    const std::string name = VolumeName("mount-", mount.target());
    OrderedJson m = {{"name", name}, {"mountPath", mount.target()}};
    if (mount.read_only()) m["readOnly"] = true;
    mounts.push_back(std::move(m));
    volumes.push_back({{"name", name}, {"hostPath", {{"path", Resolve(mount.source())}}}});
  }
  for (const std::string& dir : spec.cache_dirs()) {
    const std::string name = VolumeName("cache-", dir);
    mounts.push_back({{"name", name}, {"mountPath", dir}});
    std::string host = absl::StrCat("/var/cache/sparkfleet/", spec.group(), "/",
                                    absl::StrReplaceAll(dir, {{"/", "_"}}));
    volumes.push_back(
        {{"name", name}, {"hostPath", {{"path", host}, {"type", "DirectoryOrCreate"}}}});
  }
  if (options.rdma == RdmaAccess::kHostNetwork && spec.infiniband()) {
    mounts.push_back({{"name", "infiniband"}, {"mountPath", "/dev/infiniband"}});
    volumes.push_back({{"name", "infiniband"}, {"hostPath", {{"path", "/dev/infiniband"}}}});
  }
  container["volumeMounts"] = std::move(mounts);

  OrderedJson pod = OrderedJson::object();
  if (options.rdma == RdmaAccess::kHostNetwork) {
    pod["hostNetwork"] = true;
    // Host-network pods resolve cluster names (LWS_LEADER_ADDRESS) only with this policy.
    pod["dnsPolicy"] = "ClusterFirstWithHostNet";
  }
  if (!leader && head_first) {
    const std::string wait = absl::StrCat(
        "i=0; until nc -z -w 2 \"$LWS_LEADER_ADDRESS\" ",
        spec.wait_for_tcp().substr(spec.wait_for_tcp().rfind(':') + 1),
        "; do i=$((i+1)); if [ $i -ge ", Seconds(spec.wait_timeout(), 600),
        " ]; then echo \"the head's master port did not answer\" >&2; exit 1; fi; sleep 1; done");
    pod["initContainers"] =
        OrderedJson::array({{{"name", "wait-for-head"},
                             {"image", options.wait_image},
                             {"command", OrderedJson::array({"sh", "-c", wait})}}});
  }
  pod["containers"] = OrderedJson::array({std::move(container)});
  pod["volumes"] = std::move(volumes);
  return pod;
}

}  // namespace

absl::StatusOr<Export> ExportLeaderWorkerSet(const Recipe& recipe, const ExportOptions& options) {
  std::string image = recipe.runtime == RuntimeKind::kDocker ? recipe.container : options.image;
  if (image.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        Where(recipe, "runtime"),
        "runtime: process runs the engine from each node's PATH, but Kubernetes runs containers; "
        "pass --image IMAGE, an image holding `",
        recipe.engine == "native" ? "fleet-engine" : "the engine", "`"));
  }
  ASSIGN_OR_RETURN(GroupPlan plan, PlanForExport(recipe, options));
  const int size = static_cast<int>(plan.ranks.size());
  Export out;
  out.notes = plan.notes;
  if (recipe.runtime == RuntimeKind::kProcess) {
    out.notes.push_back(absl::StrCat("runtime: process runs in image ", image, " (--image)"));
  }
  const bool head_first = plan.launch_order == LaunchOrder::kHeadFirst && size > 1;
  Launch worker = LaunchOf(plan.ranks.front());
  if (size > 1) {
    ExportOptions one_more = options;
    one_more.nodes = size + 1;
    ASSIGN_OR_RETURN(GroupPlan larger, PlanForExport(recipe, one_more));
    ASSIGN_OR_RETURN(worker, WorkerLaunch(plan.ranks[1], larger.ranks[1], larger.ranks[2]));
  }
  if (!recipe.placement.empty()) {
    out.notes.push_back(absl::StrCat(
        "placement [", absl::StrJoin(recipe.placement, ", "),
        "] is not exported: Kubernetes places pods by labels, not node names; add a nodeSelector "
        "or affinity with labels your nodes carry"));
  }
  if (plan.ranks.front().has_memlock_bytes()) {
    out.notes.push_back(
        "requires.memlock: Kubernetes sets no RLIMIT_MEMLOCK; the IPC_LOCK capability lets the "
        "engine lock memory without limit instead");
  }
  const v1::ReadinessProbe& probe = plan.ranks.front().readiness();
  if (probe.port() > 0 && (probe.check_models() || probe.check_completion())) {
    out.notes.push_back(absl::StrCat(
        "readiness: the probe is GET ", probe.health_path(),
        "; SparkFleet also asks /v1/models for a model and /v1/completions for one token, which "
        "an httpGet probe cannot"));
  }
  for (const v1::Mount& mount : plan.ranks.front().mounts()) {
    if (absl::StartsWith(mount.source(), kHome)) {
      out.notes.push_back(absl::StrCat("mount ", mount.target(), ": the host path under ~ is ",
                                       Resolve(mount.source()),
                                       " (the kubelet has no HOME); edit it for your nodes"));
    }
  }
  if (options.rdma == RdmaAccess::kHostNetwork &&
      absl::c_any_of(plan.ranks.front().env(),
                     [](const v1::EnvVar& var) { return var.value() == kSelfAddress; })) {
    out.notes.push_back(
        "each rank's own address is its pod IP, which on the host network is the node's "
        "InternalIP: start the kubelet with --node-ip set to the fabric address so the ranks talk "
        "over the ConnectX-7 link, as SparkFleet's VLLM_HOST_IP does");
  }
  if (!plan.ranks.front().cache_dirs().empty()) {
    out.notes.push_back(absl::StrCat("cache_dirs persist on each node under /var/cache/sparkfleet/",
                                     options.group, "/ (hostPath)"));
  }
  if (options.rdma == RdmaAccess::kHostNetwork && plan.ranks.front().infiniband()) {
    out.notes.push_back(
        "RDMA through the host network: pods are privileged to open the host's /dev/infiniband; "
        "--rdma device-plugin uses the RDMA device plugin's resource instead");
  }

  OrderedJson labels = {{"app.kubernetes.io/name", "sparkfleet"},
                        {"app.kubernetes.io/instance", options.group}};
  OrderedJson metadata = {{"name", options.group}};
  if (!options.k8s_namespace.empty()) metadata["namespace"] = options.k8s_namespace;
  metadata["labels"] = labels;

  OrderedJson leader_labels = labels;
  leader_labels[kRoleLabel] = "leader";
  OrderedJson worker_labels = labels;
  worker_labels[kRoleLabel] = "worker";
  OrderedJson lws = OrderedJson::object();
  lws["apiVersion"] = "leaderworkerset.x-k8s.io/v1";
  lws["kind"] = "LeaderWorkerSet";
  lws["metadata"] = metadata;
  OrderedJson rolling = {{"maxUnavailable", options.max_unavailable}, {"maxSurge", 0}};
  if (int n = 0; absl::SimpleAtoi(options.max_unavailable, &n)) rolling["maxUnavailable"] = n;
  lws["spec"] = {
      {"replicas", recipe.replicas},
      // Workers are created with the leader; a head-first engine's workers wait for the head's
      // master port in an init container (LeaderReady would deadlock: vLLM's head is ready only
      // once its workers joined).
      {"startupPolicy", "LeaderCreated"},
      {"rolloutStrategy", {{"type", "RollingUpdate"}, {"rollingUpdateConfiguration", rolling}}},
      {"leaderWorkerTemplate",
       {{"size", size},
        {"restartPolicy", "RecreateGroupOnPodRestart"},
        {"leaderTemplate",
         {{"metadata", {{"labels", leader_labels}}},
          {"spec", PodSpec(plan.ranks.front(), LaunchOf(plan.ranks.front()), recipe, options, image,
                           /*leader=*/true, head_first)}}},
        {"workerTemplate",
         {{"metadata", {{"labels", worker_labels}}},
          {"spec", PodSpec(size > 1 ? plan.ranks[1] : plan.ranks.front(), worker, recipe, options,
                           image, /*leader=*/size == 1, head_first)}}}}}};

  std::string text =
      absl::StrCat("# Exported by `fleet export ", recipe.path, " --format lws`: group ",
                   options.group, ", ", size, " rank(s), engine ", recipe.engine, ".\n");
  for (const std::string& note : out.notes) absl::StrAppend(&text, "# note: ", note, "\n");
  absl::StrAppend(&text, WriteYaml(lws));
  if (probe.port() > 0) {
    OrderedJson service = OrderedJson::object();
    service["apiVersion"] = "v1";
    service["kind"] = "Service";
    OrderedJson service_metadata = {{"name", absl::StrCat(options.group, "-leader")}};
    if (!options.k8s_namespace.empty()) service_metadata["namespace"] = options.k8s_namespace;
    service_metadata["labels"] = labels;
    service["metadata"] = service_metadata;
    const int port = static_cast<int>(probe.port());
    service["spec"] = {
        {"selector",
         {{"leaderworkerset.sigs.k8s.io/name", options.group},
          {"leaderworkerset.sigs.k8s.io/worker-index", "0"}}},
        {"ports", OrderedJson::array({{{"name", "http"}, {"port", port}, {"targetPort", port}}})}};
    absl::StrAppend(&text, "---\n", WriteYaml(service));
  }
  out.text = std::move(text);
  return out;
}

}  // namespace fleet::engine
