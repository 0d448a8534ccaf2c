// The GPU model (model_cuda.h): weights, KV cache and step buffers of one rank on its device,
// and the step as a sequence of cuBLAS products and model_kernels.h kernels on the rank's stream.
//
// Storage: every matrix is [out][in] bfloat16 (cuBLAS reads it as op(A) = T; the expert kernels
// stream its rows). Per layer: q, k and v of the rank's heads stacked in one matrix; Wo's rows
// of those heads; the shared FFN's gate and up interleaved (gate f at row 2f, up f at row 2f + 1)
// with the router's experts appended, so one product serves both; the shared FFN's down rows;
// the rank's experts, gate/up interleaved the same way, then down. Products take bf16 inputs and
// give float32 (cuBLAS with float32 compute); the residual h, the KV cache, the router and the
// collectives stay float32, except the expert rows sent to other ranks, which are the bf16
// inputs of their products anyway.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_resources.h"
#include "engine/cuda/model_cuda.h"
#include "engine/cuda/model_kernels.h"
#include "engine/model/weights.h"

namespace fleet::native {
namespace {

using kernels::bf16;

// cuBLAS gets its workspace from us, so that graph capture never makes it allocate.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
constexpr size_t kWeightBytes = sizeof(bf16);

struct LayerWeights {
  DeviceMemory qkv;             // [3 * width][hidden]
  DeviceMemory wo;              // [hidden][width]
  DeviceMemory shared_router;   // [2 * local_shared + experts][hidden]
  DeviceMemory shared_down;     // [hidden][local_shared]
  DeviceMemory expert_gate_up;  // [local_experts][2 * ffn][hidden]
  DeviceMemory expert_down;     // [local_experts][hidden][ffn]
};

class CudaModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<CudaModel>> Create(const ModelShape& shape,
                                                           GpuCollectives* comm,
                                                           const CudaModelOptions& options);

  absl::StatusOr<StepOutput> Step(const std::vector<StepEntry>& entries, bool want_logits) override;
  const ModelShape& shape() const override { return shape_; }

 private:
  CudaModel(const ModelShape& shape, GpuCollectives* comm, const CudaModelOptions& options);

  absl::Status Init();
  absl::Status Generate();
  absl::Status Fill(bf16* dst, int64_t rows, int64_t cols, int64_t dst_row_stride, uint64_t tensor,
                    int64_t a, int64_t b, int64_t r_off, int64_t c_off, int in_features);
  absl::StatusOr<DeviceMemory> Alloc(size_t bytes) { return DeviceMemory::Create(device_, bytes); }
  absl::Status CheckEntries(const std::vector<StepEntry>& entries) const;

  // Everything from the embedding to the argmax for the n entries in step_in_. At world size 1
  // it never waits for the device, so it can be captured as a graph.
  absl::Status Forward(int n, bool want_logits);
  absl::Status RoutedLocal(int layer, int n);
  absl::Status RoutedDispatch(int layer, int n);
  // The routed experts of `plan` over `grid` expert slots: gate-up into expert_act_, then down
  // into expert_out_. A plan row j reads row rows[j] / in_div of `x` (model_kernels.h).
  absl::Status RunExperts(const LayerWeights& w, const int* plan, int grid, int in_div,
                          const bf16* x);
  // y[n][out] = x[n][in] * W^T for W stored [out][in].
  absl::Status Gemm(const bf16* w, int out, int in, const bf16* x, int n, float* y);
  kernels::StepInputs Inputs() const {
    const int* in = step_in_.as<int>();
    return {.tokens = in, .slots = in + max_seqs_, .positions = in + 2 * max_seqs_};
  }

  const ModelShape shape_;
  GpuCollectives* const comm_;
  const CudaModelOptions options_;
  const int world_;
  const int rank_;
  const int device_;
  const cudaStream_t stream_;
  // Dimensions of this rank's shard.
  const int hidden_;
  const int head_dim_;
  const int local_heads_;
  const int width_;  // local_heads * head_dim: this rank's q, k and v columns
  const int experts_;
  const int local_experts_;
  const int top_k_;
  const int ffn_;
  const int local_shared_;
  const int sr_ld_;  // 2 * local_shared + experts: the shared gate/up and router product's width
  const int vocab_;
  const int local_vocab_;
  const int layers_n_;
  const int max_seqs_;
  const int max_len_;
  const int share_cap_;  // the most entries one rank routes: ceil(max_num_seqs / world)
  const int rows_cap_;   // the most expert rows one rank computes in a layer
  const kernels::PlanLayout plan_layout_;

  CublasHandle cublas_;
  DeviceMemory cublas_workspace_;
  DeviceMemory embedding_;  // [vocab][hidden]
  std::vector<LayerWeights> layers_;
  DeviceMemory lm_head_;  // [local_vocab][hidden]
  DeviceMemory k_cache_;  // [layers][slots][local_heads][max_seq_len][head_dim] float32
  DeviceMemory v_cache_;

