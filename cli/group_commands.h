// The `fleet` commands for serving groups: plan, apply, get groups, describe group, stop, logs.
// Each returns the process exit code after printing its result (stdout) or error (stderr).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/commands.h"
#include "cli/controller_api.h"
#include "launch/adapters/adapter.h"

namespace fleet::cli {

// `-o` of plan and apply carries both overrides ("key=value") and an output format ("json").
struct RecipeFlags {
  std::string recipe;          // path of the recipe file
  std::vector<std::string> o;  // every -o, in order
  std::string name;            // --name: the group name (default: the file's stem)
  bool force = false;          // --force: preflight failures become warnings
};

// `fleet plan`: no side effects. Nodes come from `--inventory FILE` (no controller needed) or
// from the controller's Ready nodes; `--nodes a,b` picks and orders them (first = head).
int Plan(const Globals& g, const RecipeFlags& flags, const std::string& nodes,
         const std::string& inventory);

// Follows one group until Ready (prints its endpoint, returns 0), Failed (prints why and the
// failing rank's last lines, returns 1) or `deadline` (returns 1).
int FollowGroup(AdminClient& client, const std::string& name, absl::Time started,
                absl::Time deadline);

// `fleet apply`: with `wait`, follows every rank until the group is Ready (prints the
// endpoint, exit 0), Failed (prints why and the failing rank's last lines, exit 1) or
// `timeout` passes (exit 1). Empty `timeout`: the recipe's health.start_timeout.
int Apply(const Globals& g, const RecipeFlags& flags, bool wait, const std::string& timeout);
// The request of `fleet apply` and `fleet preflight`: the recipe file (checked to be UTF-8, as
// protobuf strings must be) and its overrides.
absl::StatusOr<v1::ApplyRequest> ReadApplyRequest(const RecipeFlags& flags,
                                                  const std::vector<std::string>& overrides,
                                                  bool force);

int GetGroups(const Globals& g);
int DescribeGroup(const Globals& g, const std::string& name);
int StopGroup(const Globals& g, const std::string& name);
// `follow` polls for new output until interrupted; `tail` 0 prints everything kept.
int Logs(const Globals& g, const std::string& name, int rank, bool follow, int tail);

// An inventory file for `fleet plan --inventory`: the nodes a group could be placed on.
//   nodes:
//     - name: spark-1
//       address: 192.168.100.11          # control address (required)
//       fabric_interface: enp1s0f1np1     # default: none known
//       fabric_address: 192.168.100.11    # default: address
//       rdma_devices: [rocep1s0f1, roceP2p1s0f1]
//       gpus: true                        # /dev/nvidia* present
//       infiniband: true                  # /dev/infiniband present
absl::StatusOr<std::vector<engine::NodeView>> LoadInventory(const std::string& path);

// Separates -o values: "key=value" are overrides, anything else the output format (at most
// one).
absl::Status SplitOutputFlags(const std::vector<std::string>& o, std::string* format,
                              std::vector<std::string>* overrides);

}  // namespace fleet::cli
