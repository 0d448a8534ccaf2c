// Collectives whose buffers are device memory of one CUDA device and whose work is ordered on
// one stream: what the GPU model needs from its group. NcclCollectives is the real one; tests
// that must run several ranks on one GPU (NCCL needs a GPU per rank) use a fake that stages
// through host memory (tests/gpu/fake_gpu_collectives.h).
//
// Example:
//   GpuCollectives* comm = nccl.get();
//   my_kernel<<<grid, block, 0, comm->stream()>>>(...);
//   RETURN_IF_ERROR(comm->AllReduceSum(partial, n, DType::kFloat32));
#pragma once

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "engine/collectives/collectives.h"

namespace fleet::native {

class GpuCollectives : public Collectives {
 public:
  // The stream the collectives are ordered on; a user enqueues its kernels here too, so that
  // they and the collectives run in program order.
  virtual cudaStream_t stream() const = 0;
  // The CUDA device of this rank's buffers and stream.
  virtual int device() const = 0;
  // OK while the group works; the first error once it broke (then every collective fails).
  virtual absl::Status health() const = 0;
};

}  // namespace fleet::native
