// The GPU model's kernels. Every kernel is deterministic: reductions run in a fixed order, and
// nothing uses atomics, so a step gives the same bits on every run and every rank.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "engine/cuda/model_kernels.h"
#include "engine/model/weights.h"

namespace fleet::native::kernels {
namespace {

constexpr float kRmsEps = 1e-6f;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// (value, index) pairs ordered by value descending, then index ascending; -1 is "none".
__device__ __forceinline__ void WarpArgMax(float& value, int& index) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
    const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
    if (other_index >= 0 &&
        (index < 0 || other_value > value || (other_value == value && other_index < index))) {
      value = other_value;
      index = other_index;
    }
  }
}

// Sum (or max) over the block; every thread gets the result. `scratch` holds 32 floats. Warps
// are added in a fixed order, so the result does not depend on timing.
__device__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = (blockDim.x + 31) / 32;
  v = WarpSum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__device__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = (blockDim.x + 31) / 32;
  v = WarpMax(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float best = -FLT_MAX;
  for (int w = 0; w < warps; ++w) best = fmaxf(best, scratch[w]);
  __syncthreads();
  return best;
}

__device__ __forceinline__ float Silu(float x) { return x / (1.0f + expf(-x)); }

// 8 bf16 weights times 8 bf16 inputs, accumulated in float32.
__device__ __forceinline__ float Dot8(const uint4& w, const uint4& x) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&x);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 wf = __bfloat1622float2(w2[i]);
    const float2 xf = __bfloat1622float2(x2[i]);
    sum = fmaf(wf.x, xf.x, sum);
    sum = fmaf(wf.y, xf.y, sum);
  }
  return sum;
}

__global__ void FillWeightsKernel(FillSpec s) {
  for (int64_t r = blockIdx.x; r < s.rows; r += gridDim.x) {
    bf16* dst = s.dst + r * s.dst_row_stride;
    const uint64_t row_part = static_cast<uint64_t>(r + s.r_off) * static_cast<uint64_t>(s.b);
    for (int64_t c = threadIdx.x; c < s.cols; c += blockDim.x) {
      const uint64_t index =
          static_cast<uint64_t>(c + s.c_off) * static_cast<uint64_t>(s.a) + row_part;
      dst[c] = __float2bfloat16_rn(WeightValue(s.seed, s.tensor, index, s.in_features));
    }
  }
}

// 16-byte loads of 8 bf16 (hidden is a multiple of 8), so one pass of the block covers a row.
__global__ void EmbedKernel(const bf16* embedding, StepInputs in, int hidden, float* h) {
  const int i = blockIdx.x;
  const uint4* row =
      reinterpret_cast<const uint4*>(embedding + static_cast<size_t>(in.tokens[i]) * hidden);
  float4* out = reinterpret_cast<float4*>(h + static_cast<size_t>(i) * hidden);
  for (int v = threadIdx.x; v < hidden / 8; v += blockDim.x) {
    const uint4 packed = row[v];
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
    const float2 a = __bfloat1622float2(pairs[0]);
    const float2 b = __bfloat1622float2(pairs[1]);
    const float2 c = __bfloat1622float2(pairs[2]);
    const float2 d = __bfloat1622float2(pairs[3]);
    out[2 * v] = make_float4(a.x, a.y, b.x, b.y);
    out[2 * v + 1] = make_float4(c.x, c.y, d.x, d.y);
  }
}

