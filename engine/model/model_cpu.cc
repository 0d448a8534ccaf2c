// The CPU model: model.h's math in float32, one rank's shard of the weights, tensor parallelism
// through AllReduceSum and expert parallelism through AllToAll/AllToAllV/AllGather.
//
// Where the math leaves an order open, this file fixes it (the GPU model may differ within
// rounding): matrix products accumulate over the input dimension in order; a sequence's routed
// output is the sum over its experts in selection order (highest probability first) of
// weight * Expert(m), starting from zero; the layer adds (shared + routed) to h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/model.h"
#include "engine/model/weights.h"

namespace fleet::native {
namespace {

constexpr float kRmsEps = 1e-6f;

// y[r][0..out) = x[r][0..in) * w, for w [in][out] row-major and `rows` rows of x (row stride
// in). Each row of w is read once for all rows of x, sequentially; y accumulates over k in
// order, four rows of w per pass over y.
void MatMul(const float* x, int rows, int in, const float* w, int out, float* y) {
  std::fill(y, y + static_cast<size_t>(rows) * out, 0.0f);
  int k = 0;
  for (; k + 4 <= in; k += 4) {
    const float* __restrict w0 = w + static_cast<size_t>(k) * out;
    const float* __restrict w1 = w0 + out;
    const float* __restrict w2 = w1 + out;
    const float* __restrict w3 = w2 + out;
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + static_cast<size_t>(r) * in + k;
      const float x0 = xr[0], x1 = xr[1], x2 = xr[2], x3 = xr[3];
      float* __restrict yr = y + static_cast<size_t>(r) * out;
      for (int j = 0; j < out; ++j) {
        yr[j] = (((yr[j] + x0 * w0[j]) + x1 * w1[j]) + x2 * w2[j]) + x3 * w3[j];
      }
    }
  }
  for (; k < in; ++k) {
    const float* __restrict wk = w + static_cast<size_t>(k) * out;
    for (int r = 0; r < rows; ++r) {
      const float xv = x[static_cast<size_t>(r) * in + k];
      float* __restrict yr = y + static_cast<size_t>(r) * out;
      for (int j = 0; j < out; ++j) yr[j] += xv * wk[j];
    }
  }
}

// y = x / sqrt(mean(x^2) + eps), row by row (no weight).
void RmsNorm(const float* x, int rows, int n, float* y) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * n;
    float* yr = y + static_cast<size_t>(r) * n;
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) sum += xr[j] * xr[j];
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(n) + kRmsEps);
    for (int j = 0; j < n; ++j) yr[j] = xr[j] * inv;
  }
}

float Silu(float x) { return x / (1.0f + std::exp(-x)); }

// gu holds [rows][2 * width]: gate columns then up columns; act = silu(gate) * up.
void SwiGlu(const float* gu, int rows, int width, float* act) {
  for (int r = 0; r < rows; ++r) {
    const float* g = gu + static_cast<size_t>(r) * 2 * width;
    const float* u = g + width;
    float* a = act + static_cast<size_t>(r) * width;
    for (int j = 0; j < width; ++j) a[j] = Silu(g[j]) * u[j];
  }
}

int32_t FloatBits(float f) {
  int32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}
