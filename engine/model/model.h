// fleet-engine's model: a stack of MoE transformer-like layers with synthetic, seeded weights
// (weights.h). It is not a language model: it exists to run the same computation and
// communication pattern as a tensor/expert-parallel MoE decode step, so a cluster's step time
// can be measured and a serving group can be exercised end to end.
//
// One layer, for the hidden state h of each sequence in the step (RMSNorm has no weight,
// eps 1e-6; no rotary embedding):
//   a = RMSNorm(h)
//   q, k, v = a*Wq, a*Wk, a*Wv            heads split across ranks (column-parallel)
//   k, v are stored in the sequence's KV cache slot at its position; each head attends over
//   positions 0..position with softmax(q.k / sqrt(head_dim))
//   h += AllReduce(attn * Wo)               Wo rows of the rank's heads (row-parallel)
//   m = RMSNorm(h)
//   shared = AllReduce((silu(m*Wsg) * (m*Wsu)) * Wsd)   shared FFN split across ranks
//   router: p = softmax(m*Wr) over all experts; the top experts_per_token (ties: lower index),
//   weights renormalised to sum to 1
//   routed = sum_k p_k * Expert_k(m), Expert(x) = (silu(x*Wg) * (x*Wu)) * Wd; experts live on
//   ranks in contiguous blocks (expert e on rank e / (experts / world)); each rank dispatches
//   its share of the step's sequences to the experts' ranks with an all-to-all, the experts'
//   results come back with a second all-to-all, and an all-gather gives every rank every
//   sequence's result
//   h += shared + routed
// Then logits = RMSNorm(h) * LmHead (vocabulary split across ranks) and the next token is the
// argmax over the whole vocabulary (ties: lower id). The first layer's h is the embedding row of
// the input token.
//
// Example:
//   ASSIGN_OR_RETURN(auto model, CreateCpuModel(shape, &collectives));
//   ASSIGN_OR_RETURN(StepOutput out, model->Step({{.slot = 0, .token = 65, .position = 0}}));
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/collectives/collectives.h"

namespace fleet::native {

struct ModelShape {
  int hidden_size = 256;
  int num_layers = 2;
  int num_heads = 4;  // head_dim = hidden_size / num_heads
  int num_experts = 8;
  int experts_per_token = 2;
  int expert_ffn_size = 128;
  int shared_experts = 1;  // shared FFN width = shared_experts * expert_ffn_size
  int vocab_size = 256;
  int max_seq_len = 512;  // KV cache positions per sequence slot
  int max_num_seqs = 8;   // KV cache slots; the most sequences one step may carry
  uint64_t seed = 1;

  int head_dim() const { return hidden_size / num_heads; }
};

// InvalidArgument naming the field and the fix when `shape` cannot be split over `world_size`
// ranks (heads, experts, shared FFN width and vocabulary must divide evenly) or is degenerate.
absl::Status ValidateShape(const ModelShape& shape, int world_size);

// Parameter counts of the whole model (all ranks); a step's weight bytes follow from them and
// the experts it touched (StepOutput::weight_bytes_read).
struct ShapeSizes {
  uint64_t dense_params = 0;       // attention, router, shared FFN, LM head (all layers)
  uint64_t params_per_expert = 0;  // one routed expert of one layer
  uint64_t total_params = 0;       // everything, embedding included
};
ShapeSizes Sizes(const ModelShape& shape);

// One sequence's entry in a step: the token fed in and where it goes in the sequence's cache.
struct StepEntry {
  int slot = 0;      // KV cache slot, 0 <= slot < max_num_seqs; distinct within a step
  int token = 0;     // 0 <= token < vocab_size
  int position = 0;  // 0 <= position < max_seq_len; earlier positions of the slot were filled
};

struct StepOutput {
  std::vector<int> next_tokens;  // one per entry, in entry order
  // entries * vocab_size logits, entry-major, filled only when the step asked for them (the
  // reference checks).
  std::vector<float> logits;
  // Weight bytes this rank read in the step: its dense shard plus every distinct local expert
  // that received a token, at the model's storage precision.
  uint64_t weight_bytes_read = 0;
};

class Model {
 public:
  virtual ~Model() = default;

  // Runs one decode step. Every rank of the group calls it with the same entries, in the same
  // order. InvalidArgument for an entry out of range; a collective's error otherwise (the group
  // is then broken and the caller should exit).
  virtual absl::StatusOr<StepOutput> Step(const std::vector<StepEntry>& entries,
                                          bool want_logits) = 0;

  virtual const ModelShape& shape() const = 0;
};

// The CPU implementation (float32 weights and arithmetic) over `collectives` (Gloo, or any
// implementation whose buffers are host memory), which must outlive the model.
absl::StatusOr<std::unique_ptr<Model>> CreateCpuModel(const ModelShape& shape,
                                                      Collectives* collectives);

}  // namespace fleet::native
