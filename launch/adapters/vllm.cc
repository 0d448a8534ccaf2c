// The vLLM adapter: the rank flags of vLLM's multi-node multiprocessing backend.
#include "launch/adapters/vllm.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "launch/adapters/shell_script.h"

namespace fleet::engine {
namespace {

// Options of `vllm serve` this adapter sets, removes or inspects, by their canonical names.
constexpr absl::string_view kNnodes = "--nnodes";
constexpr absl::string_view kNodeRank = "--node-rank";
constexpr absl::string_view kMasterAddr = "--master-addr";
constexpr absl::string_view kMasterPort = "--master-port";
constexpr absl::string_view kHeadless = "--headless";
constexpr absl::string_view kBackend = "--distributed-executor-backend";
constexpr absl::string_view kApiServerCount = "--api-server-count";

// The name vLLM's parser reads in an option word, or "" for a word that is no long option:
// FlexibleArgumentParser takes "--node_rank" for "--node-rank", "--flag=value" carries its
// value, and -n and -r are the short names of --nnodes and --node-rank.
std::string OptionName(absl::string_view word) {
  absl::string_view name = word.substr(0, word.find('='));
  if (name == "-n") return std::string(kNnodes);
  if (name == "-r") return std::string(kNodeRank);
  if (!absl::StartsWith(name, "--") || name.size() == 2) return "";
  std::string canonical(name);
  std::replace(canonical.begin() + 2, canonical.end(), '_', '-');
  return canonical;
}

bool TakesValue(absl::string_view name) {
  return name == kNnodes || name == kNodeRank || name == kMasterAddr || name == kMasterPort ||
         name == kBackend || name == kApiServerCount;
}

bool IsRankFlag(absl::string_view name) {
  return name == kNnodes || name == kNodeRank || name == kMasterAddr || name == kMasterPort ||
         name == kHeadless;
}

// The executor backend a group of `world` nodes runs with when the command asks for `backend`.
absl::StatusOr<std::string> Backend(const Recipe& recipe, const std::string& backend, int world,
                                    std::vector<std::string>* notes) {
  // One node: vLLM starts whatever backend is named by itself (Ray included: it starts a local
  // Ray instance), so the author's choice stands.
  if (world == 1 || backend == "mp") return backend;
  if (backend == "ray") {
    if (recipe.version >= 2) {
      return absl::FailedPreconditionError(absl::StrCat(
          Where(recipe, "command"),
          "--distributed-executor-backend ray needs a Ray cluster "
          "spanning the group's ",
          world,
          " nodes, and SparkFleet does not launch Ray clusters; "
          "use --distributed-executor-backend mp (or leave the flag out): SparkFleet starts "
          "vLLM's multiprocessing backend on every node with --nnodes and --node-rank"));
    }
    // Version-1 recipes name Ray because run-recipe.sh used to start a Ray cluster around them;
    // the same command runs on vLLM's own multi-node backend without one.
    AddNote(notes, absl::StrCat("rewrote --distributed-executor-backend ray to mp: multi-node "
                                "groups use vLLM's multiprocessing backend (--nnodes ",
                                world, " --node-rank K), and SparkFleet starts no Ray cluster"));
    return std::string("mp");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      Where(recipe, "command"), "--distributed-executor-backend ", backend, " cannot span ", world,
      " nodes; use mp (or leave the flag out: vLLM picks mp when --nnodes > 1)"));
}

// How a multi-node script must read its place in the group, for the error that refuses one.
constexpr absl::string_view kScriptExample =
    "bash -lc 'exec vllm serve MODEL ... --nnodes ${NNODES} --node-rank ${NODE_RANK} "
    "--master-addr ${MASTER_ADDR} --master-port ${MASTER_PORT} ${HEADLESS:+--headless}'";

absl::StatusOr<RankCommand> RenderScriptRank(const Recipe& recipe, const std::string& script,
                                             const std::vector<std::string>& command,
                                             const GroupContext& group, int rank,
                                             std::vector<std::string>* notes) {
  const size_t world = group.nodes.size();
  if (world > 1) {
    std::vector<std::string> unread;
    for (absl::string_view name : {"NODE_RANK", "MASTER_ADDR", "HEADLESS"}) {
      if (!absl::StrContains(script, name)) unread.emplace_back(name);
    }
    if (!unread.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(recipe, "command"), "the command is a shell script for a group of ", world,
          " nodes and never reads $", absl::StrJoin(unread, ", $"),
          ", so its ranks cannot find each other (SparkFleet appends nothing to a script: the "
          "shell would take the words as the script's arguments); read the rank from the "
          "environment: ",
          kScriptExample));
    }
  }
  AddNote(notes,
          "the command is a shell script: SparkFleet appends no rank flags to it; each rank gets "
          "NODE_RANK, NNODES, MASTER_ADDR, MASTER_PORT and HEADLESS (non-empty on workers) in "
          "its environment");
  return RankCommand{.argv = command, .env = ScriptRankEnv(group, rank)};
}

}  // namespace

