// Engine adapters: how one engine (vLLM, a plain command, the built-in fleet-engine) turns a
// recipe into the command of each rank, in which order ranks start, and how the head is
// probed. New engines (SGLang, llama.cpp) add one adapter here and nothing elsewhere.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "launch/recipe.h"

namespace fleet::engine {

// What placement knows about the node a rank runs on. Until the probes issue lands, the
// fabric facts come from the agent's reported interfaces and RDMA device names.
struct NodeView {
  std::string name;  // node name, e.g. "spark-1"
  std::string node_id;
  std::string address;  // IP the agent advertised (control network)
  // The interface and IPv4 address the group's traffic uses: the one backing an RDMA device
  // when there is one, else the interface holding `address`.
  std::string fabric_interface;  // e.g. "enp1s0f1np1"; "" when unknown
  std::string fabric_address;    // e.g. "192.168.100.11"
  // Active RDMA devices of this node, e.g. {"rocep1s0f1", "roceP2p1s0f1"} (both halves of one
  // CX-7 port). Empty: no RDMA; NCCL_IB_HCA is then left unset.
  std::vector<std::string> rdma_devices;
  bool has_gpus = false;        // /dev/nvidia* present: docker gets --gpus all
  bool has_infiniband = false;  // /dev/infiniband present: docker gets the device
};

// One group being placed: its name, generation, where rank 0 listens for the others, and the
// node of every rank (index = rank).
struct GroupContext {
  std::string group;
  uint64_t generation = 1;
  std::string master_addr;  // rank 0's fabric address
  int master_port = 0;      // rank 0's rendezvous port (vLLM's TCP store, FLEET_MASTER_PORT)
  std::vector<NodeView> nodes;
};

enum class LaunchOrder {
  // Rank 0 starts first; every other rank starts once rank 0's master port accepts TCP
  // connections (the agent waits for it: ShardSpec.wait_for_tcp).
  kHeadFirst,
  // Every rank at once (the engine's own rendezvous waits for peers).
  kAllAtOnce,
  // Ranks > 0 start at once; rank 0 starts once every other rank's port (the group's master
  // port on that rank's fabric address) accepts connections: llama.cpp's rpc-servers before
  // the llama-server that connects to them (ShardSpec.wait_for_tcp and also_wait_for_tcp).
  kWorkersFirst,
};

// "head-first", "all-at-once", "workers-first": the words `fleet plan` and `-o json` print.
absl::string_view LaunchOrderName(LaunchOrder order);

// The command of one rank before the runtime wraps it (docker run ...).
struct RankCommand {
  std::vector<std::string> argv;
  // Engine-specific variables of this rank (FLEET_RANK for exec, ...), added after the
  // per-node fabric variables and before the recipe's `env`, which overrides both.
  std::vector<std::pair<std::string, std::string>> env;
};

class EngineAdapter {
 public:
  virtual ~EngineAdapter() = default;
  virtual absl::string_view name() const = 0;
  virtual LaunchOrder launch_order() const = 0;
  // The argv and engine variables of `rank`, from the split, rendered command. `notes`
  // collects what the adapter changed and why, for `fleet plan` ("rewrote
  // --distributed-executor-backend ray to mp: multi-node groups use vLLM's mp backend").
  virtual absl::StatusOr<RankCommand> RenderRank(const Recipe& recipe,
                                                 const std::vector<std::string>& command,
                                                 const GroupContext& group, int rank,
                                                 std::vector<std::string>* notes) const = 0;
  // The master port the command fixes itself (a shell script that names `--master-port
  // 25000`), which then replaces placement's choice for every rank; nullopt when the command
  // takes the port placement chooses.
  virtual absl::StatusOr<std::optional<int>> FixedMasterPort(
      const std::vector<std::string>& /*command*/) const {
    return std::nullopt;
  }
};

// Appends `note` to `notes` (when not null) unless it is there already: every rank renders the
// same notes, and each is kept once.
void AddNote(std::vector<std::string>* notes, std::string note);

// The adapter for `engine:`; NotFound (naming the known ones) for an unknown name.
absl::StatusOr<const EngineAdapter*> FindAdapter(absl::string_view engine);

// Names of every adapter, for error messages and the README.
std::vector<std::string> AdapterNames();

}  // namespace fleet::engine