// Four elements per thread (float4; hidden is a multiple of 8), and the loads of the k expert
// results unrolled so they are in flight together: at batch 1 this kernel is one block, and its
// time is load latency, not bandwidth.
__global__ void AddRmsNormKernel(AddNormSpec s) {
  __shared__ float scratch[32];
  const int i = blockIdx.x;
  const int quads = s.hidden / 4;
  const size_t base = static_cast<size_t>(i) * quads;
  float4* h = reinterpret_cast<float4*>(s.h) + base;
  const float4* add0 = reinterpret_cast<const float4*>(s.add0);
  const float4* add1 = reinterpret_cast<const float4*>(s.add1);
  const float4* pairs = reinterpret_cast<const float4*>(s.pairs);
  float squares = 0.0f;
  for (int q = threadIdx.x; q < quads; q += blockDim.x) {
    float4 add = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (pairs != nullptr) {
#pragma unroll 8
      for (int k = 0; k < s.k; ++k) {
        const size_t pair = static_cast<size_t>(i) * s.k + k;
        const float w = s.pair_w[pair];
        const float4 p = pairs[pair * quads + q];
        add.x = fmaf(w, p.x, add.x);
        add.y = fmaf(w, p.y, add.y);
        add.z = fmaf(w, p.z, add.z);
        add.w = fmaf(w, p.w, add.w);
      }
    }
    if (add1 != nullptr) {
      const float4 a = add1[base + q];
      add = make_float4(add.x + a.x, add.y + a.y, add.z + a.z, add.w + a.w);
    }
    if (add0 != nullptr) {
      const float4 a = add0[base + q];
      add = make_float4(a.x + add.x, a.y + add.y, a.z + add.z, a.w + add.w);
    }
    float4 v = h[q];
    v = make_float4(v.x + add.x, v.y + add.y, v.z + add.z, v.w + add.w);
    h[q] = v;
    squares += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  const float total = BlockSum(squares, scratch);
  const float inv = rsqrtf(total / static_cast<float>(s.hidden) + kRmsEps);
  uint2* out = reinterpret_cast<uint2*>(s.out + base * 4);
  for (int q = threadIdx.x; q < quads; q += blockDim.x) {
    const float4 v = h[q];
    const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x * inv, v.y * inv);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(v.z * inv, v.w * inv);
    uint2 packed;
    packed.x = *reinterpret_cast<const unsigned*>(&lo);
    packed.y = *reinterpret_cast<const unsigned*>(&hi);
    out[q] = packed;
  }
}

__global__ void AttentionKernel(AttentionSpec s) {
  extern __shared__ float smem[];
  const int hd = s.head_dim;
  float* q = smem;
  float* scores = smem + hd;
  float* scratch = scores + s.max_seq_len;
  const int i = blockIdx.x;
  const int head = blockIdx.y;
  const int width = s.local_heads * hd;
  const int slot = s.in.slots[i];
  const int pos = s.in.positions[i];
  const float* row = s.qkv + static_cast<size_t>(i) * 3 * width + head * hd;
  const size_t base = (static_cast<size_t>(slot) * s.local_heads + head) * s.max_seq_len * hd;
  float* kc = s.k_cache + base;
  float* vc = s.v_cache + base;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    q[d] = row[d];
    kc[static_cast<size_t>(pos) * hd + d] = row[width + d];
    vc[static_cast<size_t>(pos) * hd + d] = row[2 * width + d];
  }
  // Also publishes this block's cache writes to the block's other threads.
  __syncthreads();

  const float scale = rsqrtf(static_cast<float>(hd));
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  for (int t = warp; t <= pos; t += warps) {
    const float* k = kc + static_cast<size_t>(t) * hd;
    float dot = 0.0f;
    for (int d = lane; d < hd; d += 32) dot = fmaf(q[d], k[d], dot);
    dot = WarpSum(dot);
    if (lane == 0) scores[t] = dot * scale;
  }
  __syncthreads();
  float local_max = -FLT_MAX;
  for (int t = threadIdx.x; t <= pos; t += blockDim.x) local_max = fmaxf(local_max, scores[t]);
  const float max = BlockMax(local_max, scratch);
  float local_sum = 0.0f;
  for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
    const float e = expf(scores[t] - max);
    scores[t] = e;
    local_sum += e;
  }
  const float inv = 1.0f / BlockSum(local_sum, scratch);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t <= pos; ++t) acc = fmaf(scores[t], vc[static_cast<size_t>(t) * hd + d], acc);
    s.out[static_cast<size_t>(i) * width + head * hd + d] = __float2bfloat16_rn(acc * inv);
  }
}