absl::StatusOr<std::optional<int>> VllmAdapter::FixedMasterPort(
    const std::vector<std::string>& command) const {
  std::optional<std::string> script = ShellScriptOf(command);
  if (!script.has_value()) return std::nullopt;
  return ScriptMasterPort(*script);
}

// Rank 0 hosts the TCP store (tcp://MASTER_ADDR:MASTER_PORT) through which every rank joins
// torch.distributed. A worker started before it only retries within its connect timeout and
// then exits, so workers are started once the head's master port accepts connections.
LaunchOrder VllmAdapter::launch_order() const { return LaunchOrder::kHeadFirst; }

absl::StatusOr<RankCommand> VllmAdapter::RenderRank(const Recipe& recipe,
                                                    const std::vector<std::string>& command,
                                                    const GroupContext& group, int rank,
                                                    std::vector<std::string>* notes) const {
  if (std::optional<std::string> script = ShellScriptOf(command)) {
    return RenderScriptRank(recipe, *script, command, group, rank, notes);
  }
  const int world = static_cast<int>(group.nodes.size());
  const bool headless = world > 1 && rank > 0;
  RankCommand out;
  bool removed_rank_flags = false;
  for (size_t i = 0; i < command.size(); ++i) {
    const std::string& word = command[i];
    const std::string name = OptionName(word);
    if (!TakesValue(name)) {
      if (name == kHeadless) {
        removed_rank_flags = true;
      } else {
        out.argv.push_back(word);
      }
      continue;
    }
    const size_t equals = word.find('=');
    const bool inline_value = equals != std::string::npos;
    if (!inline_value && i + 1 == command.size()) {
      return absl::InvalidArgumentError(absl::StrCat(Where(recipe, "command"), word,
                                                     " needs a value, and the command ends there"));
    }
    const std::string value = inline_value ? word.substr(equals + 1) : command[++i];
    if (IsRankFlag(name)) {
      removed_rank_flags = true;
      continue;
    }
    std::string kept = value;
    if (name == kBackend) {
      ASSIGN_OR_RETURN(kept, Backend(recipe, value, world, notes));
    } else if (headless) {
      // --api-server-count: vLLM refuses it together with --headless.
      AddNote(notes,
              "dropped --api-server-count from the headless ranks: vLLM refuses it with "
              "--headless (they start no API server)");
      continue;
    }
    if (inline_value) {
      out.argv.push_back(absl::StrCat(word.substr(0, equals + 1), kept));
    } else {
      out.argv.push_back(word);
      out.argv.push_back(kept);
    }
  }
  if (removed_rank_flags) {
    AddNote(notes, world > 1 ? "replaced the command's --nnodes/--node-rank/--master-addr/"
                               "--master-port/--headless with the values of this placement"
                             : "removed the command's --nnodes/--node-rank/--master-addr/"
                               "--master-port/--headless: the group has one node");
  }
  if (world > 1) {
    out.argv.insert(out.argv.end(),
                    {std::string(kNnodes), absl::StrCat(world), std::string(kNodeRank),
                     absl::StrCat(rank), std::string(kMasterAddr), group.master_addr,
                     std::string(kMasterPort), absl::StrCat(group.master_port)});
    if (headless) out.argv.emplace_back(kHeadless);
  }
  return out;
}

}  // namespace fleet::engine
