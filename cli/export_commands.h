// `fleet export`: a recipe's launch rendered for Kubernetes LeaderWorkerSet or Slurm, for a
// cluster that outgrows SparkFleet. Offline: it reads the recipe and needs no controller.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace fleet::cli {

struct ExportFlags {
  std::string recipe;                 // path of the recipe file
  std::string format;                 // "lws" or "slurm"
  std::vector<std::string> o;         // overrides, key=value
  std::optional<int> nodes;           // --nodes: ranks of the group
  std::string name;                   // --name: default the file's stem
  std::string fabric_interface;       // --fabric-interface
  std::string rdma_devices;           // --rdma-devices a,b
  int gpus_per_node = 1;              // --gpus-per-node
  int master_port = 29500;            // --master-port
  std::string rdma = "host-network";  // --rdma: host-network or device-plugin (lws)
  std::string rdma_resource = "rdma/rdma_shared_device_a";  // --rdma-resource (lws)
  std::string image;                                        // --image (lws, runtime: process)
  std::string k8s_namespace;                                // --namespace (lws)
  std::string max_unavailable = "1";                        // --max-unavailable (lws)
  std::string partition;                                    // --partition (slurm)
  std::string time_limit;                                   // --time (slurm)
};

// Prints the manifest or script on stdout and each note on stderr ("note: ..."); exit 0, or 1
// with the error and its fix on stderr.
int Export(const ExportFlags& flags);

}  // namespace fleet::cli