  // Step buffers, sized for max_num_seqs entries.
  DeviceMemory step_in_;     // int32 [3][max_seqs]
  DeviceMemory h_;           // [n][hidden] float32, the residual stream
  DeviceMemory x_;           // [n][hidden] bf16, RMSNorm(h): the input of the next products
  DeviceMemory qkv_;         // [n][3 * width]
  DeviceMemory attn_;        // [n][width] bf16
  DeviceMemory o_;           // [n][hidden]
  DeviceMemory sr_;          // [n][sr_ld]
  DeviceMemory shared_act_;  // [n][local_shared] bf16
  DeviceMemory shared_out_;  // [n][hidden]
  DeviceMemory topk_ids_;    // [n][top_k] int32
  DeviceMemory topk_w_;      // [n][top_k]
  DeviceMemory plan_;        // PlanLayout, then (world > 1) token_of [share*k], at [share*k]
  DeviceMemory active_;      // [layers] int32: experts of this rank that got rows (world 1)
  DeviceMemory expert_act_;  // [rows_cap][ffn] bf16
  DeviceMemory expert_out_;  // [rows_cap][hidden]
  DeviceMemory logits_;      // [n][local_vocab]
  DeviceMemory best_;        // [n][2]: value, index bits
  // World > 1 only.
  DeviceMemory counts_;      // int32 [2][experts]: rows we send per expert, rows we receive
  DeviceMemory send_rows_;   // [share * k][hidden] bf16
  DeviceMemory recv_rows_;   // [rows_cap][hidden] bf16
  DeviceMemory send_out_;    // [share * k][hidden]
  DeviceMemory routed_own_;  // [share][hidden]
  DeviceMemory routed_all_;  // [world * share][hidden]
  DeviceMemory best_all_;    // [world][n][2]
  DeviceMemory logits_all_;  // [world][n][local_vocab]

  PinnedHostMemory host_in_;      // int32 [3][max_seqs]
  PinnedHostMemory host_best_;    // float [world][max_seqs][2]
  PinnedHostMemory host_active_;  // int32 [layers]
  PinnedHostMemory host_logits_;  // float [max_seqs][vocab]
  PinnedHostMemory host_route_;   // int32 ids [max_seqs * k], counts [2 * experts]
  PinnedHostMemory host_plan_;    // what plan_ receives each layer (world > 1)

  std::map<int, CudaGraph> graphs_;  // by entry count (world 1)
  std::vector<int> filled_;          // per slot: positions 0..filled-1 hold k and v
  std::vector<int> touched_;         // per layer, this step (world > 1)
  uint64_t dense_bytes_ = 0;
  uint64_t expert_bytes_ = 0;
};

CudaModel::CudaModel(const ModelShape& shape, GpuCollectives* comm, const CudaModelOptions& options)
    : shape_(shape),
      comm_(comm),
      options_(options),
      world_(comm->size()),
      rank_(comm->rank()),
      device_(comm->device()),
      stream_(comm->stream()),
      hidden_(shape.hidden_size),
      head_dim_(shape.head_dim()),
      local_heads_(shape.num_heads / world_),
      width_(local_heads_ * head_dim_),
      experts_(shape.num_experts),
      local_experts_(shape.num_experts / world_),
      top_k_(shape.experts_per_token),
      ffn_(shape.expert_ffn_size),
      local_shared_(shape.shared_experts * shape.expert_ffn_size / world_),
      sr_ld_(2 * local_shared_ + shape.num_experts),
      vocab_(shape.vocab_size),
      local_vocab_(shape.vocab_size / world_),
      layers_n_(shape.num_layers),
      max_seqs_(shape.max_num_seqs),
      max_len_(shape.max_seq_len),
      share_cap_((shape.max_num_seqs + world_ - 1) / world_),
      rows_cap_(std::max(shape.max_num_seqs * shape.experts_per_token,
                         world_ * share_cap_ * shape.experts_per_token)),
      plan_layout_{.cap_experts = shape.num_experts, .cap_rows = rows_cap_},
      filled_(static_cast<size_t>(shape.max_num_seqs), 0),
      touched_(static_cast<size_t>(shape.num_layers), 0) {}

absl::StatusOr<std::unique_ptr<CudaModel>> CudaModel::Create(const ModelShape& shape,
                                                             GpuCollectives* comm,
                                                             const CudaModelOptions& options) {
  if (comm == nullptr) return absl::InvalidArgumentError("CreateCudaModel needs GPU collectives");
  RETURN_IF_ERROR(ValidateShape(shape, comm->size()));
  if (shape.hidden_size % 8 != 0 || shape.expert_ffn_size % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model shape: the GPU model reads weights 8 bf16 at a time, so hidden_size (",
                     shape.hidden_size, ") and expert_ffn_size (", shape.expert_ffn_size,
                     ") must be multiples of 8"));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(comm->device()));
  int optin = 0;
  RETURN_IF_CUDA_ERROR(
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, comm->device()));
  const size_t attention_smem = kernels::AttentionSharedBytes(shape.head_dim(), shape.max_seq_len);
  if (attention_smem > static_cast<size_t>(optin)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model shape: max_seq_len ", shape.max_seq_len, " needs ", attention_smem,
        " bytes of shared memory for attention scores; this GPU gives a block at most ", optin,
        "; lower max_seq_len"));
  }
  RETURN_IF_CUDA_ERROR(kernels::PrepareAttention(attention_smem));
  std::unique_ptr<CudaModel> model(new CudaModel(shape, comm, options));
  RETURN_IF_ERROR(model->Init());
  return model;
}