__global__ void SiluGateKernel(const float* x, int n, int width, int ld, bf16* act) {
  const int64_t total = static_cast<int64_t>(n) * width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / width;
    const int64_t f = idx - i * width;
    const float* row = x + i * ld;
    act[idx] = __float2bfloat16_rn(Silu(row[2 * f]) * row[2 * f + 1]);
  }
}

// One warp per row; `p` (shared) holds the row's probabilities.
__global__ void RouterTopKKernel(const float* x, int ld, int num_experts, int k, int* ids,
                                 float* weights) {
  extern __shared__ float p[];
  const int i = blockIdx.x;
  const int lane = threadIdx.x;
  const float* z = x + static_cast<size_t>(i) * ld;
  float max = -FLT_MAX;
  for (int e = lane; e < num_experts; e += 32) max = fmaxf(max, z[e]);
  max = WarpMax(max);
  float sum = 0.0f;
  for (int e = lane; e < num_experts; e += 32) {
    const float v = expf(z[e] - max);
    p[e] = v;
    sum += v;
  }
  sum = WarpSum(sum);
  for (int e = lane; e < num_experts; e += 32) p[e] /= sum;
  __syncwarp();
  float chosen_sum = 0.0f;
  for (int j = 0; j < k; ++j) {
    float value = -1.0f;
    int index = -1;
    for (int e = lane; e < num_experts; e += 32) {
      if (p[e] >= 0.0f && (index < 0 || p[e] > value)) {
        value = p[e];
        index = e;
      }
    }
    WarpArgMax(value, index);
    chosen_sum += value;
    if (lane == 0) {
      ids[static_cast<size_t>(i) * k + j] = index;
      weights[static_cast<size_t>(i) * k + j] = value;
      p[index] = -1.0f;  // taken
    }
    __syncwarp();
  }
  if (lane == 0) {
    for (int j = 0; j < k; ++j) weights[static_cast<size_t>(i) * k + j] /= chosen_sum;
  }
}

__global__ void BuildPlanKernel(const int* ids, int pairs, int num_experts, PlanLayout layout,
                                int* plan, int* active_count) {
  extern __shared__ int counts[];  // [num_experts] counts, then [num_experts] starts
  int* starts = counts + num_experts;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    int c = 0;
    for (int j = 0; j < pairs; ++j) c += ids[j] == e ? 1 : 0;
    counts[e] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int active = 0;
    int offset = 0;
    for (int e = 0; e < num_experts; ++e) {
      if (counts[e] == 0) continue;
      plan[layout.active_at() + active] = e;
      plan[layout.offsets_at() + active] = offset;
      starts[e] = offset;
      offset += counts[e];
      ++active;
    }
    plan[layout.offsets_at() + active] = offset;
    plan[0] = active;
    *active_count = active;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    if (counts[e] == 0) continue;
    int at = layout.rows_at() + starts[e];
    for (int j = 0; j < pairs; ++j) {
      if (ids[j] == e) plan[at++] = j;
    }
  }
}

constexpr int kGroupedWarps = 8;
constexpr int kGroupedTokens = 4;  // rows of an expert handled per pass over its weights
constexpr int kGateUpOutPerWarp = 1;
constexpr int kDownOutPerWarp = 2;

