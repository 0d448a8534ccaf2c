// ExportSlurm: one sbatch script whose ranks are the plan's, one task per node.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "launch/docker_run.h"
#include "launch/export/export.h"

namespace fleet::engine {
namespace {

// Where the script puts what only the running job knows; replaced by shell variables.
constexpr char kEnvFile[] = "fleet-env-file.invalid";
constexpr char kCacheRoot[] = "fleet-cache-root.invalid";

// `value` as one double-quoted shell word, with the placeholders expanded by the shell.
std::string Word(const std::string& value) {
  std::string quoted =
      absl::StrReplaceAll(value, {{"\\", "\\\\"}, {"\"", "\\\""}, {"$", "\\$"}, {"`", "\\`"}});
  quoted = absl::StrReplaceAll(quoted, {{kHeadAddress, "${FLEET_HEAD_ADDR}"},
                                        {kSelfAddress, "${FLEET_SELF_ADDR}"},
                                        {kHome, "${HOME}"},
                                        {kEnvFile, "${env_file}"},
                                        {kCacheRoot, "${FLEET_CACHE_ROOT}"}});
  return absl::StrCat("\"", quoted, "\"");
}

std::string Words(const std::vector<std::string>& words) {
  std::vector<std::string> out;
  for (const std::string& word : words) out.push_back(Word(word));
  return absl::StrJoin(out, " ");
}

// The lines that run one rank, indented for the case branch.
std::string RankBody(const v1::ShardSpec& spec) {
  std::string body;
  const std::string pad = "      ";
  if (spec.runtime() == v1::SHARD_RUNTIME_DOCKER) {
    absl::StrAppend(&body, pad, "env_file=$(mktemp)\n");
    absl::StrAppend(&body, pad, "trap 'rm -f \"$env_file\"' EXIT\n");
    for (const v1::EnvVar& var : spec.env()) {
      absl::StrAppend(&body, pad, "printf '%s\\n' ",
                      Word(absl::StrCat(var.name(), "=", var.value())), " >>\"$env_file\"\n");
    }
    std::vector<std::string> run =
        RenderDockerRun(spec, absl::StrCat(kCacheRoot, "/", spec.group()), kEnvFile, std::nullopt);
    // In the foreground and removed when it ends, so the rank's exit is the container's and
    // Slurm sees it.
    std::vector<std::string> foreground;
    for (const std::string& word : run) {
      if (word == "--detach") continue;
      foreground.push_back(word);
      if (foreground.size() == 2 && word == "run") foreground.push_back("--rm");
    }
    absl::StrAppend(&body, pad, Words(foreground), "\n");
    return body;
  }
  for (const v1::EnvVar& var : spec.env()) {
    absl::StrAppend(&body, pad, "export ", var.name(), "=", Word(var.value()), "\n");
  }
  absl::StrAppend(&body, pad, "exec ", Words({spec.argv().begin(), spec.argv().end()}), "\n");
  return body;
}

}  // namespace

absl::StatusOr<Export> ExportSlurm(const Recipe& recipe, const ExportOptions& options) {
  ASSIGN_OR_RETURN(GroupPlan plan, PlanForExport(recipe, options));
  const int size = static_cast<int>(plan.ranks.size());
  Export out;
  out.notes = plan.notes;
  const v1::ShardSpec& head = plan.ranks.front();
  const bool head_first = plan.launch_order == LaunchOrder::kHeadFirst && size > 1;
  if (!recipe.placement.empty()) {
    out.notes.push_back(absl::StrCat(
        "placement [", absl::StrJoin(recipe.placement, ", "),
        "] becomes --nodelist; Slurm orders the hosts itself, so the head is the first host of "
        "SLURM_JOB_NODELIST, not necessarily ",
        recipe.placement.front()));
  }
  if (recipe.replicas > 1) {
    out.notes.push_back(absl::StrCat("replicas: ", recipe.replicas,
                                     ": the script runs one group; submit it once per replica"));
  }
  if (head.runtime() == v1::SHARD_RUNTIME_DOCKER && !head.cache_dirs().empty()) {
    out.notes.push_back(
        "cache_dirs persist under $FLEET_CACHE_ROOT (default ~/.cache/sparkfleet) on each node");
  }
  if (head.readiness().port() > 0) {
    out.notes.push_back(
        "readiness: Slurm has no probe; the script prints the endpoint, and `curl "
        "ENDPOINT/health` tells when the group serves");
  }

  std::string s = "#!/bin/bash\n";
  absl::StrAppend(&s, "#SBATCH --job-name=", options.group, "\n");
  absl::StrAppend(&s, "#SBATCH --nodes=", size, "\n");
  absl::StrAppend(&s, "#SBATCH --ntasks-per-node=1\n");
  if (options.gpus_per_node > 0) {
    absl::StrAppend(&s, "#SBATCH --gpus-per-node=", options.gpus_per_node, "\n");
  }
  if (!recipe.placement.empty()) {
    absl::StrAppend(&s, "#SBATCH --nodelist=", absl::StrJoin(recipe.placement, ","), "\n");
  }
  if (!options.partition.empty())
    absl::StrAppend(&s, "#SBATCH --partition=", options.partition, "\n");
  if (!options.time_limit.empty()) absl::StrAppend(&s, "#SBATCH --time=", options.time_limit, "\n");
  absl::StrAppend(&s, "# Exported by `fleet export ", recipe.path, " --format slurm`: group ",
                  options.group, ", ", size, " rank(s), engine ", recipe.engine, ".\n");
  for (const std::string& note : out.notes) absl::StrAppend(&s, "# note: ", note, "\n");
  absl::StrAppend(&s, "set -euo pipefail\n\n");
  absl::StrAppend(
      &s,
      "# The head is the first host of the allocation; every rank reaches it at its IPv4 "
      "address.\n"
      "head_host=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n"
      "FLEET_HEAD_ADDR=$(getent ahostsv4 \"$head_host\" | awk 'NR == 1 { print $1 }')\n"
      "export FLEET_HEAD_ADDR\n"
      "export FLEET_CACHE_ROOT=${FLEET_CACHE_ROOT:-$HOME/.cache/sparkfleet}\n");
  if (head.readiness().port() > 0) {
    absl::StrAppend(
        &s, "echo \"group ", options.group,
        ": head $head_host, endpoint http://${FLEET_HEAD_ADDR}:", head.readiness().port(), "\"\n");
  }
  absl::StrAppend(&s,
                  "\n# One rank; srun runs it once per node with rank = SLURM_NODEID.\n"
                  "fleet_rank() {\n"
                  "  set -euo pipefail\n"
                  "  local rank=$SLURM_NODEID\n");
  if (!options.fabric_interface.empty()) {
    absl::StrAppend(&s, "  FLEET_SELF_ADDR=$(ip -4 -o addr show dev ", options.fabric_interface,
                    " | awk '{ split($4, a, \"/\"); print a[1]; exit }')\n");
  } else {
    absl::StrAppend(&s,
                    "  FLEET_SELF_ADDR=$(getent ahostsv4 \"$(hostname)\" | awk 'NR == 1 { print "
                    "$1 }')\n");
  }
  absl::StrAppend(&s, "  export FLEET_SELF_ADDR\n");
  if (head.has_memlock_bytes()) {
    // The agent raises RLIMIT_MEMLOCK for its shards; here the rank asks for it, and says when
    // the node's slurmd (LimitMEMLOCK in its unit, PropagateResourceLimits) keeps it lower.
    absl::StrAppend(&s,
                    "  ulimit -l unlimited 2>/dev/null || echo \"rank $rank: warning: memlock "
                    "kept at $(ulimit -l) KiB; run slurmd with LimitMEMLOCK=infinity\" >&2\n");
  }
  if (head_first) {
    const std::string& wait = plan.ranks[1].wait_for_tcp();
    const std::string port = wait.substr(wait.rfind(':') + 1);
    const int64_t timeout_s =
        plan.ranks[1].wait_timeout().seconds() > 0 ? plan.ranks[1].wait_timeout().seconds() : 600;
    absl::StrAppend(
        &s, "  if [ \"$rank\" -gt 0 ]; then\n",
        "    # Workers start once the head's master port answers, as SparkFleet starts them.\n",
        "    local deadline=$((SECONDS + ", timeout_s, "))\n",
        "    until (exec 3<>\"/dev/tcp/${FLEET_HEAD_ADDR}/", port, "\") 2>/dev/null; do\n",
        "      if [ \"$SECONDS\" -ge \"$deadline\" ]; then\n",
        "        echo \"rank $rank: the head's master port ${FLEET_HEAD_ADDR}:", port,
        " did not answer\" >&2\n", "        exit 1\n", "      fi\n", "      sleep 1\n",
        "    done\n", "  fi\n");
  }
  absl::StrAppend(&s, "  case \"$rank\" in\n");
  for (size_t rank = 0; rank < plan.ranks.size(); ++rank) {
    absl::StrAppend(&s, "    ", rank, ")\n", RankBody(plan.ranks[rank]), "      ;;\n");
  }
  absl::StrAppend(&s,
                  "    *)\n"
                  "      echo \"rank $rank: this script has ranks 0-",
                  size - 1,
                  "\" >&2\n"
                  "      exit 1\n"
                  "      ;;\n"
                  "  esac\n"
                  "}\n"
                  "export -f fleet_rank\n\n");
  absl::StrAppend(&s,
                  "# Any rank ending ends the job: a failure kills the others at once "
                  "(--kill-on-bad-exit), a clean exit within 5 s (--wait).\n"
                  "srun --nodes=",
                  size, " --ntasks=", size,
                  " --ntasks-per-node=1 --kill-on-bad-exit=1 --wait=5 bash -c fleet_rank\n");
  out.text = std::move(s);
  return out;
}

}  // namespace fleet::engine
