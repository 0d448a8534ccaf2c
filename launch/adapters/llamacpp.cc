// The llama.cpp adapter: llama-server, and rpc-server on the other nodes of a group.
#include "launch/adapters/llamacpp.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/host_port.h"

namespace fleet::engine {

absl::StatusOr<RankCommand> LlamaCppAdapter::RenderRank(const Recipe& recipe,
                                                        const std::vector<std::string>& command,
                                                        const GroupContext& group, int rank,
                                                        std::vector<std::string>* notes) const {
  const size_t world = group.nodes.size();
  if (rank > 0) {
    const NodeView& node = group.nodes[rank];
    if (node.fabric_address.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", rank, " on ", node.name,
          " has no known fabric address, and rpc-server (no authentication) is only ever bound "
          "to the fabric: give the node an address on the fabric interface, or place the group "
          "on nodes that have one"));
    }
    AddNote(notes, absl::StrCat("ranks 1-", world - 1,
                                " run rpc-server bound to their fabric address on port ",
                                group.master_port,
                                "; rpc-server has no authentication: anyone who reaches that "
                                "address can use the node's GPU"));
    return RankCommand{.argv = {"rpc-server", "--host", node.fabric_address, "--port",
                                absl::StrCat(group.master_port)}};
  }
  absl::string_view program = command.front();
  if (size_t slash = program.rfind('/'); slash != absl::string_view::npos) {
    program.remove_prefix(slash + 1);
  }
  if (program != "llama-server") {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(recipe, "command"), "the llamacpp engine runs llama-server, and the command runs \"",
        command.front(),
        "\"; write `llama-server -m MODEL.gguf --host 0.0.0.0 --port {port} ...`"));
  }
  RankCommand out;
  bool has_metrics = false;
  bool replaced_rpc = false;
  for (size_t i = 0; i < command.size(); ++i) {
    const std::string& word = command[i];
    if (word == "--metrics") has_metrics = true;
    if (world > 1 && (word == "--rpc" || absl::StartsWith(word, "--rpc="))) {
      replaced_rpc = true;
      if (word == "--rpc") ++i;
      continue;
    }
    out.argv.push_back(word);
  }
  if (!has_metrics) {
    out.argv.emplace_back("--metrics");
    AddNote(notes, "added --metrics to llama-server: SparkFleet reads the engine's /metrics");
  }
  if (world > 1) {
    std::vector<std::string> servers;
    for (size_t k = 1; k < world; ++k) {
      // IPv6 hosts in brackets, as llama.cpp's --rpc parses them.
      servers.push_back(
          JoinHostPort(group.nodes[k].fabric_address, static_cast<uint16_t>(group.master_port)));
    }
    out.argv.insert(out.argv.end(), {"--rpc", absl::StrJoin(servers, ",")});
    if (replaced_rpc) {
      AddNote(notes, "replaced the command's --rpc with the rpc-servers of this placement");
    }
  }
  return out;
}

}  // namespace fleet::engine