// The grouped expert product; see GroupedSpec. A warp computes kOutPerWarp outputs for up to
// kGroupedTokens rows per pass, streaming each weight row once (16-byte loads that skip L1, so
// the rows' inputs stay cached there), then moves on by the grid's warp count: the launch sizes
// the grid to fit the GPU at once (one wave) and gives every warp the same number of outputs.
template <bool kGated, int kOutPerWarp>
__global__ void __launch_bounds__(kGroupedWarps * 32) GroupedKernel(GroupedSpec s) {
  const int* plan = s.plan;
  const int slot = blockIdx.x;
  if (slot >= plan[0]) return;
  const int expert = plan[s.layout.active_at() + slot];
  const int begin = plan[s.layout.offsets_at() + slot];
  const int end = plan[s.layout.offsets_at() + slot + 1];
  const int* rows = plan + s.layout.rows_at();
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  constexpr int kPerOut = kGated ? 2 : 1;
  constexpr int kW = kOutPerWarp * kPerOut;  // weight rows of this warp
  const size_t expert_elems = static_cast<size_t>(kPerOut) * s.outputs * s.inputs;
  const int vecs = s.inputs / 8;
  const int stride = gridDim.y * kGroupedWarps * kOutPerWarp;

  for (int o0 = (blockIdx.y * kGroupedWarps + warp) * kOutPerWarp; o0 < s.outputs; o0 += stride) {
    const int outs = min(kOutPerWarp, s.outputs - o0);
    const int valid_w = outs * kPerOut;
    const bf16* w =
        s.weights + expert * expert_elems + static_cast<size_t>(o0) * kPerOut * s.inputs;
    for (int t0 = begin; t0 < end; t0 += kGroupedTokens) {
      const int ct = min(kGroupedTokens, end - t0);
      const uint4* xr[kGroupedTokens];
#pragma unroll
      for (int t = 0; t < kGroupedTokens; ++t) {
        xr[t] = t < ct ? reinterpret_cast<const uint4*>(
                             s.x + static_cast<size_t>(rows[t0 + t] / s.in_div) * s.inputs)
                       : nullptr;
      }
      float acc[kW][kGroupedTokens];
#pragma unroll
      for (int r = 0; r < kW; ++r) {
#pragma unroll
        for (int t = 0; t < kGroupedTokens; ++t) acc[r][t] = 0.0f;
      }
#pragma unroll 2
      for (int v = lane; v < vecs; v += 32) {
        uint4 wv[kW];
#pragma unroll
        for (int r = 0; r < kW; ++r) {
          wv[r] =
              r < valid_w
                  ? __ldcs(reinterpret_cast<const uint4*>(w + static_cast<size_t>(r) * s.inputs) +
                           v)
                  : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int t = 0; t < kGroupedTokens; ++t) {
          if (t < ct) {
            const uint4 xv = __ldg(xr[t] + v);
#pragma unroll
            for (int r = 0; r < kW; ++r) acc[r][t] += Dot8(wv[r], xv);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < kGroupedTokens; ++t) {
        if (t >= ct) break;
        const size_t out_row = static_cast<size_t>(rows[t0 + t]);
#pragma unroll
        for (int j = 0; j < kOutPerWarp; ++j) {
          if (j >= outs) break;
          if constexpr (kGated) {
            const float g = WarpSum(acc[2 * j][t]);
            const float u = WarpSum(acc[2 * j + 1][t]);
            if (lane == 0) {
              static_cast<bf16*>(s.y)[out_row * s.outputs + o0 + j] =
                  __float2bfloat16_rn(Silu(g) * u);
            }
          } else {
            const float y = WarpSum(acc[j][t]);
            if (lane == 0) static_cast<float*>(s.y)[out_row * s.outputs + o0 + j] = y;
          }
        }
      }
    }
  }
}

// Blocks of the grouped kernel along y for one expert: as many as a single wave allows when
// `grid_experts` experts share the GPU, each warp then taking the same number of outputs.
template <bool kGated, int kOutPerWarp>
cudaError_t LaunchGrouped(const GroupedSpec& spec, cudaStream_t stream) {
  if (spec.grid_experts <= 0) return cudaSuccess;
  constexpr int kThreads = kGroupedWarps * 32;
  int device = 0;
  int sms = 0;
  int per_sm = 0;
  if (cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return err;
  if (cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
      err != cudaSuccess) {
    return err;
  }
  if (cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &per_sm, GroupedKernel<kGated, kOutPerWarp>, kThreads, 0);
      err != cudaSuccess) {
    return err;
  }
  const int64_t resident = std::max<int64_t>(1, static_cast<int64_t>(sms) * per_sm);
  const int64_t full = (spec.outputs + kGroupedWarps * kOutPerWarp - 1) /
                       (kGroupedWarps * kOutPerWarp);  // blocks for one output per warp
  const int64_t passes = (spec.grid_experts * full + resident - 1) / resident;
  const int64_t y = (full + passes - 1) / passes;
  const dim3 grid(spec.grid_experts, static_cast<unsigned>(std::max<int64_t>(1, y)));
  GroupedKernel<kGated, kOutPerWarp><<<grid, kThreads, 0, stream>>>(spec);
  return cudaGetLastError();
}

__global__ void CountChoicesKernel(const int* ids, int first, int own, int k, int num_experts,
                                   int* counts) {
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    int c = 0;
    for (int j = first * k; j < (first + own) * k; ++j) c += ids[j] == e ? 1 : 0;
    counts[e] = c;
  }
}

__global__ void GatherRowsKernel(const bf16* src, const int* index, int width, bf16* dst) {
  const int r = blockIdx.x;
  const uint4* from = reinterpret_cast<const uint4*>(src + static_cast<size_t>(index[r]) * width);
  uint4* to = reinterpret_cast<uint4*>(dst + static_cast<size_t>(r) * width);
  for (int v = threadIdx.x; v < width / 8; v += blockDim.x) to[v] = from[v];
}

__global__ void CombineKernel(const float* results, const int* at, const float* weights, int first,
                              int own, int k, int hidden, float* out) {
  const int i = blockIdx.x;
  float* dst = out + static_cast<size_t>(i) * hidden;
  for (int d = threadIdx.x; d < hidden; d += blockDim.x) {
    float sum = 0.0f;
    if (i < own) {
      for (int j = 0; j < k; ++j) {
        const size_t c = static_cast<size_t>(i) * k + j;
        sum = fmaf(weights[static_cast<size_t>(first) * k + c],
                   results[static_cast<size_t>(at[c]) * hidden + d], sum);
      }
    }
    dst[d] = sum;
  }
}

__global__ void ArgmaxKernel(const float* logits, int vocab, int index_base, float* best) {
  __shared__ float values[32];
  __shared__ int indices[32];
  const int i = blockIdx.x;
  const float* row = logits + static_cast<size_t>(i) * vocab;
  float value = 0.0f;
  int index = -1;
  // Each thread visits its indices in increasing order, so a strict > keeps the lowest on ties.
  if (vocab % 4 == 0) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
#pragma unroll 4
    for (int q = threadIdx.x; q < vocab / 4; q += blockDim.x) {
      const float4 v = row4[q];
      const float c[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (index < 0 || c[e] > value) {
          value = c[e];
          index = 4 * q + e;
        }
      }
    }
  } else {
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
      if (index < 0 || row[j] > value) {
        value = row[j];
        index = j;
      }
    }
  }
  WarpArgMax(value, index);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) {
    values[warp] = value;
    indices[warp] = index;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    value = lane < warps ? values[lane] : 0.0f;
    index = lane < warps ? indices[lane] : -1;
    WarpArgMax(value, index);
    if (lane == 0) {
      best[2 * static_cast<size_t>(i)] = value;
      best[2 * static_cast<size_t>(i) + 1] = __int_as_float(index + index_base);
    }
  }
}