absl::Status CudaModel::Init() {
  // Fail early, with the numbers, when the shard cannot fit.
  const ShapeSizes sizes = Sizes(shape_);
  const uint64_t local_params =
      (sizes.dense_params - static_cast<uint64_t>(layers_n_) * hidden_ * experts_) / world_ +
      static_cast<uint64_t>(layers_n_) * hidden_ * experts_ +
      static_cast<uint64_t>(layers_n_) * local_experts_ * sizes.params_per_expert +
      static_cast<uint64_t>(vocab_) * hidden_;
  const uint64_t cache_bytes = 2 * sizeof(float) * static_cast<uint64_t>(layers_n_) * max_seqs_ *
                               local_heads_ * static_cast<uint64_t>(max_len_) * head_dim_;
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  RETURN_IF_CUDA_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  const uint64_t need = local_params * kWeightBytes + cache_bytes + (uint64_t{256} << 20);
  if (need > free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "rank ", rank_, "'s shard needs about ", need >> 20, " MiB of device memory (weights ",
        (local_params * kWeightBytes) >> 20, " MiB, KV cache ", cache_bytes >> 20,
        " MiB); cuda device ", device_, " has ", free_bytes >> 20,
        " MiB free; use more ranks, fewer layers or experts, or fewer/shorter sequences"));
  }

  ASSIGN_OR_RETURN(cublas_, CublasHandle::Create(device_));
  ASSIGN_OR_RETURN(cublas_workspace_, Alloc(kCublasWorkspaceBytes));
  RETURN_IF_CUBLAS_ERROR(cublasSetStream(cublas_.get(), stream_));
  RETURN_IF_CUBLAS_ERROR(
      cublasSetWorkspace(cublas_.get(), cublas_workspace_.get(), kCublasWorkspaceBytes));

  RETURN_IF_ERROR(Generate());

  const size_t cache_elems = static_cast<size_t>(layers_n_) * max_seqs_ * local_heads_ *
                             static_cast<size_t>(max_len_) * head_dim_;
  ASSIGN_OR_RETURN(k_cache_, Alloc(cache_elems * sizeof(float)));
  ASSIGN_OR_RETURN(v_cache_, Alloc(cache_elems * sizeof(float)));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(k_cache_.get(), 0, k_cache_.bytes(), stream_));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(v_cache_.get(), 0, v_cache_.bytes(), stream_));

  const size_t m = static_cast<size_t>(max_seqs_);
  const size_t hd = static_cast<size_t>(hidden_);
  const size_t send_cap = static_cast<size_t>(share_cap_) * top_k_;
  ASSIGN_OR_RETURN(step_in_, Alloc(3 * m * sizeof(int)));
  ASSIGN_OR_RETURN(h_, Alloc(m * hd * sizeof(float)));
  ASSIGN_OR_RETURN(x_, Alloc(m * hd * sizeof(bf16)));
  ASSIGN_OR_RETURN(qkv_, Alloc(m * 3 * width_ * sizeof(float)));
  ASSIGN_OR_RETURN(attn_, Alloc(m * width_ * sizeof(bf16)));
  ASSIGN_OR_RETURN(o_, Alloc(m * hd * sizeof(float)));
  ASSIGN_OR_RETURN(sr_, Alloc(m * sr_ld_ * sizeof(float)));
  ASSIGN_OR_RETURN(shared_act_, Alloc(m * std::max(local_shared_, 1) * sizeof(bf16)));
  ASSIGN_OR_RETURN(shared_out_, Alloc(m * hd * sizeof(float)));
  ASSIGN_OR_RETURN(topk_ids_, Alloc(m * top_k_ * sizeof(int)));
  ASSIGN_OR_RETURN(topk_w_, Alloc(m * top_k_ * sizeof(float)));
  ASSIGN_OR_RETURN(plan_, Alloc((plan_layout_.size() + 2 * send_cap) * sizeof(int)));
  ASSIGN_OR_RETURN(active_, Alloc(layers_n_ * sizeof(int)));
  ASSIGN_OR_RETURN(expert_act_, Alloc(static_cast<size_t>(rows_cap_) * ffn_ * sizeof(bf16)));
  ASSIGN_OR_RETURN(expert_out_, Alloc(static_cast<size_t>(rows_cap_) * hd * sizeof(float)));
  ASSIGN_OR_RETURN(logits_, Alloc(m * local_vocab_ * sizeof(float)));
  ASSIGN_OR_RETURN(best_, Alloc(m * 2 * sizeof(float)));
  if (world_ > 1) {
    const size_t w = static_cast<size_t>(world_);
    ASSIGN_OR_RETURN(counts_, Alloc(2 * experts_ * sizeof(int)));
    ASSIGN_OR_RETURN(send_rows_, Alloc(send_cap * hd * sizeof(bf16)));
    ASSIGN_OR_RETURN(recv_rows_, Alloc(static_cast<size_t>(rows_cap_) * hd * sizeof(bf16)));
    ASSIGN_OR_RETURN(send_out_, Alloc(send_cap * hd * sizeof(float)));
    ASSIGN_OR_RETURN(routed_own_, Alloc(share_cap_ * hd * sizeof(float)));
    ASSIGN_OR_RETURN(routed_all_, Alloc(w * share_cap_ * hd * sizeof(float)));
    ASSIGN_OR_RETURN(best_all_, Alloc(w * m * 2 * sizeof(float)));
    ASSIGN_OR_RETURN(logits_all_, Alloc(w * m * local_vocab_ * sizeof(float)));
    ASSIGN_OR_RETURN(host_route_,
                     PinnedHostMemory::Create((m * top_k_ + 2 * experts_) * sizeof(int)));
    ASSIGN_OR_RETURN(host_plan_, PinnedHostMemory::Create(plan_.bytes()));
  }
  ASSIGN_OR_RETURN(host_in_, PinnedHostMemory::Create(3 * m * sizeof(int)));
  ASSIGN_OR_RETURN(host_best_, PinnedHostMemory::Create(world_ * m * 2 * sizeof(float)));
  ASSIGN_OR_RETURN(host_active_, PinnedHostMemory::Create(layers_n_ * sizeof(int)));
  ASSIGN_OR_RETURN(host_logits_, PinnedHostMemory::Create(m * vocab_ * sizeof(float)));

  // What a step reads (model_cpu.cc counts the same way): the dense shard and the LM head
  // slice every step, and each expert that received a row.
  uint64_t dense = 0;
  dense += static_cast<uint64_t>(3) * width_ * hidden_ + static_cast<uint64_t>(hidden_) * width_;
  dense += static_cast<uint64_t>(sr_ld_) * hidden_ + static_cast<uint64_t>(hidden_) * local_shared_;
  dense *= static_cast<uint64_t>(layers_n_);
  dense += static_cast<uint64_t>(local_vocab_) * hidden_;
  dense_bytes_ = dense * kWeightBytes;
  expert_bytes_ = sizes.params_per_expert * kWeightBytes;
  return comm_->Synchronize();
}