float BitsFloat(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// One layer's shard on this rank, every matrix [in][out] row-major.
struct LayerWeights {
  std::vector<float> wqkv;            // [hidden][3 * local_attn]: q, k, v columns of our heads
  std::vector<float> wo;              // [local_attn][hidden]: Wo rows of our heads
  std::vector<float> router;          // [hidden][experts], replicated
  std::vector<float> shared_gate_up;  // [hidden][2 * local_shared]: gate, then up columns
  std::vector<float> shared_down;     // [local_shared][hidden]
  std::vector<float> expert_gate_up;  // [local_experts][hidden][2 * expert_ffn]
  std::vector<float> expert_down;     // [local_experts][expert_ffn][hidden]
};

class CpuModel final : public Model {
 public:
  CpuModel(const ModelShape& shape, Collectives* collectives)
      : shape_(shape),
        comm_(collectives),
        world_(collectives->size()),
        rank_(collectives->rank()),
        hidden_(shape.hidden_size),
        head_dim_(shape.head_dim()),
        local_heads_(shape.num_heads / world_),
        local_attn_(local_heads_ * head_dim_),
        local_experts_(shape.num_experts / world_),
        ffn_(shape.expert_ffn_size),
        local_shared_(shape.shared_experts * shape.expert_ffn_size / world_),
        local_vocab_(shape.vocab_size / world_) {}

  // Generates this rank's shard and allocates the KV cache.
  void Init() {
    const uint64_t seed = shape_.seed;
    const int attn = shape_.num_heads * head_dim_;
    const int shared = shape_.shared_experts * ffn_;
    const int experts = shape_.num_experts;
    layers_.resize(static_cast<size_t>(shape_.num_layers));
    for (int l = 0; l < shape_.num_layers; ++l) {
      LayerWeights& w = layers_[static_cast<size_t>(l)];
      // Column slices: our heads of Wq/Wk/Wv, our part of the shared gate/up.
      w.wqkv.resize(static_cast<size_t>(hidden_) * 3 * local_attn_);
      const LayerTensorKind qkv[3] = {kWq, kWk, kWv};
      for (int i = 0; i < hidden_; ++i) {
        for (int t = 0; t < 3; ++t) {
          for (int c = 0; c < local_attn_; ++c) {
            const uint64_t col = static_cast<uint64_t>(rank_) * local_attn_ + c;
            w.wqkv[(static_cast<size_t>(i) * 3 + t) * local_attn_ + c] = WeightValue(
                seed, LayerTensor(l, qkv[t]), static_cast<uint64_t>(i) * attn + col, hidden_);
          }
        }
      }
      // Row slice: Wo rows of our heads.
      w.wo.resize(static_cast<size_t>(local_attn_) * hidden_);
      for (int i = 0; i < local_attn_; ++i) {
        const uint64_t row = static_cast<uint64_t>(rank_) * local_attn_ + i;
        for (int j = 0; j < hidden_; ++j) {
          w.wo[static_cast<size_t>(i) * hidden_ + j] =
              WeightValue(seed, LayerTensor(l, kWo), row * hidden_ + j, attn);
        }
      }
      w.router.resize(static_cast<size_t>(hidden_) * experts);
      for (size_t i = 0; i < w.router.size(); ++i) {
        w.router[i] = WeightValue(seed, LayerTensor(l, kRouter), i, hidden_);
      }
      w.shared_gate_up.resize(static_cast<size_t>(hidden_) * 2 * local_shared_);
      for (int i = 0; i < hidden_; ++i) {
        for (int c = 0; c < local_shared_; ++c) {
          const uint64_t index =
              static_cast<uint64_t>(i) * shared + static_cast<uint64_t>(rank_) * local_shared_ + c;
          float* row = &w.shared_gate_up[static_cast<size_t>(i) * 2 * local_shared_];
          row[c] = WeightValue(seed, LayerTensor(l, kSharedGate), index, hidden_);
          row[local_shared_ + c] = WeightValue(seed, LayerTensor(l, kSharedUp), index, hidden_);
        }
      }
      w.shared_down.resize(static_cast<size_t>(local_shared_) * hidden_);
      for (int i = 0; i < local_shared_; ++i) {
        const uint64_t row = static_cast<uint64_t>(rank_) * local_shared_ + i;
        for (int j = 0; j < hidden_; ++j) {
          w.shared_down[static_cast<size_t>(i) * hidden_ + j] =
              WeightValue(seed, LayerTensor(l, kSharedDown), row * hidden_ + j, shared);
        }
      }
      // Our block of experts, whole.
      w.expert_gate_up.resize(static_cast<size_t>(local_experts_) * hidden_ * 2 * ffn_);
      w.expert_down.resize(static_cast<size_t>(local_experts_) * ffn_ * hidden_);
      for (int e = 0; e < local_experts_; ++e) {
        const int expert = rank_ * local_experts_ + e;
        const uint64_t gate = ExpertTensor(l, expert, experts, kExpertGate);
        const uint64_t up = ExpertTensor(l, expert, experts, kExpertUp);
        const uint64_t down = ExpertTensor(l, expert, experts, kExpertDown);
        float* gu = &w.expert_gate_up[static_cast<size_t>(e) * hidden_ * 2 * ffn_];
        for (int i = 0; i < hidden_; ++i) {
          for (int c = 0; c < ffn_; ++c) {
            const uint64_t index = static_cast<uint64_t>(i) * ffn_ + c;
            gu[static_cast<size_t>(i) * 2 * ffn_ + c] = WeightValue(seed, gate, index, hidden_);
            gu[static_cast<size_t>(i) * 2 * ffn_ + ffn_ + c] =
                WeightValue(seed, up, index, hidden_);
          }
        }
        float* d = &w.expert_down[static_cast<size_t>(e) * ffn_ * hidden_];
        for (size_t i = 0; i < static_cast<size_t>(ffn_) * hidden_; ++i) {
          d[i] = WeightValue(seed, down, i, ffn_);
        }
      }
    }
    // Our vocabulary slice of the LM head.
    lm_head_.resize(static_cast<size_t>(hidden_) * local_vocab_);
    for (int i = 0; i < hidden_; ++i) {
      for (int c = 0; c < local_vocab_; ++c) {
        const uint64_t index = static_cast<uint64_t>(i) * shape_.vocab_size +
                               static_cast<uint64_t>(rank_) * local_vocab_ + c;
        lm_head_[static_cast<size_t>(i) * local_vocab_ + c] =
            WeightValue(seed, kLmHeadTensor, index, hidden_);
      }
    }
    const size_t cache = static_cast<size_t>(shape_.max_num_seqs) * shape_.max_seq_len *
                         static_cast<size_t>(local_attn_);
    k_cache_.assign(static_cast<size_t>(shape_.num_layers), std::vector<float>(cache));
    v_cache_.assign(static_cast<size_t>(shape_.num_layers), std::vector<float>(cache));
    filled_.assign(static_cast<size_t>(shape_.max_num_seqs), 0);

    uint64_t dense = 0;
    for (const LayerWeights& w : layers_) {
      dense += w.wqkv.size() + w.wo.size() + w.router.size() + w.shared_gate_up.size() +
               w.shared_down.size();
    }
    dense += lm_head_.size();
    dense_bytes_ = dense * sizeof(float);
    expert_bytes_ = Sizes(shape_).params_per_expert * sizeof(float);
  }

  absl::StatusOr<StepOutput> Step(const std::vector<StepEntry>& entries,
                                  bool want_logits) override {
    RETURN_IF_ERROR(CheckEntries(entries));
    StepOutput out;
    if (entries.empty()) return out;
    const int batch = static_cast<int>(entries.size());
    const size_t bh = static_cast<size_t>(batch) * hidden_;

    h_.resize(bh);
    for (int b = 0; b < batch; ++b) {
      const uint64_t base = static_cast<uint64_t>(entries[static_cast<size_t>(b)].token) * hidden_;
      for (int j = 0; j < hidden_; ++j) {
        h_[static_cast<size_t>(b) * hidden_ + j] =
            WeightValue(shape_.seed, kEmbeddingTensor, base + j, /*in_features=*/1);
      }
    }
    out.weight_bytes_read = dense_bytes_;
    norm_.resize(bh);
    partial_.resize(bh);
    shared_.resize(bh);
    for (int l = 0; l < shape_.num_layers; ++l) {
      const LayerWeights& w = layers_[static_cast<size_t>(l)];
      // Attention over our heads; Wo's row slice gives a partial sum of the output.
      RmsNorm(h_.data(), batch, hidden_, norm_.data());
      qkv_.resize(static_cast<size_t>(batch) * 3 * local_attn_);
      MatMul(norm_.data(), batch, hidden_, w.wqkv.data(), 3 * local_attn_, qkv_.data());
      Attend(l, entries);
      MatMul(attn_.data(), batch, local_attn_, w.wo.data(), hidden_, partial_.data());
      RETURN_IF_ERROR(comm_->AllReduceSum(partial_.data(), bh, DType::kFloat32));
      for (size_t i = 0; i < bh; ++i) h_[i] += partial_[i];

      // Shared FFN: a column slice of gate/up and the matching rows of down.
      RmsNorm(h_.data(), batch, hidden_, norm_.data());
      std::fill(shared_.begin(), shared_.end(), 0.0f);
      if (local_shared_ > 0) {
        gate_up_.resize(static_cast<size_t>(batch) * 2 * local_shared_);
        act_.resize(static_cast<size_t>(batch) * local_shared_);
        MatMul(norm_.data(), batch, hidden_, w.shared_gate_up.data(), 2 * local_shared_,
               gate_up_.data());
        SwiGlu(gate_up_.data(), batch, local_shared_, act_.data());
        MatMul(act_.data(), batch, local_shared_, w.shared_down.data(), hidden_, shared_.data());
        RETURN_IF_ERROR(comm_->AllReduceSum(shared_.data(), bh, DType::kFloat32));
      }

      ASSIGN_OR_RETURN(int touched, RoutedExperts(w, batch));
      out.weight_bytes_read += static_cast<uint64_t>(touched) * expert_bytes_;
      for (size_t i = 0; i < bh; ++i) h_[i] += shared_[i] + routed_all_[i];
    }
    for (const StepEntry& e : entries) filled_[static_cast<size_t>(e.slot)] = e.position + 1;

    // Vocabulary-parallel LM head and argmax.
    RmsNorm(h_.data(), batch, hidden_, norm_.data());
    logits_.resize(static_cast<size_t>(batch) * local_vocab_);
    MatMul(norm_.data(), batch, hidden_, lm_head_.data(), local_vocab_, logits_.data());
    std::vector<int32_t> best(static_cast<size_t>(batch) * 2);
    for (int b = 0; b < batch; ++b) {
      const float* row = &logits_[static_cast<size_t>(b) * local_vocab_];
      int arg = 0;
      for (int j = 1; j < local_vocab_; ++j) {
        if (row[j] > row[arg]) arg = j;
      }
      best[static_cast<size_t>(b) * 2] = FloatBits(row[arg]);
      best[static_cast<size_t>(b) * 2 + 1] = rank_ * local_vocab_ + arg;
    }
    std::vector<int32_t> all_best(best.size() * static_cast<size_t>(world_));
    RETURN_IF_ERROR(comm_->AllGather(best.data(), all_best.data(), best.size(), DType::kInt32));
    out.next_tokens.resize(static_cast<size_t>(batch));
    for (int b = 0; b < batch; ++b) {
      // Ranks hold ascending vocabulary slices: a strict > keeps the lower id on ties.
      float max = 0.0f;
      int token = -1;
      for (int r = 0; r < world_; ++r) {
        const size_t at = (static_cast<size_t>(r) * batch + b) * 2;
        const float value = BitsFloat(all_best[at]);
        if (token < 0 || value > max) {
          max = value;
          token = all_best[at + 1];
        }
      }
      out.next_tokens[static_cast<size_t>(b)] = token;
    }
    if (want_logits) {
      std::vector<float> gathered(logits_.size() * static_cast<size_t>(world_));
      RETURN_IF_ERROR(
          comm_->AllGather(logits_.data(), gathered.data(), logits_.size(), DType::kFloat32));
      out.logits.resize(static_cast<size_t>(batch) * shape_.vocab_size);
      for (int r = 0; r < world_; ++r) {
        for (int b = 0; b < batch; ++b) {
          std::memcpy(&out.logits[static_cast<size_t>(b) * shape_.vocab_size +
                                  static_cast<size_t>(r) * local_vocab_],
                      &gathered[(static_cast<size_t>(r) * batch + b) * local_vocab_],
                      sizeof(float) * static_cast<size_t>(local_vocab_));
        }
      }
    }
    return out;
  }

  const ModelShape& shape() const override { return shape_; }

 private:
  absl::Status CheckEntries(const std::vector<StepEntry>& entries) const {
    if (entries.size() > static_cast<size_t>(shape_.max_num_seqs)) {
      return absl::InvalidArgumentError(absl::StrCat("a step carries at most max_num_seqs (",
                                                     shape_.max_num_seqs, ") sequences, got ",
                                                     entries.size()));
    }
    std::vector<bool> seen(static_cast<size_t>(shape_.max_num_seqs));
    for (size_t i = 0; i < entries.size(); ++i) {
      const StepEntry& e = entries[i];
      if (e.slot < 0 || e.slot >= shape_.max_num_seqs) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": slot ", e.slot,
                                                       " is outside 0..max_num_seqs-1 (",
                                                       shape_.max_num_seqs - 1, ")"));
      }
      if (seen[static_cast<size_t>(e.slot)]) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry ", i, ": slot ", e.slot, " appears twice in the step"));
      }
      seen[static_cast<size_t>(e.slot)] = true;
      if (e.token < 0 || e.token >= shape_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": token ", e.token,
                                                       " is outside 0..", shape_.vocab_size - 1));
      }
      if (e.position < 0 || e.position >= shape_.max_seq_len) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", i, ": position ", e.position,
                                                       " is outside 0..max_seq_len-1 (",
                                                       shape_.max_seq_len - 1, ")"));
      }
      const int filled = filled_[static_cast<size_t>(e.slot)];
      if (e.position > filled) {
        return absl::InvalidArgumentError(absl::StrCat(
            "entry ", i, ": slot ", e.slot, " has positions 0..", filled - 1,
            " filled, so position ", e.position, " would attend over empty cache; feed position ",
            filled, " next (or 0 to start a new sequence)"));
      }
    }
    return absl::OkStatus();
  }

  // Stores k and v of every entry at its position in layer l's cache, and attends with our heads
  // over positions 0..position: attn_ = softmax(q.k / sqrt(head_dim)) * v.
  void Attend(int l, const std::vector<StepEntry>& entries) {
    const int batch = static_cast<int>(entries.size());
    attn_.resize(static_cast<size_t>(batch) * local_attn_);
    std::vector<float>& kc = k_cache_[static_cast<size_t>(l)];
    std::vector<float>& vc = v_cache_[static_cast<size_t>(l)];
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
    scores_.resize(static_cast<size_t>(shape_.max_seq_len));
    for (int b = 0; b < batch; ++b) {
      const StepEntry& e = entries[static_cast<size_t>(b)];
      const float* q = &qkv_[static_cast<size_t>(b) * 3 * local_attn_];
      const size_t slot_base =
          static_cast<size_t>(e.slot) * shape_.max_seq_len * static_cast<size_t>(local_attn_);
      const size_t at = slot_base + static_cast<size_t>(e.position) * local_attn_;
      std::memcpy(&kc[at], q + local_attn_, sizeof(float) * static_cast<size_t>(local_attn_));
      std::memcpy(&vc[at], q + 2 * local_attn_, sizeof(float) * static_cast<size_t>(local_attn_));
      for (int hd = 0; hd < local_heads_; ++hd) {
        const int off = hd * head_dim_;
        float max = 0.0f;
        for (int t = 0; t <= e.position; ++t) {
          const float* k = &kc[slot_base + static_cast<size_t>(t) * local_attn_ + off];
          float dot = 0.0f;
          for (int d = 0; d < head_dim_; ++d) dot += q[off + d] * k[d];
          const float s = dot * scale;
          scores_[static_cast<size_t>(t)] = s;
          if (t == 0 || s > max) max = s;
        }
        float sum = 0.0f;
        for (int t = 0; t <= e.position; ++t) {
          float& s = scores_[static_cast<size_t>(t)];
          s = std::exp(s - max);
          sum += s;
        }
        float* o = &attn_[static_cast<size_t>(b) * local_attn_ + off];
        std::fill(o, o + head_dim_, 0.0f);
        for (int t = 0; t <= e.position; ++t) {
          const float p = scores_[static_cast<size_t>(t)] / sum;
          const float* v = &vc[slot_base + static_cast<size_t>(t) * local_attn_ + off];
          for (int d = 0; d < head_dim_; ++d) o[d] += p * v[d];
        }
      }
    }
  }

  // The routed experts of every entry, from norm_ (m): this rank routes its block of entries
  // (entries [rank * per_rank, (rank + 1) * per_rank)), sends each (entry, expert) row to the
  // expert's rank, runs the rows its own experts received, returns them, weights and sums them,
  // and gathers every rank's block into routed_all_ ([entries][hidden]). Returns how many of
  // this rank's experts received a row.
  absl::StatusOr<int> RoutedExperts(const LayerWeights& w, int batch) {
    const int k_top = shape_.experts_per_token;
    const int experts = shape_.num_experts;
    const int per_rank = (batch + world_ - 1) / world_;
    const int first = std::min(batch, rank_ * per_rank);
    const int own = std::min(batch, first + per_rank) - first;

    // Router: softmax over all experts, top k (ties: lower index), weights renormalised.
    router_logits_.resize(static_cast<size_t>(std::max(own, 1)) * experts);
    MatMul(norm_.data() + static_cast<size_t>(first) * hidden_, own, hidden_, w.router.data(),
           experts, router_logits_.data());
    chosen_.resize(static_cast<size_t>(own) * k_top);
    chosen_weight_.resize(static_cast<size_t>(own) * k_top);
    std::vector<float> p(static_cast<size_t>(experts));
    std::vector<bool> taken(static_cast<size_t>(experts));
    for (int i = 0; i < own; ++i) {
      const float* z = &router_logits_[static_cast<size_t>(i) * experts];
      float max = z[0];
      for (int e = 1; e < experts; ++e) max = std::max(max, z[e]);
      float sum = 0.0f;
      for (int e = 0; e < experts; ++e) {
        p[static_cast<size_t>(e)] = std::exp(z[e] - max);
        sum += p[static_cast<size_t>(e)];
      }
      for (int e = 0; e < experts; ++e) p[static_cast<size_t>(e)] /= sum;
      std::fill(taken.begin(), taken.end(), false);
      float chosen_sum = 0.0f;
      for (int k = 0; k < k_top; ++k) {
        int arg = -1;
        for (int e = 0; e < experts; ++e) {
          if (!taken[static_cast<size_t>(e)] &&
              (arg < 0 || p[static_cast<size_t>(e)] > p[static_cast<size_t>(arg)])) {
            arg = e;
          }
        }
        taken[static_cast<size_t>(arg)] = true;
        chosen_[static_cast<size_t>(i) * k_top + k] = arg;
        chosen_sum += p[static_cast<size_t>(arg)];
      }
      for (int k = 0; k < k_top; ++k) {
        const size_t at = static_cast<size_t>(i) * k_top + k;
        chosen_weight_[at] = p[static_cast<size_t>(chosen_[at])] / chosen_sum;
      }
    }

    // Dispatch: rows grouped by destination rank, (entry, k) ascending within a group.
    std::vector<int32_t> send_count(static_cast<size_t>(world_), 0);
    for (int c : chosen_) ++send_count[static_cast<size_t>(c / local_experts_)];
    std::vector<size_t> send_offset(static_cast<size_t>(world_), 0);
    for (int r = 1; r < world_; ++r) {
      send_offset[static_cast<size_t>(r)] =
          send_offset[static_cast<size_t>(r) - 1] +
          static_cast<size_t>(send_count[static_cast<size_t>(r) - 1]);
    }
    const size_t sent = chosen_.size();
    send_rows_.resize(sent * hidden_);
    std::vector<int32_t> send_expert(sent);
    std::vector<size_t> sent_at(sent);  // (entry, k) -> row index in the send buffer
    {
      std::vector<size_t> next = send_offset;
      for (size_t c = 0; c < sent; ++c) {
        const int dest = chosen_[c] / local_experts_;
        const size_t row = next[static_cast<size_t>(dest)]++;
        sent_at[c] = row;
        send_expert[row] = chosen_[c] % local_experts_;
        const size_t entry = static_cast<size_t>(first) + c / static_cast<size_t>(k_top);
        std::memcpy(&send_rows_[row * hidden_], &norm_[entry * hidden_],
                    sizeof(float) * static_cast<size_t>(hidden_));
      }
    }
    std::vector<int32_t> recv_count(static_cast<size_t>(world_));
    RETURN_IF_ERROR(comm_->AllToAll(send_count.data(), recv_count.data(), 1, DType::kInt32));
    std::vector<size_t> send_n(send_count.begin(), send_count.end());
    std::vector<size_t> recv_n(recv_count.begin(), recv_count.end());
    size_t received = 0;
    for (size_t n : recv_n) received += n;
    std::vector<int32_t> recv_expert(received);
    RETURN_IF_ERROR(
        comm_->AllToAllV(send_expert.data(), send_n, recv_expert.data(), recv_n, DType::kInt32));
    std::vector<size_t> send_elems(send_n), recv_elems(recv_n);
    for (size_t& n : send_elems) n *= static_cast<size_t>(hidden_);
    for (size_t& n : recv_elems) n *= static_cast<size_t>(hidden_);
    recv_rows_.resize(received * hidden_);
    RETURN_IF_ERROR(comm_->AllToAllV(send_rows_.data(), send_elems, recv_rows_.data(), recv_elems,
                                     DType::kFloat32));

    // Our experts, each over the rows it received, batched.
    expert_out_.resize(received * hidden_);
    int touched = 0;
    std::vector<size_t> rows;
    for (int e = 0; e < local_experts_; ++e) {
      rows.clear();
      for (size_t r = 0; r < received; ++r) {
        if (recv_expert[r] == e) rows.push_back(r);
      }
      if (rows.empty()) continue;
      ++touched;
      const int n = static_cast<int>(rows.size());
      x_.resize(rows.size() * hidden_);
      for (size_t i = 0; i < rows.size(); ++i) {
        std::memcpy(&x_[i * hidden_], &recv_rows_[rows[i] * hidden_],
                    sizeof(float) * static_cast<size_t>(hidden_));
      }
      gate_up_.resize(rows.size() * 2 * ffn_);
      act_.resize(rows.size() * ffn_);
      y_.resize(rows.size() * hidden_);
      MatMul(x_.data(), n, hidden_, &w.expert_gate_up[static_cast<size_t>(e) * hidden_ * 2 * ffn_],
             2 * ffn_, gate_up_.data());
      SwiGlu(gate_up_.data(), n, ffn_, act_.data());
      MatMul(act_.data(), n, ffn_, &w.expert_down[static_cast<size_t>(e) * ffn_ * hidden_], hidden_,
             y_.data());
      for (size_t i = 0; i < rows.size(); ++i) {
        std::memcpy(&expert_out_[rows[i] * hidden_], &y_[i * hidden_],
                    sizeof(float) * static_cast<size_t>(hidden_));
      }
    }

    // Results go back the way the rows came, into the send layout.
    RETURN_IF_ERROR(comm_->AllToAllV(expert_out_.data(), recv_elems, send_rows_.data(), send_elems,
                                     DType::kFloat32));
    routed_own_.assign(static_cast<size_t>(per_rank) * hidden_, 0.0f);
    for (int i = 0; i < own; ++i) {
      float* dst = &routed_own_[static_cast<size_t>(i) * hidden_];
      for (int k = 0; k < k_top; ++k) {
        const size_t c = static_cast<size_t>(i) * k_top + k;
        const float weight = chosen_weight_[c];
        const float* y = &send_rows_[sent_at[c] * hidden_];
        for (int j = 0; j < hidden_; ++j) dst[j] += weight * y[j];
      }
    }
    // Blocks of per_rank rows in rank order: row i of the result is entry i.
    routed_all_.resize(static_cast<size_t>(per_rank) * world_ * hidden_);
    RETURN_IF_ERROR(comm_->AllGather(routed_own_.data(), routed_all_.data(), routed_own_.size(),
                                     DType::kFloat32));
    return touched;
  }

  const ModelShape shape_;
  Collectives* const comm_;
  const int world_;
  const int rank_;
  const int hidden_;
  const int head_dim_;
  const int local_heads_;
  const int local_attn_;
  const int local_experts_;
  const int ffn_;
  const int local_shared_;
  const int local_vocab_;

  std::vector<LayerWeights> layers_;
  std::vector<float> lm_head_;               // [hidden][local_vocab]
  std::vector<std::vector<float>> k_cache_;  // per layer [slot][position][local_attn]
  std::vector<std::vector<float>> v_cache_;  // per layer [slot][position][local_attn]
  std::vector<int> filled_;                  // per slot: positions 0..filled-1 hold k and v
  uint64_t dense_bytes_ = 0;
  uint64_t expert_bytes_ = 0;

  // Scratch reused across steps (sizes follow the step's entries).
  std::vector<float> h_, norm_, qkv_, attn_, partial_, shared_, gate_up_, act_, logits_;
  std::vector<float> router_logits_, chosen_weight_, send_rows_, recv_rows_, expert_out_;
  std::vector<float> x_, y_, routed_own_, routed_all_, scores_;
  std::vector<int> chosen_;
};

}  // namespace

