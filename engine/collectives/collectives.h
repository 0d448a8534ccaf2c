// One interface for the collectives a tensor/expert-parallel step needs, with two
// implementations: NCCL on GPUs (cuda/nccl_collectives.h: buffers are device pointers, calls are
// enqueued on the rank's stream) and Gloo over TCP on CPUs (gloo_collectives.h: buffers are host
// pointers, calls complete before they return). Counts are in elements, never bytes.
//
// Example (every rank calls the same sequence):
//   RETURN_IF_ERROR(comm.AllReduceSum(partial.data(), partial.size(), DType::kFloat32));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fleet::native {

enum class DType { kFloat32, kBFloat16, kInt32 };

// Bytes of one element of `dtype`.
size_t DTypeSize(DType dtype);
// "float32", "bfloat16", "int32".
const char* DTypeName(DType dtype);

// Memory the collectives work on: host memory for Gloo, device memory for NCCL. Made by
// Collectives::Allocate, freed on destruction.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() = 0;
  virtual size_t bytes() const = 0;
};

class Collectives {
 public:
  virtual ~Collectives() = default;

  // A buffer of `bytes` in the memory this implementation's collectives use, and copies between
  // it and host memory (synchronous: the copy is done when they return). Benchmarks and the
  // step schedule use these so they work unchanged on CPU and GPU.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) = 0;
  virtual absl::Status Upload(Buffer& dst, const void* host, size_t bytes) = 0;
  virtual absl::Status Download(void* host, Buffer& src, size_t bytes) = 0;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // What carries the collectives, for logs and benchmark headers: "gloo/tcp 0.0.0.0",
  // "nccl 2.28.3 (cuda device 0)".
  virtual std::string Describe() const = 0;

  // Sums `count` elements across ranks, in place; every rank ends with the sum.
  virtual absl::Status AllReduceSum(void* data, size_t count, DType dtype) = 0;

  // Every rank contributes `count` elements from `send`; `recv` (size() * count elements) ends
  // with rank 0's block first, then rank 1's, and so on. `send` may alias its own block of
  // `recv`.
  virtual absl::Status AllGather(const void* send, void* recv, size_t count, DType dtype) = 0;

  // Personalised exchange: `send` holds send_counts[p] elements for each rank p, one block after
  // another in rank order; `recv` receives recv_counts[p] elements from each rank p in the same
  // layout. Both count vectors have size() entries and must agree pairwise across ranks (what p
  // sends to q is what q expects from p), which callers settle first with an AllToAll of counts.
  virtual absl::Status AllToAllV(const void* send, const std::vector<size_t>& send_counts,
                                 void* recv, const std::vector<size_t>& recv_counts,
                                 DType dtype) = 0;

  // The same block size to and from every rank: send and recv hold size() * count elements.
  absl::Status AllToAll(const void* send, void* recv, size_t count, DType dtype) {
    std::vector<size_t> counts(static_cast<size_t>(size()), count);
    return AllToAllV(send, counts, recv, counts, dtype);
  }

  // Copies `count` elements from `root`'s `data` into every other rank's `data`.
  virtual absl::Status Broadcast(void* data, size_t count, DType dtype, int root) = 0;

  // Returns once every rank has called it.
  virtual absl::Status Barrier() = 0;

  // Waits until every collective enqueued so far has finished (NCCL: the stream; Gloo: nothing
  // to wait for). Benchmarks time between two of these.
  virtual absl::Status Synchronize() = 0;
};

}  // namespace fleet::native
