// The synthetic weights of fleet-engine's model, as a pure function of (seed, tensor, row,
// column), so every rank generates exactly its own shard, the GPU generates on the device what
// the CPU generates on the host, and a run is reproducible from the seed alone. Usable from
// C++ and CUDA (FLEET_HD).
//
// Example: float w = fleet::native::WeightValue(seed, LayerTensor(3, kWq), row * cols + col,
//                                                 /*in_features=*/hidden);
#pragma once

#include <math.h>

#include <cstdint>

#ifdef __CUDACC__
#define FLEET_HD __host__ __device__
#else
#define FLEET_HD
#endif

namespace fleet::native {

// Tensor ids. Full (unsharded) tensors are stored [in_features][out_features], row-major, and
// used as y = x * W.
enum LayerTensorKind : uint32_t {
  kWq = 0,          // [hidden][heads*head_dim]
  kWk = 1,          // [hidden][heads*head_dim]
  kWv = 2,          // [hidden][heads*head_dim]
  kWo = 3,          // [heads*head_dim][hidden]
  kRouter = 4,      // [hidden][experts]
  kSharedGate = 5,  // [hidden][shared_experts*expert_ffn]
  kSharedUp = 6,    // [hidden][shared_experts*expert_ffn]
  kSharedDown = 7,  // [shared_experts*expert_ffn][hidden]
};
enum ExpertTensorKind : uint32_t {
  kExpertGate = 0,  // [hidden][expert_ffn]
  kExpertUp = 1,    // [hidden][expert_ffn]
  kExpertDown = 2,  // [expert_ffn][hidden]
};
inline constexpr uint64_t kEmbeddingTensor = 1;  // [vocab][hidden], values in [-1, 1)
inline constexpr uint64_t kLmHeadTensor = 2;     // [hidden][vocab]

FLEET_HD inline uint64_t LayerTensor(int layer, LayerTensorKind kind) {
  return 16 + static_cast<uint64_t>(layer) * 16 + kind;
}
FLEET_HD inline uint64_t ExpertTensor(int layer, int expert, int num_experts,
                                      ExpertTensorKind kind) {
  return (uint64_t{1} << 32) +
         (static_cast<uint64_t>(layer) * static_cast<uint64_t>(num_experts) +
          static_cast<uint64_t>(expert)) *
             4 +
         kind;
}

FLEET_HD inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A value uniform in [-1, 1) on a 2^-23 grid (exact in float32), from the seed, the tensor and
// the element's flat index in the full tensor.
FLEET_HD inline float UnitValue(uint64_t seed, uint64_t tensor, uint64_t index) {
  uint64_t h = SplitMix64(seed ^ SplitMix64(tensor * 0x100000001B3ull + index));
  return static_cast<float>(static_cast<int64_t>(h >> 40) - (int64_t{1} << 23)) *
         (1.0f / static_cast<float>(1 << 23));
}

// A weight: UnitValue scaled by 1/sqrt(in_features), so activations keep their size from layer
// to layer. The embedding uses in_features = 1.
FLEET_HD inline float WeightValue(uint64_t seed, uint64_t tensor, uint64_t index, int in_features) {
  return UnitValue(seed, tensor, index) / sqrtf(static_cast<float>(in_features));
}

}  // namespace fleet::native