absl::Status CudaModel::Fill(bf16* dst, int64_t rows, int64_t cols, int64_t dst_row_stride,
                             uint64_t tensor, int64_t a, int64_t b, int64_t r_off, int64_t c_off,
                             int in_features) {
  RETURN_IF_CUDA_ERROR(kernels::LaunchFillWeights({.dst = dst,
                                                   .rows = rows,
                                                   .cols = cols,
                                                   .dst_row_stride = dst_row_stride,
                                                   .seed = shape_.seed,
                                                   .tensor = tensor,
                                                   .a = a,
                                                   .b = b,
                                                   .r_off = r_off,
                                                   .c_off = c_off,
                                                   .in_features = in_features},
                                                  stream_));
  return absl::OkStatus();
}

// Element (r, c) of a shard stored [out][in] is element (in = c + c_off, out = r + r_off) of the
// full [in][out] tensor, flat index (c + c_off) * out_full + (r + r_off): a = out_full, b = 1.
absl::Status CudaModel::Generate() {
  const int64_t h = hidden_;
  const int64_t attn = static_cast<int64_t>(shape_.num_heads) * head_dim_;
  const int64_t shared = static_cast<int64_t>(shape_.shared_experts) * ffn_;
  const int64_t ls = local_shared_;
  // Embedding [vocab][hidden] stored as is: index = token * hidden + j.
  ASSIGN_OR_RETURN(embedding_, Alloc(static_cast<size_t>(vocab_) * h * kWeightBytes));
  RETURN_IF_ERROR(Fill(embedding_.as<bf16>(), vocab_, h, h, kEmbeddingTensor, /*a=*/1, /*b=*/h, 0,
                       0, /*in_features=*/1));
  layers_.resize(static_cast<size_t>(layers_n_));
  for (int l = 0; l < layers_n_; ++l) {
    LayerWeights& w = layers_[static_cast<size_t>(l)];
    ASSIGN_OR_RETURN(w.qkv, Alloc(static_cast<size_t>(3) * width_ * h * kWeightBytes));
    const LayerTensorKind qkv_kinds[3] = {kWq, kWk, kWv};
    for (int t = 0; t < 3; ++t) {
      RETURN_IF_ERROR(Fill(w.qkv.as<bf16>() + static_cast<size_t>(t) * width_ * h, width_, h, h,
                           LayerTensor(l, qkv_kinds[t]), attn, 1,
                           static_cast<int64_t>(rank_) * width_, 0, hidden_));
    }
    // Wo [attn][hidden], our rows: stored [hidden][width].
    ASSIGN_OR_RETURN(w.wo, Alloc(static_cast<size_t>(h) * width_ * kWeightBytes));
    RETURN_IF_ERROR(Fill(w.wo.as<bf16>(), h, width_, width_, LayerTensor(l, kWo), h, 1, 0,
                         static_cast<int64_t>(rank_) * width_, static_cast<int>(attn)));
    ASSIGN_OR_RETURN(w.shared_router, Alloc(static_cast<size_t>(sr_ld_) * h * kWeightBytes));
    if (ls > 0) {
      RETURN_IF_ERROR(Fill(w.shared_router.as<bf16>(), ls, h, 2 * h, LayerTensor(l, kSharedGate),
                           shared, 1, rank_ * ls, 0, hidden_));
      RETURN_IF_ERROR(Fill(w.shared_router.as<bf16>() + h, ls, h, 2 * h, LayerTensor(l, kSharedUp),
                           shared, 1, rank_ * ls, 0, hidden_));
    }
    RETURN_IF_ERROR(Fill(w.shared_router.as<bf16>() + 2 * ls * h, experts_, h, h,
                         LayerTensor(l, kRouter), experts_, 1, 0, 0, hidden_));
    ASSIGN_OR_RETURN(w.shared_down,
                     Alloc(static_cast<size_t>(h) * std::max<int64_t>(ls, 1) * kWeightBytes));
    if (ls > 0) {
      RETURN_IF_ERROR(Fill(w.shared_down.as<bf16>(), h, ls, ls, LayerTensor(l, kSharedDown), h, 1,
                           0, rank_ * ls, static_cast<int>(shared)));
    }
    const size_t per_expert = static_cast<size_t>(2) * ffn_ * h;
    ASSIGN_OR_RETURN(w.expert_gate_up, Alloc(local_experts_ * per_expert * kWeightBytes));
    ASSIGN_OR_RETURN(w.expert_down,
                     Alloc(static_cast<size_t>(local_experts_) * h * ffn_ * kWeightBytes));
    for (int e = 0; e < local_experts_; ++e) {
      const int expert = rank_ * local_experts_ + e;
      bf16* gu = w.expert_gate_up.as<bf16>() + e * per_expert;
      RETURN_IF_ERROR(Fill(gu, ffn_, h, 2 * h, ExpertTensor(l, expert, experts_, kExpertGate), ffn_,
                           1, 0, 0, hidden_));
      RETURN_IF_ERROR(Fill(gu + h, ffn_, h, 2 * h, ExpertTensor(l, expert, experts_, kExpertUp),
                           ffn_, 1, 0, 0, hidden_));
      RETURN_IF_ERROR(Fill(w.expert_down.as<bf16>() + static_cast<size_t>(e) * h * ffn_, h, ffn_,
                           ffn_, ExpertTensor(l, expert, experts_, kExpertDown), h, 1, 0, 0, ffn_));
    }
  }
  ASSIGN_OR_RETURN(lm_head_, Alloc(static_cast<size_t>(local_vocab_) * h * kWeightBytes));
  return Fill(lm_head_.as<bf16>(), local_vocab_, h, h, kLmHeadTensor, vocab_, 1,
              static_cast<int64_t>(rank_) * local_vocab_, 0, hidden_);
}

