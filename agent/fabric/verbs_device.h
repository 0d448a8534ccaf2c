// The verbs seam of the RDMA fabric test: the few libibverbs operations perftest's ib_write_bw
// and ib_write_lat need, as interfaces. VerbsDevicesImpl (verbs_device_impl.h) calls the
// dlopen'd libibverbs; FakeVerbsFabric (fake_verbs_device.h) wires fake devices in memory so the
// test engine and the queue-pair exchange are unit-tested without an RDMA device.
//
// Every object is RAII: destroying it frees the verbs resource. Children must be destroyed
// before what they were created from (queue pairs, then completion queues and memory regions,
// then the device), which RdmaTestEnd guarantees by declaring its members in that order.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet::agent {

// What the test needs of a port: ibv_query_port and, with a GID index, ibv_query_gid.
struct VerbsPortInfo {
  int state = 0;           // enum ibv_port_state: 4 is ACTIVE
  uint32_t mtu_bytes = 0;  // active MTU, 256..4096
  uint16_t lid = 0;        // InfiniBand only
  std::array<uint8_t, 16> gid{};
};

// How a local queue pair reaches its peer (ctx_modify_qp_to_rtr's attributes).
struct VerbsPeer {
  uint32_t qpn = 0;
  uint32_t psn = 0;
  uint16_t lid = 0;
  std::array<uint8_t, 16> gid{};
  uint32_t mtu_bytes = 0;  // the path MTU: the smaller of both ends' active MTU
};

// One work completion; `status` is enum ibv_wc_status (0 is IBV_WC_SUCCESS).
struct VerbsCompletion {
  uint64_t wr_id = 0;
  int status = 0;
};

class VerbsMemoryRegion {
 public:
  virtual ~VerbsMemoryRegion() = default;
  virtual uint32_t lkey() const = 0;
  virtual uint32_t rkey() const = 0;
};

class VerbsCompletionQueue {
 public:
  virtual ~VerbsCompletionQueue() = default;
  // Non-blocking (ibv_poll_cq): the number of completions written to `out`, 0 when none.
  virtual absl::StatusOr<int> Poll(std::span<VerbsCompletion> out) = 0;
};

// An RC queue pair. Posting before RTS fails, as it does on a real device.
class VerbsQueuePair {
 public:
  virtual ~VerbsQueuePair() = default;
  virtual uint32_t qpn() const = 0;
  // RESET → INIT on `port` with remote write access (ctx_modify_qp_to_init).
  virtual absl::Status ToInit(uint8_t port) = 0;
  // INIT → RTR towards `peer`; `gid_index` < 0 addresses it by LID (InfiniBand), else through
  // the GRH with that local GID (RoCE v2) (ctx_modify_qp_to_rtr).
  virtual absl::Status ToRtr(uint8_t port, int gid_index, const VerbsPeer& peer) = 0;
  // RTR → RTS with this side's send PSN (ctx_modify_qp_to_rts).
  virtual absl::Status ToRts(uint32_t psn) = 0;
  // One RDMA WRITE of `length` bytes at `local` (inside `mr`) to `remote_address`/`rkey` on the
  // peer; a completion with `wr_id` appears on the queue pair's CQ only when `signaled`.
  virtual absl::Status PostWrite(const VerbsMemoryRegion& mr, const void* local, uint32_t length,
                                 uint64_t remote_address, uint32_t rkey, uint64_t wr_id,
                                 bool signaled) = 0;
};

// An open device with its protection domain (ibv_open_device + ibv_alloc_pd).
class VerbsContext {
 public:
  virtual ~VerbsContext() = default;
  virtual const std::string& device() const = 0;
  // `gid_index` < 0: no GID is read.
  virtual absl::StatusOr<VerbsPortInfo> QueryPort(uint8_t port, int gid_index) = 0;
  // Registers [address, address + length) for local and remote write.
  virtual absl::StatusOr<std::unique_ptr<VerbsMemoryRegion>> RegisterMemory(void* address,
                                                                            size_t length) = 0;
  virtual absl::StatusOr<std::unique_ptr<VerbsCompletionQueue>> CreateCompletionQueue(
      int entries) = 0;
  // An RC queue pair whose sends and receives complete on `cq`, `send_depth` sends deep.
  virtual absl::StatusOr<std::unique_ptr<VerbsQueuePair>> CreateQueuePair(VerbsCompletionQueue& cq,
                                                                          int send_depth) = 0;
  // ibv_wc_status_str: "transport retry counter exceeded".
  virtual std::string CompletionStatusText(int status) const = 0;
};

class VerbsDevices {
 public:
  virtual ~VerbsDevices() = default;
  // NotFound when no device has that name (naming the ones there are); FailedPrecondition when
  // libibverbs cannot be loaded or the device not opened.
  virtual absl::StatusOr<std::unique_ptr<VerbsContext>> Open(const std::string& device) = 0;
};

// The Status of a failed verbs call: names the device, the call and errno's text; for ENOMEM
// where memory is pinned it names the memlock limit and its fix. FailedPrecondition, as the
// operator must fix something (a driver, a limit, a port) before the test can run.
// Example: return VerbsCallError("rocep1s0f1", "ibv_reg_mr", ENOMEM);
absl::Status VerbsCallError(absl::string_view device, absl::string_view call, int err);

}  // namespace fleet::agent
