// The GPU model's own kernels (model_cuda.cu does the matrix products with cuBLAS): weight
// generation, embedding, RMSNorm with the residual adds, attention over the KV cache, SiLU-gate,
// router softmax/top-k, expert grouping and the grouped expert matrix-vector products, the rows
// moved for expert dispatch, and the argmax. Each Launch* enqueues on `stream` and returns the
// launch's error (cudaGetLastError).
//
// Matrices are stored [out][in] row-major (each output's weights contiguous, the layout cuBLAS
// reads as op(A) = T), in bfloat16; activations are float32 except the bf16 inputs of products.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define FLEET_PLAN_HD __host__ __device__
#else
#define FLEET_PLAN_HD
#endif

namespace fleet::native::kernels {

using bf16 = __nv_bfloat16;

// dst[r * dst_row_stride + c] = bf16(WeightValue(seed, tensor, (c + c_off) * a + (r + r_off) * b,
// in_features)) for r < rows, c < cols: one shard of a full tensor, in any storage order.
struct FillSpec {
  bf16* dst = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t dst_row_stride = 0;
  uint64_t seed = 0;
  uint64_t tensor = 0;
  int64_t a = 0;
  int64_t b = 0;
  int64_t r_off = 0;
  int64_t c_off = 0;
  int in_features = 1;
};
cudaError_t LaunchFillWeights(const FillSpec& spec, cudaStream_t stream);

// The step's inputs, int32 [3][max_seqs]: tokens, then slots, then positions.
struct StepInputs {
  const int* tokens = nullptr;
  const int* slots = nullptr;
  const int* positions = nullptr;
};

// h[i][:] = embedding[token_i][:] (float32), for i < n.
cudaError_t LaunchEmbed(const bf16* embedding, StepInputs in, int n, int hidden, float* h,
                        cudaStream_t stream);

// For each row i < n: h[i] += add0[i] + add1[i] + sum_k pair_w[i*K+k] * pairs[i*K+k] (each
// addend optional: null), then out[i] = bf16(h[i] / sqrt(mean(h[i]^2) + 1e-6)).
struct AddNormSpec {
  float* h = nullptr;
  int n = 0;
  int hidden = 0;
  const float* add0 = nullptr;
  const float* add1 = nullptr;
  const float* pairs = nullptr;
  const float* pair_w = nullptr;
  int k = 0;
  bf16* out = nullptr;
};
cudaError_t LaunchAddRmsNorm(const AddNormSpec& spec, cudaStream_t stream);

// Attention of one layer for the rank's heads: stores k and v of each entry at its slot and
// position ([slot][head][position][head_dim] float32 caches), then attends over positions
// 0..position. qkv is [n][3 * local_width] (q, k, v); out is [n][local_width] bf16.
struct AttentionSpec {
  const float* qkv = nullptr;
  int n = 0;
  int local_heads = 0;
  int head_dim = 0;
  StepInputs in;
  float* k_cache = nullptr;
  float* v_cache = nullptr;
  int max_seq_len = 0;
  bf16* out = nullptr;
};
// Shared memory the attention kernel needs for `max_seq_len` (callers check it fits).
size_t AttentionSharedBytes(int head_dim, int max_seq_len);
cudaError_t PrepareAttention(size_t shared_bytes);
cudaError_t LaunchAttention(const AttentionSpec& spec, cudaStream_t stream);

// act[i][f] = bf16(silu(x[i][2f]) * x[i][2f+1]) for f < width; x rows have stride ld.
cudaError_t LaunchSiluGate(const float* x, int n, int width, int ld, bf16* act,
                           cudaStream_t stream);

// Router for rows i < n: logits at x + i * ld (num_experts floats); softmax, the top k (ties:
// lower index), renormalised: ids[i*k + j], weights[i*k + j] in selection order.
cudaError_t LaunchRouterTopK(const float* x, int n, int ld, int num_experts, int k, int* ids,
                             float* weights, cudaStream_t stream);

// A grouping of rows by expert (int32 array):
//   [0] number of active experts A; [1, 1 + cap_experts) active expert ids (local);
//   [1 + cap_experts, 2 + 2 * cap_experts) offsets (A + 1 used); then the rows (offsets[A]).
struct PlanLayout {
  int cap_experts = 0;
  int cap_rows = 0;
  FLEET_PLAN_HD int active_at() const { return 1; }
  FLEET_PLAN_HD int offsets_at() const { return 1 + cap_experts; }
  FLEET_PLAN_HD int rows_at() const { return 2 + 2 * cap_experts; }
  FLEET_PLAN_HD int size() const { return 2 + 2 * cap_experts + cap_rows; }
};
// On the device (world size 1): groups the n * k (token, choice) pairs of `ids` by expert, pairs
// ascending within an expert; also stores A into *active_count.
cudaError_t LaunchBuildPlan(const int* ids, int pairs, int num_experts, PlanLayout layout,
                            int* plan, int* active_count, cudaStream_t stream);

// The grouped expert products over `plan`, one block row per active expert (grid_experts >= A;
// blocks past A return at once). For the j-th row of expert slot s, in = rows[j] / in_div and
// out = rows[j]:
//   gate/up: act[out][f] = bf16(silu(x[in] . Wg_e[f]) * (x[in] . Wu_e[f])), weights
//            [experts][2 * ffn][hidden] with gate f at row 2f and up f at row 2f + 1;
//   down:    y[out][o] = act[in] . Wd_e[o], weights [experts][hidden][ffn].
struct GroupedSpec {
  const bf16* weights = nullptr;
  int outputs = 0;  // ffn (gate/up) or hidden (down)
  int inputs = 0;   // hidden (gate/up) or ffn (down)
  const int* plan = nullptr;
  PlanLayout layout;
  int grid_experts = 0;
  int in_div = 1;
  const bf16* x = nullptr;
  void* y = nullptr;  // bf16 act (gate/up) or float32 (down)
};
cudaError_t LaunchExpertGateUp(const GroupedSpec& spec, cudaStream_t stream);
cudaError_t LaunchExpertDown(const GroupedSpec& spec, cudaStream_t stream);

// Expert dispatch (world size > 1). counts[e] = how many of rows [first, first + own) of ids
// (k per row) chose expert e.
cudaError_t LaunchCountChoices(const int* ids, int first, int own, int k, int num_experts,
                               int* counts, cudaStream_t stream);
// dst[r][:] = src[index[r]][:] for r < rows (bf16 rows of `width`).
cudaError_t LaunchGatherRows(const bf16* src, const int* index, int rows, int width, bf16* dst,
                             cudaStream_t stream);
// out[i][:] = sum_j weights[(first + i) * k + j] * results[at[i * k + j]][:] for i < own, and
// zero for own <= i < rows.
cudaError_t LaunchCombine(const float* results, const int* at, const float* weights, int first,
                          int own, int rows, int k, int hidden, float* out, cudaStream_t stream);

// best[2i] = the largest of logits[i][0..vocab), best[2i+1] = its index + index_base (ties: lower
// index), as the float32 bits of an int32.
cudaError_t LaunchArgmax(const float* logits, int n, int vocab, int index_base, float* best,
                         cudaStream_t stream);

}  // namespace fleet::native::kernels