// One thread per item of a row, in whole warps, at most 1024.
int ThreadsFor(int items) { return std::min(1024, std::max(32, (items + 31) / 32 * 32)); }

int BlocksFor(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

}  // namespace

cudaError_t LaunchFillWeights(const FillSpec& spec, cudaStream_t stream) {
  if (spec.rows <= 0 || spec.cols <= 0) return cudaSuccess;
  const int blocks = static_cast<int>(spec.rows < 65535 * 8 ? spec.rows : 65535 * 8);
  FillWeightsKernel<<<blocks, 256, 0, stream>>>(spec);
  return cudaGetLastError();
}

cudaError_t LaunchEmbed(const bf16* embedding, StepInputs in, int n, int hidden, float* h,
                        cudaStream_t stream) {
  EmbedKernel<<<n, ThreadsFor(hidden / 8), 0, stream>>>(embedding, in, hidden, h);
  return cudaGetLastError();
}

cudaError_t LaunchAddRmsNorm(const AddNormSpec& spec, cudaStream_t stream) {
  AddRmsNormKernel<<<spec.n, ThreadsFor(spec.hidden / 4), 0, stream>>>(spec);
  return cudaGetLastError();
}

size_t AttentionSharedBytes(int head_dim, int max_seq_len) {
  return sizeof(float) * (static_cast<size_t>(head_dim) + static_cast<size_t>(max_seq_len) + 32);
}

