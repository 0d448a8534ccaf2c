// The RDMA fabric test (`fleet fabric --tests rdma`), perftest's method on one device pair:
// ib_write_bw's loop (RC queue pairs, RDMA WRITEs of a fixed size, a bounded send queue, one
// signaled WRITE in cq_mod) for bandwidth, and ib_write_lat's ping-pong for latency. Each end is
// an RdmaTestEnd over a VerbsDevices seam (verbs_device.h); the queue-pair details travel
// between the ends in the agents' gRPC calls (RdmaEndpoints, rdma_endpoints.h).
//
// Buffer layout, the same on both ends: queue pair q writes `message_bytes` at offset
// q * message_bytes; after those, a 64-byte slot the peer's pings (or pongs) land in, then the
// 64-byte slot they are sent from.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/fabric/verbs_device.h"
#include "common/clock.h"
#include "fleet/v1/fabric.pb.h"

namespace fleet::agent {

// The spec with perftest's defaults filled in (4 queue pairs, 65,536 bytes, tx depth 128, and
// cq_mod 100, or 1 above 8,192 bytes as perftest_parameters.c does unless asked) and its limits
// checked: InvalidArgument naming the field, the range and the fix.
absl::StatusOr<v1::RdmaSpec> ResolveRdmaSpec(const v1::RdmaSpec& spec);

// perftest's Gb/s (perftest_parameters.c, print_report_bw): bytes / seconds / 125,000,000,
// i.e. bytes * 8 / 1e9 / seconds. 0 for an empty interval.
double GigabitsPerSecond(uint64_t bytes, absl::Duration elapsed);

// Median (the sorted middle, sorted[n / 2], as perftest prints it) and the 99th percentile
// (nearest rank: sorted[ceil(0.99 n) - 1]) of one-way latencies, in microseconds.
struct LatencySummary {
  double median_us = 0;
  double p99_us = 0;
};
LatencySummary SummarizeLatency(std::vector<absl::Duration> one_way);

struct RdmaEngineOptions {
  // Peak bandwidth is the best of consecutive windows at least this long, each ending at a
  // completion.
  absl::Duration peak_window = absl::Milliseconds(10);
  // How long after the bandwidth phase's duration the last completions, and each latency
  // round trip, may take before the test fails.
  absl::Duration grace = absl::Seconds(10);
  // Polls a latency wait makes before it gives up (a bound in count besides the time).
  uint64_t max_polls_per_wait = uint64_t{1} << 32;
};

// Example (the two ends, as the agents' RPCs drive them):
//   ASSIGN_OR_RETURN(auto responder, RdmaTestEnd::Prepare(devices, to_request, clock));
//   ASSIGN_OR_RETURN(auto requester, RdmaTestEnd::Prepare(devices, from_request, clock));
//   RETURN_IF_ERROR(responder->Connect(requester->endpoint()));
//   std::thread pongs([&] { (void)responder->ServePongs(stop); });
//   RETURN_IF_ERROR(requester->Connect(responder->endpoint()));
//   ASSIGN_OR_RETURN(v1::RdmaRunResponse figures, requester->Run());
class RdmaTestEnd {
 public:
  // Opens the device, queries the port (and the GID at `gid_index`), registers the buffer,
  // creates the CQ and the RC queue pairs and moves them to INIT (perftest's ctx_init).
  static absl::StatusOr<std::unique_ptr<RdmaTestEnd>> Prepare(VerbsDevices& devices,
                                                              const v1::RdmaPrepareRequest& request,
                                                              const Clock* clock,
                                                              RdmaEngineOptions options = {});
  RdmaTestEnd(const RdmaTestEnd&) = delete;
  RdmaTestEnd& operator=(const RdmaTestEnd&) = delete;

  // What the peer needs: queue pair numbers and PSNs, GID or LID, MTU, buffer and rkey.
  const v1::RdmaEndpoint& endpoint() const { return endpoint_; }
  const v1::RdmaSpec& spec() const { return spec_; }

  // INIT → RTR → RTS of every queue pair towards the peer's matching one (perftest's
  // ctx_connect). InvalidArgument when the peer's details do not fit this test.
  absl::Status Connect(const v1::RdmaEndpoint& peer);

  // The requester, after Connect: the bandwidth phase, then `latency_iterations` pings, each
  // answered by the peer's ServePongs.
  absl::StatusOr<v1::RdmaRunResponse> Run();

  // The responder, after Connect: answers each ping with a pong until it has answered
  // `latency_iterations`, `stop` is set, or the test's time is over. The pongs answered.
  absl::StatusOr<uint32_t> ServePongs(const std::atomic<bool>& stop);

 private:
  struct FreeBuffer {
    void operator()(uint8_t* p) const;
  };

  RdmaTestEnd(const Clock* clock, v1::RdmaSpec spec, RdmaEngineOptions options, uint8_t port,
              int gid_index)
      : clock_(clock),
        spec_(std::move(spec)),
        options_(options),
        port_(port),
        gid_index_(gid_index) {}

  absl::Status RunBandwidth(v1::RdmaRunResponse* out);
  absl::Status RunLatency(v1::RdmaRunResponse* out);
  // Posts one 8-byte WRITE of `sequence` from the send slot to the peer's receive slot.
  absl::Status PostSequence(uint64_t sequence);
  // Polls until the receive slot holds `sequence`, reaping latency completions meanwhile.
  // false when `stop` is set first.
  absl::StatusOr<bool> WaitForSequence(uint64_t sequence, absl::Time deadline,
                                       const std::atomic<bool>* stop);
  // Reaps completions; an error one becomes a Status naming the queue pair and its status.
  absl::StatusOr<int> Reap(std::span<VerbsCompletion> out);
  absl::Status DrainLatencyWrites(absl::Time deadline);
  size_t BandwidthBytes() const { return size_t{spec_.queue_pairs()} * spec_.message_bytes(); }

  const Clock* const clock_;
  const v1::RdmaSpec spec_;
  const RdmaEngineOptions options_;
  const uint8_t port_;
  const int gid_index_;
  // Declared so that they are freed in the order verbs needs: queue pairs, CQ, MR, buffer,
  // device.
  std::unique_ptr<VerbsContext> context_;
  std::unique_ptr<uint8_t[], FreeBuffer> buffer_;
  size_t buffer_length_ = 0;
  std::unique_ptr<VerbsMemoryRegion> mr_;
  std::unique_ptr<VerbsCompletionQueue> cq_;
  std::vector<std::unique_ptr<VerbsQueuePair>> qps_;
  v1::RdmaEndpoint endpoint_;
  v1::RdmaEndpoint peer_;
  bool connected_ = false;
  uint64_t latency_outstanding_ = 0;  // signaled latency WRITEs not yet reaped
};

}  // namespace fleet::agent
