// fleet-engine's model on a GPU: model.h's math with bfloat16 weights generated on the device
// (weights.h, each rank its own shard), float32 activations and accumulation, matrix products
// through cuBLAS and its own kernels for the rest (model_kernels.h), tensor and expert
// parallelism through NcclCollectives on the rank's stream.
//
// A step syncs with the host as little as the math allows: at world size 1 the whole step is one
// CUDA graph (captured once per batch size) between the upload of the entries and the download
// of the next tokens, one sync in all; with more ranks each layer syncs once, after the routing,
// because NCCL's all-to-all needs the expert counts on the host.
//
// Example:
//   ASSIGN_OR_RETURN(auto comm, NcclCollectives::Create(&store, rank, world, device, timeout));
//   ASSIGN_OR_RETURN(auto model, CreateCudaModel(shape, comm.get()));
//   ASSIGN_OR_RETURN(StepOutput out, model->Step({{.slot = 0, .token = 65, .position = 0}},
//                                                /*want_logits=*/false));
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/cuda/gpu_collectives.h"
#include "engine/cuda/nccl_collectives.h"
#include "engine/model/model.h"

namespace fleet::native {

struct CudaModelOptions {
  // Replay each world-size-1 step as a CUDA graph (one launch instead of ~12 per layer). Off is
  // for comparison in benchmarks; with more ranks steps are never graphed.
  bool cuda_graphs = true;
};

// Generates this rank's shard of `shape` on `collectives`' device (an NcclCollectives, or a fake
// in tests) and allocates the KV cache and
// the step's buffers for max_num_seqs sequences. `collectives` must outlive the model, and the
// model must be used from one thread. InvalidArgument for a shape ValidateShape rejects or that
// the kernels cannot run (hidden_size and expert_ffn_size must be multiples of 8, max_seq_len
// must fit the attention kernel's shared memory); ResourceExhausted when the device memory is
// too small.
absl::StatusOr<std::unique_ptr<Model>> CreateCudaModel(const ModelShape& shape,
                                                       GpuCollectives* collectives,
                                                       const CudaModelOptions& options = {});

// The device-to-device copy bandwidth of CUDA device `device` in GB/s (1e9 bytes/s), counting
// the bytes read and the bytes written (2 * size / time), the median of several copies of a
// 1 GiB buffer (smaller when the device has little free memory). Checks that the copy is right.
absl::StatusOr<double> MeasureDeviceCopyBandwidth(int device);

}  // namespace fleet::native
