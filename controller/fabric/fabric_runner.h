// FabricRunner: `fleet fabric` on the controller. It picks the nodes, plans the links
// (fabric_plan.h), runs each round's tests at once through the agents (no node in two tests at
// a time), judges every result against the link's rate and its history, and stores it. Plain
// class: the Controller service calls it on the probe executor.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "controller/fabric/fabric_agent_client.h"
#include "controller/store/store.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::controller {

// One RDMA device port that can run the RDMA test: ACTIVE, with a RoCE v2 GID (or InfiniBand,
// addressed by LID: gid_index -1).
struct RdmaDeviceEndpoint {
  std::string device;
  uint32_t port = 1;
  int32_t gid_index = -1;
  double rate_gbps = 0;  // 0 when unknown
};
// The devices behind one physical port. Devices are grouped by their name without the PCI
// domain part of udev's name ("roceP2p1s0f1" joins "rocep1s0f1"): a DGX Spark's CX-7 shows each
// port as two devices, one per PCIe domain, of about 100 Gb/s each.
struct RdmaPortGroup {
  std::string key;
  std::vector<RdmaDeviceEndpoint> devices;  // by name
};
// The port key of an RDMA device name: the name without a "P<digits>" PCI domain before its
// "p<bus>" part.
std::string RdmaPortKey(const std::string& device);

// Where a node takes part in fabric tests: its fabric interface's IPv4 address (the advertised
// address's host where no interface is marked fabric), the interface, and its rate.
struct FabricEndpoint {
  std::string name;
  std::string node_id;
  std::string agent_address;
  std::string ip;
  std::string device;    // "" when the interface is not known
  double rate_gbps = 0;  // 0 when unknown
  bool has_rdma = false;
  bool has_gpu = false;
  std::string gpu_name;  // the first GPU's, as NVML names it ("NVIDIA GB10"); "" without one
  std::vector<RdmaPortGroup> rdma_ports;  // by key; empty when no port can run the RDMA test
};
FabricEndpoint EndpointOf(const v1::Node& node);

// The Ready nodes of a listing as fabric endpoints (`fleet fabric`, `fleet stage`).
struct ReadyEndpoints {
  std::map<std::string, FabricEndpoint> by_name;
  std::vector<std::string> names;  // in listing order
  // FailedPrecondition naming every Ready node when `name` is not one.
  absl::Status Require(const std::string& name) const;
};
ReadyEndpoints ReadyEndpointsOf(const std::vector<v1::Node>& nodes);

// Example:
//   FabricRunner runner(clock, &store, &agents, [&](const v1::FabricResult& r) { ... });
//   ASSIGN_OR_RETURN(v1::RunFabricResponse results, runner.Run(request, registry.List()));
class FabricRunner {
 public:
  using ResultListener = std::function<void(const v1::FabricResult&)>;
  // Runs fleet-engine's collective benchmark across the named nodes (the first is rank 0) and
  // answers rank 0's output (nccl_fabric.h).
  using NcclBench =
      std::function<absl::StatusOr<std::string>(const std::vector<std::string>& nodes)>;
  FabricRunner(const Clock* clock, Store* store, FabricAgentClient* agents,
               ResultListener on_result, NcclBench nccl = nullptr)
      : clock_(clock),
        store_(store),
        agents_(agents),
        on_result_(std::move(on_result)),
        nccl_(std::move(nccl)) {}

  // Blocking for every round's duration. One run at a time: a second waits for the first, so
  // two runs never share a link. InvalidArgument for an unknown test or bad figures,
  // FailedPrecondition for a named node that is not Ready (naming the Ready ones).
  absl::StatusOr<v1::RunFabricResponse> Run(const v1::RunFabricRequest& request,
                                            const std::vector<v1::Node>& nodes);
  absl::StatusOr<v1::FabricHistoryResponse> History(const v1::FabricHistoryRequest& request);

 private:
  v1::FabricResult RunTcp(const FabricEndpoint& from, const FabricEndpoint& to,
                          const v1::FabricTcpSpec& spec);
  // One result per port both nodes have (the i-th port group of each), its devices paired in
  // order and run at once, their figures summed.
  std::vector<v1::FabricResult> RunRdma(const FabricEndpoint& from, const FabricEndpoint& to,
                                        const v1::RdmaSpec& spec);
  // One device pair: prepare both ends, connect the responder, run the requester, finish both.
  absl::StatusOr<v1::RdmaRunResponse> RunRdmaDevices(const FabricEndpoint& from,
                                                     const RdmaDeviceEndpoint& from_device,
                                                     const FabricEndpoint& to,
                                                     const RdmaDeviceEndpoint& to_device,
                                                     const v1::RdmaSpec& spec);

  const Clock* const clock_;
  Store* const store_;
  FabricAgentClient* const agents_;
  // Judges each result against the last passing run of its test and link (last_pass), stores
  // it, tells the listener and adds it to `response`.
  void Record(std::vector<v1::FabricResult> results, const std::string& run_id,
              const std::map<std::string, double>& last_pass, v1::RunFabricResponse& response);
  // nccl: one test across every chosen node, not one per link.
  std::vector<v1::FabricResult> RunNccl(const std::vector<FabricEndpoint>& nodes);

  const ResultListener on_result_;
  const NcclBench nccl_;  // null: the NCCL test is answered "not measured", saying why
  absl::Mutex run_mu_;    // held for a whole run
};

}  // namespace fleet::controller