cudaError_t PrepareAttention(size_t shared_bytes) {
  if (shared_bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(AttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(shared_bytes));
}

cudaError_t LaunchAttention(const AttentionSpec& spec, cudaStream_t stream) {
  const dim3 grid(spec.n, spec.local_heads);
  AttentionKernel<<<grid, 256, AttentionSharedBytes(spec.head_dim, spec.max_seq_len), stream>>>(
      spec);
  return cudaGetLastError();
}

cudaError_t LaunchSiluGate(const float* x, int n, int width, int ld, bf16* act,
                           cudaStream_t stream) {
  SiluGateKernel<<<BlocksFor(static_cast<int64_t>(n) * width, 256), 256, 0, stream>>>(x, n, width,
                                                                                      ld, act);
  return cudaGetLastError();
}

cudaError_t LaunchRouterTopK(const float* x, int n, int ld, int num_experts, int k, int* ids,
                             float* weights, cudaStream_t stream) {
  RouterTopKKernel<<<n, 32, sizeof(float) * num_experts, stream>>>(x, ld, num_experts, k, ids,
                                                                   weights);
  return cudaGetLastError();
}

cudaError_t LaunchBuildPlan(const int* ids, int pairs, int num_experts, PlanLayout layout,
                            int* plan, int* active_count, cudaStream_t stream) {
  BuildPlanKernel<<<1, 256, 2 * sizeof(int) * num_experts, stream>>>(ids, pairs, num_experts,
                                                                     layout, plan, active_count);
  return cudaGetLastError();
}

cudaError_t LaunchExpertGateUp(const GroupedSpec& spec, cudaStream_t stream) {
  return LaunchGrouped<true, kGateUpOutPerWarp>(spec, stream);
}

cudaError_t LaunchExpertDown(const GroupedSpec& spec, cudaStream_t stream) {
  return LaunchGrouped<false, kDownOutPerWarp>(spec, stream);
}

cudaError_t LaunchCountChoices(const int* ids, int first, int own, int k, int num_experts,
                               int* counts, cudaStream_t stream) {
  CountChoicesKernel<<<1, 256, 0, stream>>>(ids, first, own, k, num_experts, counts);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const bf16* src, const int* index, int rows, int width, bf16* dst,
                             cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  GatherRowsKernel<<<rows, 128, 0, stream>>>(src, index, width, dst);
  return cudaGetLastError();
}

cudaError_t LaunchCombine(const float* results, const int* at, const float* weights, int first,
                          int own, int rows, int k, int hidden, float* out, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  CombineKernel<<<rows, 256, 0, stream>>>(results, at, weights, first, own, k, hidden, out);
  return cudaGetLastError();
}

cudaError_t LaunchArgmax(const float* logits, int n, int vocab, int index_base, float* best,
                         cudaStream_t stream) {
  ArgmaxKernel<<<n, 1024, 0, stream>>>(logits, vocab, index_base, best);
  return cudaGetLastError();
}

}  // namespace fleet::native::kernels
