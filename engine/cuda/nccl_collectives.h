// Collectives over NCCL for GPU ranks: buffers are device memory (cudaMalloc) and every call is
// enqueued on the rank's own CUDA stream, which the GPU model shares (stream(), device()).
//
// The communicator is non-blocking (ncclConfig_t.blocking = 0), so nothing here waits forever:
// creation, enqueueing and Synchronize() poll NCCL's state and the stream against a deadline of
// `timeout` from the call, and on expiry abort the communicator and return DeadlineExceeded (a
// rank that never came, or one that stopped). After any communicator error the group is broken:
// every later call returns FailedPrecondition naming the first error, and the caller should exit
// so the group can be recreated.
//
// Example (every rank, each on its own GPU, with a store they share):
//   ASSIGN_OR_RETURN(auto comm, NcclCollectives::Create(&store, rank, 2, /*cuda_device=*/rank,
//                                                       absl::Seconds(60)));
//   ASSIGN_OR_RETURN(auto buf, comm->Allocate(n * sizeof(float)));
//   RETURN_IF_ERROR(comm->Upload(*buf, host.data(), n * sizeof(float)));
//   RETURN_IF_ERROR(comm->AllReduceSum(buf->data(), n, DType::kFloat32));
//   RETURN_IF_ERROR(comm->Download(host.data(), *buf, n * sizeof(float)));
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/collectives/collectives.h"
#include "engine/cuda/cuda_resources.h"
#include "engine/cuda/gpu_collectives.h"
#include "engine/rendezvous/kv_store.h"

namespace fleet::native {

// The rendezvous key under which rank 0 publishes the group's ncclUniqueId (128 bytes). The
// store is scoped to one group and generation, so one fixed key is enough.
inline constexpr char kNcclUniqueIdKey[] = "nccl-unique-id";

class NcclCollectives final : public GpuCollectives {
 public:
  // Joins rank `rank` of a group of `size` ranks on CUDA device `cuda_device`: rank 0 makes the
  // group's id and publishes it in `store`, the others wait for it, then every rank initialises
  // its communicator. InvalidArgument for bad arguments; FailedPrecondition when the device does
  // not exist; DeadlineExceeded when the id or a peer did not come within `connect_timeout`
  // (the half-made communicator is aborted); Unavailable or Internal for NCCL's own failures.
  // `timeout` bounds every later wait of a collective; `connect_timeout` defaults to it.
  static absl::StatusOr<std::unique_ptr<NcclCollectives>> Create(
      KvStore* store, int rank, int size, int cuda_device, absl::Duration timeout,
      std::optional<absl::Duration> connect_timeout = std::nullopt);

  ~NcclCollectives() override;
  NcclCollectives(const NcclCollectives&) = delete;
  NcclCollectives& operator=(const NcclCollectives&) = delete;

  // cudaMalloc'd device memory on this rank's device.
  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override;
  // Copies on this rank's stream, after everything enqueued before, and waits for them.
  absl::Status Upload(Buffer& dst, const void* host, size_t bytes) override;
  absl::Status Download(void* host, Buffer& src, size_t bytes) override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // "nccl 2.28.3 (cuda device 0)", with the version of the NCCL library loaded at run time.
  std::string Describe() const override;

  // float32, bfloat16 and int32, enqueued on stream(); they return once enqueued. Not
  // thread-safe: one thread issues a rank's calls, in the same order on every rank.
  absl::Status AllReduceSum(void* data, size_t count, DType dtype) override;
  absl::Status AllGather(const void* send, void* recv, size_t count, DType dtype) override;
  // One ncclSend and one ncclRecv per peer with a non-zero count, fused in one group.
  absl::Status AllToAllV(const void* send, const std::vector<size_t>& send_counts, void* recv,
                         const std::vector<size_t>& recv_counts, DType dtype) override;
  absl::Status Broadcast(void* data, size_t count, DType dtype, int root) override;
  // A one-element all-reduce, then Synchronize().
  absl::Status Barrier() override;
  // Waits for stream() to drain, polling NCCL for asynchronous errors, at most `timeout` (then
  // the communicator is aborted and the Status is DeadlineExceeded).
  absl::Status Synchronize() override;

  // The stream every collective is enqueued on; the GPU model enqueues its kernels here too.
  cudaStream_t stream() const override { return stream_.get(); }
  int device() const override { return device_; }
  // OK while the communicator works; the first error once it broke.
  absl::Status health() const override { return broken_; }
  absl::Duration timeout() const { return timeout_; }

 private:
  NcclCollectives(int rank, int size, int device, absl::Duration timeout, CudaStream stream,
                  DeviceMemory barrier_word);

  // Makes this rank's device current for the calling thread.
  absl::Status UseDevice() const;
  // OK when collectives may be issued (the group is not broken).
  absl::Status CheckUsable() const;
  // Turns the result of an NCCL call on the communicator into a Status: waits (until
  // `deadline`) while the non-blocking communicator reports ncclInProgress; on an error or the
  // deadline breaks the group (aborting the communicator).
  absl::Status Complete(ncclResult_t result, absl::string_view call, const char* file, int line,
                        absl::Time deadline);
  // Records `status` as the group's first error and aborts the communicator; returns `status`.
  absl::Status Break(absl::Status status);

  const int rank_;
  const int size_;
  const int device_;
  const absl::Duration timeout_;
  // Declared before the communicator, which the destructor releases first.
  CudaStream stream_;
  DeviceMemory barrier_word_;  // the one int32 Barrier() all-reduces
  ncclComm_t comm_ = nullptr;
  absl::Status broken_;
};

}  // namespace fleet::native
