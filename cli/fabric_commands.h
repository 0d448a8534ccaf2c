// `fleet fabric` and `fleet fabric history`: bandwidth tests between nodes, run by the
// controller through the agents, and the stored results per link.
#pragma once

#include <string>
#include <vector>

#include "cli/commands.h"
#include "fleet/v1/fabric.pb.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {

struct FabricFlags {
  std::vector<std::string> nodes;  // --nodes a,b,...; empty: every Ready node
  std::vector<std::string> tests;  // --tests tcp,rdma,nccl; empty: tcp
  bool ring = false;
  std::string duration = "5s";
  uint32_t streams = 4;
  uint32_t buffer_bytes = 128 << 10;
  // rdma, as perftest's -q, -s, -t, -Q and ib_write_lat's -n; 0 takes perftest's default.
  uint32_t rdma_qps = 0;
  uint32_t rdma_size = 0;
  uint32_t rdma_tx_depth = 0;
  uint32_t rdma_cq_mod = 0;
  uint32_t rdma_latency_iters = 0;
};

// Exit code 0 when every result passed (or could not be judged), 1 when one warned, failed or
// could not be measured, 2 for bad flags.
int Fabric(const Globals& g, const FabricFlags& flags);
int FabricHistory(const Globals& g, int limit);

// The JSON object of one result, as `-o json` prints it (keys: test, from, to, device,
// bandwidth_gbps, latency_us where measured, expected_gbps, verdict, reason, and regression and
// at where set).
nlohmann::ordered_json FabricResultJson(const v1::FabricResult& r);
// The table of `fleet fabric` (`history`: with the time of each result).
std::string RenderFabricResults(const std::vector<v1::FabricResult>& results, bool history);

}  // namespace fleet::cli