absl::Status CudaModel::Gemm(const bf16* w, int out, int in, const bf16* x, int n, float* y) {
  const float one = 1.0f;
  const float zero = 0.0f;
  RETURN_IF_CUBLAS_ERROR(cublasGemmEx(cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w,
                                      CUDA_R_16BF, in, x, CUDA_R_16BF, in, &zero, y, CUDA_R_32F,
                                      out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

absl::Status CudaModel::CheckEntries(const std::vector<StepEntry>& entries) const {
  if (entries.size() > static_cast<size_t>(max_seqs_)) {
    return absl::InvalidArgumentError(absl::StrCat("a step carries at most max_num_seqs (",
                                                   max_seqs_, ") sequences, got ", entries.size()));
  }
  std::vector<bool> seen(static_cast<size_t>(max_seqs_));
  for (size_t i = 0; i < entries.size(); ++i) {
    const StepEntry& e = entries[i];
    if (e.slot < 0 || e.slot >= max_seqs_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "entry ", i, ": slot ", e.slot, " is outside 0..max_num_seqs-1 (", max_seqs_ - 1, ")"));
    }
    if (seen[static_cast<size_t>(e.slot)]) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": slot ", e.slot, " appears twice in the step"));
    }
    seen[static_cast<size_t>(e.slot)] = true;
    if (e.token < 0 || e.token >= vocab_) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i, ": token ", e.token, " is outside 0..", vocab_ - 1));
    }
    if (e.position < 0 || e.position >= max_len_) {
      return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position ", e.position,
                                                     " is outside 0..max_seq_len-1 (", max_len_ - 1,
                                                     ")"));
    }
    const int filled = filled_[static_cast<size_t>(e.slot)];
    if (e.position > filled) {
      return absl::InvalidArgumentError(absl::StrCat(
          "entry ", i, ": slot ", e.slot, " has positions 0..", filled - 1, " filled, so position ",
          e.position, " would attend over empty cache; feed position ", filled,
          " next (or 0 to start a new sequence)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StepOutput> CudaModel::Step(const std::vector<StepEntry>& entries,
                                           bool want_logits) {
  RETURN_IF_ERROR(CheckEntries(entries));
  StepOutput out;
  if (entries.empty()) return out;
  RETURN_IF_ERROR(comm_->health());
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  const int n = static_cast<int>(entries.size());

  int* in = host_in_.as<int>();
  for (int i = 0; i < n; ++i) {
    in[i] = entries[static_cast<size_t>(i)].token;
    in[max_seqs_ + i] = entries[static_cast<size_t>(i)].slot;
    in[2 * max_seqs_ + i] = entries[static_cast<size_t>(i)].position;
  }
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(step_in_.get(), in, host_in_.bytes(), cudaMemcpyHostToDevice, stream_));
  if (world_ == 1 && options_.cuda_graphs) {
    auto graph = graphs_.find(n);
    if (graph == graphs_.end()) {
      RETURN_IF_ERROR(CudaGraph::BeginCapture(stream_));
      absl::Status captured = Forward(n, /*want_logits=*/false);
      absl::StatusOr<CudaGraph> made = CudaGraph::EndCapture(device_, stream_);
      RETURN_IF_ERROR(captured);
      RETURN_IF_ERROR(made.status());
      graph = graphs_.emplace(n, *std::move(made)).first;
    }
    RETURN_IF_ERROR(graph->second.Launch(stream_));
  } else {
    RETURN_IF_ERROR(Forward(n, want_logits));
  }

  // One wait for the results (world 1: the only one of the step).
  const float* best = world_ == 1 ? best_.as<float>() : best_all_.as<float>();
  const size_t best_bytes = static_cast<size_t>(world_) * n * 2 * sizeof(float);
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(host_best_.get(), best, best_bytes, cudaMemcpyDeviceToHost, stream_));
  if (world_ == 1) {
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(host_active_.get(), active_.get(), active_.bytes(),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  if (want_logits) {
    const float* logits = world_ == 1 ? logits_.as<float>() : logits_all_.as<float>();
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(host_logits_.get(), logits,
                                         static_cast<size_t>(n) * vocab_ * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  RETURN_IF_ERROR(comm_->Synchronize());

  for (const StepEntry& e : entries) filled_[static_cast<size_t>(e.slot)] = e.position + 1;
  const float* host_best = host_best_.as<float>();
  out.next_tokens.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    // Ranks hold ascending vocabulary slices: a strict > keeps the lower id on ties.
    float max = 0.0f;
    int token = -1;
    for (int r = 0; r < world_; ++r) {
      const size_t at = (static_cast<size_t>(r) * n + i) * 2;
      int index = 0;
      std::memcpy(&index, &host_best[at + 1], sizeof index);
      if (token < 0 || host_best[at] > max) {
        max = host_best[at];
        token = index;
      }
    }
    out.next_tokens[static_cast<size_t>(i)] = token;
  }
  out.weight_bytes_read = dense_bytes_;
  for (int l = 0; l < layers_n_; ++l) {
    const int touched = world_ == 1 ? host_active_.as<int>()[l] : touched_[static_cast<size_t>(l)];
    out.weight_bytes_read += static_cast<uint64_t>(touched) * expert_bytes_;
  }
  if (want_logits) {
    out.logits.resize(static_cast<size_t>(n) * vocab_);
    const float* logits = host_logits_.as<float>();
    for (int r = 0; r < world_; ++r) {
      for (int i = 0; i < n; ++i) {
        std::memcpy(
            &out.logits[static_cast<size_t>(i) * vocab_ + static_cast<size_t>(r) * local_vocab_],
            &logits[(static_cast<size_t>(r) * n + i) * local_vocab_],
            sizeof(float) * static_cast<size_t>(local_vocab_));
      }
    }
  }
  return out;
}

absl::Status CudaModel::Forward(int n, bool want_logits) {
  const kernels::StepInputs in = Inputs();
  float* h = h_.as<float>();
  bf16* x = x_.as<bf16>();
  const size_t nh = static_cast<size_t>(n) * hidden_;
  RETURN_IF_CUDA_ERROR(kernels::LaunchEmbed(embedding_.as<bf16>(), in, n, hidden_, h, stream_));
  RETURN_IF_CUDA_ERROR(
      kernels::LaunchAddRmsNorm({.h = h, .n = n, .hidden = hidden_, .out = x}, stream_));
  for (int l = 0; l < layers_n_; ++l) {
    const LayerWeights& w = layers_[static_cast<size_t>(l)];
    // Attention over our heads; Wo's rows of them give a partial sum of the output.
    RETURN_IF_ERROR(Gemm(w.qkv.as<bf16>(), 3 * width_, hidden_, x, n, qkv_.as<float>()));
    const size_t layer_cache = static_cast<size_t>(max_seqs_) * local_heads_ * max_len_ *
                               static_cast<size_t>(head_dim_) * l;
    RETURN_IF_CUDA_ERROR(kernels::LaunchAttention({.qkv = qkv_.as<float>(),
                                                   .n = n,
                                                   .local_heads = local_heads_,
                                                   .head_dim = head_dim_,
                                                   .in = in,
                                                   .k_cache = k_cache_.as<float>() + layer_cache,
                                                   .v_cache = v_cache_.as<float>() + layer_cache,
                                                   .max_seq_len = max_len_,
                                                   .out = attn_.as<bf16>()},
                                                  stream_));
    RETURN_IF_ERROR(Gemm(w.wo.as<bf16>(), hidden_, width_, attn_.as<bf16>(), n, o_.as<float>()));
    if (world_ > 1) RETURN_IF_ERROR(comm_->AllReduceSum(o_.get(), nh, DType::kFloat32));
    RETURN_IF_CUDA_ERROR(kernels::LaunchAddRmsNorm(
        {.h = h, .n = n, .hidden = hidden_, .add0 = o_.as<float>(), .out = x}, stream_));

    // Shared FFN (our slice) and the router, from one product.
    RETURN_IF_ERROR(Gemm(w.shared_router.as<bf16>(), sr_ld_, hidden_, x, n, sr_.as<float>()));
    if (local_shared_ > 0) {
      RETURN_IF_CUDA_ERROR(kernels::LaunchSiluGate(sr_.as<float>(), n, local_shared_, sr_ld_,
                                                   shared_act_.as<bf16>(), stream_));
      RETURN_IF_ERROR(Gemm(w.shared_down.as<bf16>(), hidden_, local_shared_, shared_act_.as<bf16>(),
                           n, shared_out_.as<float>()));
      if (world_ > 1) {
        RETURN_IF_ERROR(comm_->AllReduceSum(shared_out_.get(), nh, DType::kFloat32));
      }
    }
    RETURN_IF_CUDA_ERROR(kernels::LaunchRouterTopK(sr_.as<float>() + 2 * local_shared_, n, sr_ld_,
                                                   experts_, top_k_, topk_ids_.as<int>(),
                                                   topk_w_.as<float>(), stream_));
    if (world_ == 1) {
      RETURN_IF_ERROR(RoutedLocal(l, n));
    } else {
      RETURN_IF_ERROR(RoutedDispatch(l, n));
    }
  }
  // x now holds RMSNorm(h) of the last layer's output: the LM head's input.
  RETURN_IF_ERROR(Gemm(lm_head_.as<bf16>(), local_vocab_, hidden_, x, n, logits_.as<float>()));
  RETURN_IF_CUDA_ERROR(kernels::LaunchArgmax(logits_.as<float>(), n, local_vocab_,
                                             rank_ * local_vocab_, best_.as<float>(), stream_));
  if (world_ > 1) {
    RETURN_IF_ERROR(comm_->AllGather(best_.get(), best_all_.get(), static_cast<size_t>(n) * 2,
                                     DType::kFloat32));
    if (want_logits) {
      RETURN_IF_ERROR(comm_->AllGather(logits_.get(), logits_all_.get(),
                                       static_cast<size_t>(n) * local_vocab_, DType::kFloat32));
    }
  }
  return absl::OkStatus();
}

// World size 1: every expert is ours; the grouping by expert is made on the device, so the step
// never waits for the host.
absl::Status CudaModel::RunExperts(const LayerWeights& w, const int* plan, int grid, int in_div,
                                   const bf16* x) {
  RETURN_IF_CUDA_ERROR(kernels::LaunchExpertGateUp({.weights = w.expert_gate_up.as<bf16>(),
                                                    .outputs = ffn_,
                                                    .inputs = hidden_,
                                                    .plan = plan,
                                                    .layout = plan_layout_,
                                                    .grid_experts = grid,
                                                    .in_div = in_div,
                                                    .x = x,
                                                    .y = expert_act_.get()},
                                                   stream_));
  RETURN_IF_CUDA_ERROR(kernels::LaunchExpertDown({.weights = w.expert_down.as<bf16>(),
                                                  .outputs = hidden_,
                                                  .inputs = ffn_,
                                                  .plan = plan,
                                                  .layout = plan_layout_,
                                                  .grid_experts = grid,
                                                  .in_div = 1,
                                                  .x = expert_act_.as<bf16>(),
                                                  .y = expert_out_.get()},
                                                 stream_));
  return absl::OkStatus();
}

absl::Status CudaModel::RoutedLocal(int layer, int n) {
  const LayerWeights& w = layers_[static_cast<size_t>(layer)];
  const int pairs = n * top_k_;
  int* plan = plan_.as<int>();
  RETURN_IF_CUDA_ERROR(kernels::LaunchBuildPlan(topk_ids_.as<int>(), pairs, experts_, plan_layout_,
                                                plan, active_.as<int>() + layer, stream_));
  const int grid = std::min(experts_, pairs);
  RETURN_IF_ERROR(RunExperts(w, plan, grid, /*in_div=*/top_k_, x_.as<bf16>()));
  RETURN_IF_CUDA_ERROR(
      kernels::LaunchAddRmsNorm({.h = h_.as<float>(),
                                 .n = n,
                                 .hidden = hidden_,
                                 .add0 = local_shared_ > 0 ? shared_out_.as<float>() : nullptr,
                                 .pairs = expert_out_.as<float>(),
                                 .pair_w = topk_w_.as<float>(),
                                 .k = top_k_,
                                 .out = x_.as<bf16>()},
                                stream_));
  return absl::OkStatus();
}

// World size > 1: this rank routes entries [first, first + own) to the experts' ranks. The
// exchange of per-expert counts runs on the device; one wait brings them and the routing to the
// host, which lays out the rows to send and the grouping of the rows received.
absl::Status CudaModel::RoutedDispatch(int layer, int n) {
  const LayerWeights& w = layers_[static_cast<size_t>(layer)];
  const int share = (n + world_ - 1) / world_;
  const int first = std::min(n, rank_ * share);
  const int own = std::min(n, first + share) - first;
  const size_t hd = static_cast<size_t>(hidden_);
  int* counts = counts_.as<int>();
  RETURN_IF_CUDA_ERROR(kernels::LaunchCountChoices(topk_ids_.as<int>(), first, own, top_k_,
                                                   experts_, counts, stream_));
  RETURN_IF_ERROR(comm_->AllToAll(counts, counts + experts_, local_experts_, DType::kInt32));
  int* host_ids = host_route_.as<int>();
  int* host_counts = host_ids + static_cast<size_t>(max_seqs_) * top_k_;
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(host_ids, topk_ids_.get(),
                                       static_cast<size_t>(n) * top_k_ * sizeof(int),
                                       cudaMemcpyDeviceToHost, stream_));
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(host_counts, counts, 2 * experts_ * sizeof(int),
                                       cudaMemcpyDeviceToHost, stream_));
  RETURN_IF_ERROR(comm_->Synchronize());

  // Send layout: by destination rank, then expert, then (entry, choice).
  const size_t send_cap = static_cast<size_t>(share_cap_) * top_k_;
  int* host_plan = host_plan_.as<int>();
  int* token_of = host_plan + plan_layout_.size();
  int* at = token_of + send_cap;
  std::vector<size_t> send_n(static_cast<size_t>(world_), 0);
  int sent = 0;
  for (int e = 0; e < experts_; ++e) {
    for (int t = first; t < first + own; ++t) {
      for (int k = 0; k < top_k_; ++k) {
        if (host_ids[static_cast<size_t>(t) * top_k_ + k] != e) continue;
        token_of[sent] = t;
        at[static_cast<size_t>(t - first) * top_k_ + k] = sent;
        ++sent;
        ++send_n[static_cast<size_t>(e / local_experts_)];
      }
    }
  }
  // Received rows: from each source rank, grouped by our expert. Grouping them by expert across
  // sources gives the plan the expert kernels run.
  const int* recv_counts = host_counts + experts_;  // [source][local expert]
  std::vector<size_t> recv_n(static_cast<size_t>(world_), 0);
  std::vector<int> recv_base(static_cast<size_t>(world_) + 1, 0);
  for (int p = 0; p < world_; ++p) {
    int rows = 0;
    for (int e = 0; e < local_experts_; ++e) rows += recv_counts[p * local_experts_ + e];
    recv_n[static_cast<size_t>(p)] = static_cast<size_t>(rows);
    recv_base[static_cast<size_t>(p) + 1] = recv_base[static_cast<size_t>(p)] + rows;
  }
  if (recv_base[static_cast<size_t>(world_)] > rows_cap_ || sent > static_cast<int>(send_cap)) {
    return absl::InternalError(absl::StrCat("expert dispatch of rank ", rank_, " sends ", sent,
                                            " rows and receives ", recv_base.back(),
                                            ", over its capacity of ", send_cap, " and ", rows_cap_,
                                            ": ranks disagree on the routing"));
  }
  int active = 0;
  int offset = 0;
  int* plan_active = host_plan + plan_layout_.active_at();
  int* plan_offsets = host_plan + plan_layout_.offsets_at();
  int* plan_rows = host_plan + plan_layout_.rows_at();
  for (int e = 0; e < local_experts_; ++e) {
    const int start = offset;
    for (int p = 0; p < world_; ++p) {
      int row = recv_base[static_cast<size_t>(p)];
      for (int f = 0; f < e; ++f) row += recv_counts[p * local_experts_ + f];
      for (int j = 0; j < recv_counts[p * local_experts_ + e]; ++j) plan_rows[offset++] = row + j;
    }
    if (offset == start) continue;
    plan_active[active] = e;
    plan_offsets[active] = start;
    ++active;
  }
  plan_offsets[active] = offset;
  host_plan[0] = active;
  touched_[static_cast<size_t>(layer)] = active;
  int* plan = plan_.as<int>();
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(plan, host_plan, plan_.bytes(), cudaMemcpyHostToDevice, stream_));

  std::vector<size_t> send_elems(send_n);
  std::vector<size_t> recv_elems(recv_n);
  for (size_t& v : send_elems) v *= hd;
  for (size_t& v : recv_elems) v *= hd;
  RETURN_IF_CUDA_ERROR(kernels::LaunchGatherRows(x_.as<bf16>(), plan + plan_layout_.size(), sent,
                                                 hidden_, send_rows_.as<bf16>(), stream_));
  RETURN_IF_ERROR(comm_->AllToAllV(send_rows_.get(), send_elems, recv_rows_.get(), recv_elems,
                                   DType::kBFloat16));
  RETURN_IF_ERROR(RunExperts(w, plan, active, /*in_div=*/1, recv_rows_.as<bf16>()));
  // Results go back the way the rows came, into the send layout.
  RETURN_IF_ERROR(comm_->AllToAllV(expert_out_.get(), recv_elems, send_out_.get(), send_elems,
                                   DType::kFloat32));
  RETURN_IF_CUDA_ERROR(kernels::LaunchCombine(
      send_out_.as<float>(), plan + plan_layout_.size() + send_cap, topk_w_.as<float>(), first, own,
      share, top_k_, hidden_, routed_own_.as<float>(), stream_));
  RETURN_IF_ERROR(comm_->AllGather(routed_own_.get(), routed_all_.get(),
                                   static_cast<size_t>(share) * hd, DType::kFloat32));
  RETURN_IF_CUDA_ERROR(
      kernels::LaunchAddRmsNorm({.h = h_.as<float>(),
                                 .n = n,
                                 .hidden = hidden_,
                                 .add0 = local_shared_ > 0 ? shared_out_.as<float>() : nullptr,
                                 .add1 = routed_all_.as<float>(),
                                 .out = x_.as<bf16>()},
                                stream_));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> CreateCudaModel(const ModelShape& shape,
                                                       GpuCollectives* collectives,
                                                       const CudaModelOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> model,
                   CudaModel::Create(shape, collectives, options));
  return std::unique_ptr<Model>(std::move(model));
}