absl::Status ValidateShape(const ModelShape& shape, int world_size) {
  auto invalid = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("model shape: ", parts...));
  };
  if (world_size < 1) return invalid("world size must be at least 1, got ", world_size);
  const struct {
    const char* name;
    int value;
  } positive[] = {{"hidden_size", shape.hidden_size},
                  {"num_layers", shape.num_layers},
                  {"num_heads", shape.num_heads},
                  {"num_experts", shape.num_experts},
                  {"experts_per_token", shape.experts_per_token},
                  {"expert_ffn_size", shape.expert_ffn_size},
                  {"vocab_size", shape.vocab_size},
                  {"max_seq_len", shape.max_seq_len},
                  {"max_num_seqs", shape.max_num_seqs}};
  for (const auto& field : positive) {
    if (field.value < 1) return invalid(field.name, " must be at least 1, got ", field.value);
  }
  if (shape.shared_experts < 0) {
    return invalid("shared_experts must be 0 or more, got ", shape.shared_experts);
  }
  if (shape.hidden_size % shape.num_heads != 0) {
    return invalid("hidden_size (", shape.hidden_size, ") must be a multiple of num_heads (",
                   shape.num_heads, ") so every head has hidden_size / num_heads dimensions");
  }
  if (shape.experts_per_token > shape.num_experts) {
    return invalid("experts_per_token (", shape.experts_per_token, ") cannot exceed num_experts (",
                   shape.num_experts, ")");
  }
  const struct {
    const char* name;
    int64_t value;
  } split[] = {
      {"num_heads", shape.num_heads},
      {"num_experts", shape.num_experts},
      {"shared FFN width (shared_experts * expert_ffn_size)",
       int64_t{shape.shared_experts} * shape.expert_ffn_size},
      {"vocab_size", shape.vocab_size},
  };
  for (const auto& field : split) {
    if (field.value % world_size != 0) {
      return invalid(field.name, " (", field.value, ") must be a multiple of the world size (",
                     world_size, ") to split evenly over the ranks; change it or the group size");
    }
  }
  return absl::OkStatus();
}