absl::StatusOr<double> MeasureDeviceCopyBandwidth(int device) {
  constexpr int kWarmups = 2;
  constexpr int kCopies = 10;
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  RETURN_IF_CUDA_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  const size_t bytes = std::min(size_t{1} << 30, (free_bytes / 4) & ~((size_t{1} << 20) - 1));
  if (bytes < (size_t{64} << 20)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cuda device ", device, " has ", free_bytes >> 20,
                     " MiB free; measuring the copy bandwidth needs at least 256 MiB"));
  }
  ASSIGN_OR_RETURN(DeviceMemory src, DeviceMemory::Create(device, bytes));
  ASSIGN_OR_RETURN(DeviceMemory dst, DeviceMemory::Create(device, bytes));
  ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create(device));
  ASSIGN_OR_RETURN(CudaEvent start, CudaEvent::Create(device));
  ASSIGN_OR_RETURN(CudaEvent stop, CudaEvent::Create(device));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(src.get(), 0x5A, bytes, stream.get()));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(dst.get(), 0, bytes, stream.get()));
  std::vector<float> ms;
  for (int i = 0; i < kWarmups + kCopies; ++i) {
    RETURN_IF_CUDA_ERROR(cudaEventRecord(start.get(), stream.get()));
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, stream.get()));
    RETURN_IF_CUDA_ERROR(cudaEventRecord(stop.get(), stream.get()));
    RETURN_IF_CUDA_ERROR(cudaEventSynchronize(stop.get()));
    float elapsed = 0.0f;
    RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&elapsed, start.get(), stop.get()));
    if (i >= kWarmups) ms.push_back(elapsed);
  }
  // The copy must be right: sample the start, the middle and the end.
  std::vector<unsigned char> sample(4096);
  for (size_t offset : {size_t{0}, bytes / 2, bytes - sample.size()}) {
    RETURN_IF_CUDA_ERROR(cudaMemcpy(sample.data(), dst.as<unsigned char>() + offset, sample.size(),
                                    cudaMemcpyDeviceToHost));
    for (unsigned char c : sample) {
      if (c != 0x5A) {
        return absl::InternalError(absl::StrCat("device-to-device copy on cuda device ", device,
                                                " gave a wrong byte near offset ", offset));
      }
    }
  }
  std::sort(ms.begin(), ms.end());
  const double median_s = ms[ms.size() / 2] / 1e3;
  return 2.0 * static_cast<double>(bytes) / median_s / 1e9;
}

}  // namespace fleet::native