ShapeSizes Sizes(const ModelShape& shape) {
  const uint64_t hidden = static_cast<uint64_t>(shape.hidden_size);
  const uint64_t attn = static_cast<uint64_t>(shape.num_heads) * shape.head_dim();
  const uint64_t experts = static_cast<uint64_t>(shape.num_experts);
  const uint64_t shared = static_cast<uint64_t>(shape.shared_experts) * shape.expert_ffn_size;
  const uint64_t vocab = static_cast<uint64_t>(shape.vocab_size);
  const uint64_t layers = static_cast<uint64_t>(shape.num_layers);
  ShapeSizes sizes;
  const uint64_t per_layer = 4 * hidden * attn + hidden * experts + 3 * hidden * shared;
  sizes.dense_params = layers * per_layer + hidden * vocab;
  sizes.params_per_expert = 3 * hidden * static_cast<uint64_t>(shape.expert_ffn_size);
  sizes.total_params =
      sizes.dense_params + layers * experts * sizes.params_per_expert + vocab * hidden;
  return sizes;
}

absl::StatusOr<std::unique_ptr<Model>> CreateCpuModel(const ModelShape& shape,
                                                      Collectives* collectives) {
  if (collectives == nullptr) {
    return absl::InvalidArgumentError("CreateCpuModel needs a Collectives");
  }
  RETURN_IF_ERROR(ValidateShape(shape, collectives->size()));
  auto model = std::make_unique<CpuModel>(shape, collectives);
  try {
    model->Init();
  } catch (const std::bad_alloc&) {
    const ShapeSizes sizes = Sizes(shape);
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough host memory for rank ", collectives->rank(), "'s shard of a model of ",
        sizes.total_params, " parameters and its KV cache; use more ranks or a smaller shape"));
  }
  return model;
}

}  // namespace fleet::native
