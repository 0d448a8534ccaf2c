// The CPU model: against a naive single-process reference of model.h's math, tensor/expert
// parallel groups (ranks as threads over Gloo on loopback) against one rank, seeds, shape and
// entry validation, and the weight bytes a step reads.
#include "engine/model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/gloo_group.h"

namespace fleet::native {
namespace {

using ::fleet::native::testing::RunGroup;
using ::testing::HasSubstr;

ModelShape SmallShape(uint64_t seed = 7) {
  return {.hidden_size = 64,
          .num_layers = 2,
          .num_heads = 4,
          .num_experts = 8,
          .experts_per_token = 2,
          .expert_ffn_size = 32,
          .shared_experts = 1,
          .vocab_size = 128,
          .max_seq_len = 16,
          .max_num_seqs = 4,
          .seed = seed};
}

// Several steps over four slots at different positions, a slot restarting at position 0, and a
// step that carries every slot.
std::vector<std::vector<StepEntry>> Plan() {
  return {
      {{.slot = 0, .token = 5, .position = 0},
       {.slot = 1, .token = 17, .position = 0},
       {.slot = 2, .token = 99, .position = 0}},
      {{.slot = 0, .token = 6, .position = 1}, {.slot = 1, .token = 18, .position = 1}},
      {{.slot = 2, .token = 100, .position = 1},
       {.slot = 0, .token = 7, .position = 2},
       {.slot = 3, .token = 42, .position = 0}},
      {{.slot = 0, .token = 8, .position = 3},
       {.slot = 1, .token = 19, .position = 2},
       {.slot = 2, .token = 101, .position = 2},
       {.slot = 3, .token = 43, .position = 1}},
      {{.slot = 3, .token = 44, .position = 2}, {.slot = 1, .token = 20, .position = 3}},
      {{.slot = 0, .token = 9, .position = 4},
       {.slot = 1, .token = 21, .position = 4},
       {.slot = 2, .token = 102, .position = 3},
       {.slot = 3, .token = 45, .position = 3}},
      {{.slot = 1, .token = 0, .position = 0}},
      {{.slot = 1, .token = 1, .position = 1}, {.slot = 0, .token = 10, .position = 5}},
  };
}

// outputs[rank][step] of a group of `world` ranks running `plan`.
std::vector<std::vector<StepOutput>> RunPlan(int world, const ModelShape& shape,
                                             const std::vector<std::vector<StepEntry>>& plan,
                                             bool want_logits = true) {
  std::vector<std::vector<StepOutput>> outputs(world);
  RunGroup(world, [&](int rank, Collectives& comm) {
    auto model = CreateCpuModel(shape, &comm);
    ASSERT_TRUE(model.ok()) << model.status();
    for (const auto& entries : plan) {
      auto out = (*model)->Step(entries, want_logits);
      ASSERT_TRUE(out.ok()) << "rank " << rank << ": " << out.status();
      outputs[rank].push_back(*std::move(out));
    }
  });
  return outputs;
}

// model.h's math written the plain way: full (unsharded) weights, every position of a sequence
// recomputed from its tokens, double accumulation.
class Reference {
 public:
  explicit Reference(const ModelShape& shape) : s_(shape) {}

  // Logits of the last position of a sequence fed `tokens`.
  std::vector<float> Logits(const std::vector<int>& tokens) const {
    const int n = static_cast<int>(tokens.size());
    const int hidden = s_.hidden_size;
    const int hd = s_.head_dim();
    const int attn = s_.num_heads * hd;
    const int shared = s_.shared_experts * s_.expert_ffn_size;
    const int ffn = s_.expert_ffn_size;
    std::vector<std::vector<double>> h(n, std::vector<double>(hidden));
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < hidden; ++j) {
        h[t][j] = WeightValue(s_.seed, kEmbeddingTensor,
                              static_cast<uint64_t>(tokens[t]) * hidden + j, 1);
      }
    }
    for (int l = 0; l < s_.num_layers; ++l) {
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (int t = 0; t < n; ++t) {
        auto a = Norm(h[t]);
        q[t] = Mul(a, LayerTensor(l, kWq), attn);
        k[t] = Mul(a, LayerTensor(l, kWk), attn);
        v[t] = Mul(a, LayerTensor(l, kWv), attn);
      }
      for (int t = 0; t < n; ++t) {
        std::vector<double> out(attn, 0.0);
        for (int head = 0; head < s_.num_heads; ++head) {
          std::vector<double> score(t + 1);
          double max = -1e300;
          for (int u = 0; u <= t; ++u) {
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += q[t][head * hd + d] * k[u][head * hd + d];
            score[u] = dot / std::sqrt(static_cast<double>(hd));
            max = std::max(max, score[u]);
          }
          double sum = 0;
          for (double& x : score) sum += (x = std::exp(x - max));
          for (int u = 0; u <= t; ++u) {
            for (int d = 0; d < hd; ++d) out[head * hd + d] += score[u] / sum * v[u][head * hd + d];
          }
        }
        auto o = Mul(out, LayerTensor(l, kWo), hidden);
        for (int j = 0; j < hidden; ++j) h[t][j] += o[j];
      }
      for (int t = 0; t < n; ++t) {
        auto m = Norm(h[t]);
        std::vector<double> add(hidden, 0.0);
        if (shared > 0) {
          add = Ffn(m, LayerTensor(l, kSharedGate), LayerTensor(l, kSharedUp),
                    LayerTensor(l, kSharedDown), shared);
        }
        auto z = Mul(m, LayerTensor(l, kRouter), s_.num_experts);
        double max = *std::max_element(z.begin(), z.end());
        double sum = 0;
        for (double& x : z) sum += (x = std::exp(x - max));
        for (double& x : z) x /= sum;
        std::vector<int> order(s_.num_experts);
        for (int e = 0; e < s_.num_experts; ++e) order[e] = e;
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
        double chosen = 0;
        for (int i = 0; i < s_.experts_per_token; ++i) chosen += z[order[i]];
        for (int i = 0; i < s_.experts_per_token; ++i) {
          const int e = order[i];
          auto y = Ffn(m, ExpertTensor(l, e, s_.num_experts, kExpertGate),
                       ExpertTensor(l, e, s_.num_experts, kExpertUp),
                       ExpertTensor(l, e, s_.num_experts, kExpertDown), ffn);
          for (int j = 0; j < hidden; ++j) add[j] += z[e] / chosen * y[j];
        }
        for (int j = 0; j < hidden; ++j) h[t][j] += add[j];
      }
    }
    auto logits = Mul(Norm(h[n - 1]), kLmHeadTensor, s_.vocab_size);
    return std::vector<float>(logits.begin(), logits.end());
  }

 private:
  static std::vector<double> Norm(const std::vector<double>& x) {
    double sum = 0;
    for (double v : x) sum += v * v;
    const double inv = 1.0 / std::sqrt(sum / static_cast<double>(x.size()) + 1e-6);
    std::vector<double> y(x);
    for (double& v : y) v *= inv;
    return y;
  }
  // x * W for the full tensor W [x.size()][out].
  std::vector<double> Mul(const std::vector<double>& x, uint64_t tensor, int out) const {
    const int in = static_cast<int>(x.size());
    std::vector<double> y(out, 0.0);
    for (int i = 0; i < in; ++i) {
      for (int j = 0; j < out; ++j) {
        y[j] += x[i] * WeightValue(s_.seed, tensor, static_cast<uint64_t>(i) * out + j, in);
      }
    }
    return y;
  }
  std::vector<double> Ffn(const std::vector<double>& x, uint64_t gate, uint64_t up, uint64_t down,
                          int width) const {
    auto g = Mul(x, gate, width);
    auto u = Mul(x, up, width);
    for (int j = 0; j < width; ++j) g[j] = g[j] / (1.0 + std::exp(-g[j])) * u[j];
    return Mul(g, down, s_.hidden_size);
  }

  const ModelShape s_;
};

float MaxAbs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Expects `actual` logits within 1e-4 of max |expected| of `expected`, entry by entry.
void ExpectLogitsClose(const std::vector<float>& expected, const std::vector<float>& actual,
                       int vocab, const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  for (size_t b = 0; b * vocab < expected.size(); ++b) {
    std::vector<float> row(expected.begin() + b * vocab, expected.begin() + (b + 1) * vocab);
    const float tolerance = 1e-4f * MaxAbs(row);
    for (int j = 0; j < vocab; ++j) {
      ASSERT_NEAR(actual[b * vocab + j], row[j], tolerance)
          << what << ", entry " << b << ", token " << j;
    }
  }
}

TEST(CpuModelTest, MatchesNaiveReference) {
  const ModelShape shape = SmallShape();
  const auto plan = Plan();
  const auto outputs = RunPlan(1, shape, plan);
  const Reference reference(shape);
  std::map<int, std::vector<int>> history;  // slot -> tokens fed so far
  std::set<int> distinct_tokens;
  for (size_t s = 0; s < plan.size(); ++s) {
    std::vector<float> expected;
    for (const StepEntry& e : plan[s]) {
      auto& tokens = history[e.slot];
      tokens.resize(e.position);
      tokens.push_back(e.token);
      auto logits = reference.Logits(tokens);
      expected.insert(expected.end(), logits.begin(), logits.end());
    }
    const StepOutput& out = outputs[0][s];
    ExpectLogitsClose(expected, out.logits, shape.vocab_size, absl::StrCat("step ", s));
    for (size_t b = 0; b < plan[s].size(); ++b) {
      auto row = expected.begin() + b * shape.vocab_size;
      const int argmax = static_cast<int>(std::max_element(row, row + shape.vocab_size) - row);
      EXPECT_EQ(out.next_tokens[b], argmax) << "step " << s << " entry " << b;
      distinct_tokens.insert(out.next_tokens[b]);
    }
  }
  // A model that answers one token for everything would pass the rest too easily.
  EXPECT_GT(distinct_tokens.size(), 5u);
}

TEST(CpuModelTest, TensorAndExpertParallelMatchOneRank) {
  const ModelShape shape = SmallShape();
  const auto plan = Plan();
  const auto single = RunPlan(1, shape, plan);
  for (int world : {2, 4}) {
    const auto group = RunPlan(world, shape, plan);
    for (int rank = 0; rank < world; ++rank) {
      ASSERT_EQ(group[rank].size(), plan.size());
      for (size_t s = 0; s < plan.size(); ++s) {
        const std::string what = absl::StrCat("world ", world, " rank ", rank, " step ", s);
        EXPECT_EQ(group[rank][s].next_tokens, single[0][s].next_tokens) << what;
        ExpectLogitsClose(single[0][s].logits, group[rank][s].logits, shape.vocab_size, what);
        // Every rank ends the step with the same answer, bit for bit.
        EXPECT_EQ(group[rank][s].logits, group[0][s].logits) << what;
      }
    }
  }
}

TEST(CpuModelTest, SeedDecidesTheWeights) {
  const auto plan = Plan();
  const auto first = RunPlan(1, SmallShape(7), plan);
  const auto again = RunPlan(1, SmallShape(7), plan);
  const auto other = RunPlan(1, SmallShape(8), plan);
  for (size_t s = 0; s < plan.size(); ++s) {
    EXPECT_EQ(first[0][s].logits, again[0][s].logits) << "step " << s;
    EXPECT_EQ(first[0][s].next_tokens, again[0][s].next_tokens) << "step " << s;
    EXPECT_NE(first[0][s].logits, other[0][s].logits) << "step " << s;
  }
  const auto group_first = RunPlan(2, SmallShape(7), plan);
  const auto group_again = RunPlan(2, SmallShape(7), plan);
  for (size_t s = 0; s < plan.size(); ++s) {
    EXPECT_EQ(group_first[1][s].logits, group_again[1][s].logits) << "step " << s;
  }
}

TEST(CpuModelTest, LogitsOnlyWhenAsked) {
  const auto without = RunPlan(2, SmallShape(), Plan(), /*want_logits=*/false);
  const auto with = RunPlan(2, SmallShape(), Plan(), /*want_logits=*/true);
  for (size_t s = 0; s < Plan().size(); ++s) {
    EXPECT_TRUE(without[0][s].logits.empty());
    EXPECT_EQ(without[0][s].next_tokens, with[0][s].next_tokens);
  }
}

TEST(CpuModelTest, ValidateShapeNamesTheField) {
  struct Case {
    ModelShape shape;
    int world;
    const char* field;
  };
  auto with = [](auto change) {
    ModelShape shape = SmallShape();
    change(shape);
    return shape;
  };
  const Case cases[] = {
      {with([](ModelShape& s) { s.num_heads = 6; }), 4, "num_heads"},
      {with([](ModelShape& s) { s.hidden_size = 66; }), 1, "hidden_size"},
      {with([](ModelShape& s) { s.num_experts = 6; }), 4, "num_experts"},
      {with([](ModelShape& s) { s.expert_ffn_size = 30; }), 4, "shared FFN width"},
      {with([](ModelShape& s) { s.vocab_size = 130; }), 4, "vocab_size"},
      {with([](ModelShape& s) { s.experts_per_token = 9; }), 1, "experts_per_token"},
      {with([](ModelShape& s) { s.num_layers = 0; }), 1, "num_layers"},
      {with([](ModelShape& s) { s.max_num_seqs = 0; }), 1, "max_num_seqs"},
      {SmallShape(), 0, "world size"},
  };
  for (const Case& c : cases) {
    absl::Status status = ValidateShape(c.shape, c.world);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field));
  }
  EXPECT_TRUE(ValidateShape(SmallShape(), 4).ok());
  EXPECT_TRUE(ValidateShape(ModelShape{}, 4).ok());
}

TEST(CpuModelTest, RejectsEntriesOutOfRange) {
  RunGroup(1, [&](int, Collectives& comm) {
    auto model = CreateCpuModel(SmallShape(), &comm);
    ASSERT_TRUE(model.ok()) << model.status();
    const std::vector<std::vector<StepEntry>> bad = {
        {{.slot = 4, .token = 1, .position = 0}},
        {{.slot = -1, .token = 1, .position = 0}},
        {{.slot = 0, .token = 128, .position = 0}},
        {{.slot = 0, .token = 1, .position = 16}},
        {{.slot = 0, .token = 1, .position = 1}},  // position 0 never filled
        {{.slot = 0, .token = 1, .position = 0}, {.slot = 0, .token = 2, .position = 0}},
        {{.slot = 0}, {.slot = 1}, {.slot = 2}, {.slot = 3}, {.slot = 0}},
    };
    for (const auto& entries : bad) {
      auto out = (*model)->Step(entries, false);
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
    }
    // Nothing was changed by the refused steps.
    auto out = (*model)->Step({{.slot = 0, .token = 1, .position = 0}}, false);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE((*model)->Step({{.slot = 0, .token = 1, .position = 1}}, false).ok());
    EXPECT_EQ((*model)->shape().hidden_size, 64);
  });
}

// Bytes of rank `rank`'s dense shard (attention, router, shared FFN, LM head) in float32.
uint64_t DenseShardBytes(const ModelShape& s, int world) {
  const uint64_t h = s.hidden_size;
  const uint64_t attn = static_cast<uint64_t>(s.num_heads) * s.head_dim() / world;
  const uint64_t shared = static_cast<uint64_t>(s.shared_experts) * s.expert_ffn_size / world;
  return 4 * (s.num_layers * (4 * h * attn + h * s.num_experts + 3 * h * shared) +
              h * s.vocab_size / world);
}

TEST(CpuModelTest, SizesAddUp) {
  const ModelShape s = SmallShape();
  const ShapeSizes sizes = Sizes(s);
  EXPECT_EQ(sizes.params_per_expert, 3u * 64 * 32);
  EXPECT_EQ(sizes.dense_params * 4, DenseShardBytes(s, 1));
  EXPECT_EQ(sizes.total_params, sizes.dense_params + 2u * 8 * sizes.params_per_expert + 128u * 64);
}

TEST(CpuModelTest, WeightBytesAreDenseShardPlusExpertsTouched) {
  const ModelShape s = SmallShape();
  const ShapeSizes sizes = Sizes(s);
  const uint64_t expert_bytes = 4 * sizes.params_per_expert;
  // One sequence touches exactly experts_per_token experts in every layer.
  const auto one = RunPlan(1, s, {{{.slot = 0, .token = 3, .position = 0}}}, false);
  EXPECT_EQ(one[0][0].weight_bytes_read,
            DenseShardBytes(s, 1) + s.num_layers * s.experts_per_token * expert_bytes);
  // Four sequences touch between k and min(experts, 4k) per layer.
  const auto plan = Plan();
  const auto outputs = RunPlan(1, s, plan, false);
  for (size_t step = 0; step < plan.size(); ++step) {
    const uint64_t bytes = outputs[0][step].weight_bytes_read;
    const uint64_t most =
        std::min<uint64_t>(s.num_experts, plan[step].size() * s.experts_per_token);
    EXPECT_GE(bytes, DenseShardBytes(s, 1) + s.num_layers * s.experts_per_token * expert_bytes);
    EXPECT_LE(bytes, DenseShardBytes(s, 1) + s.num_layers * most * expert_bytes);
    EXPECT_EQ((bytes - DenseShardBytes(s, 1)) % expert_bytes, 0u);
  }
}

TEST(CpuModelTest, ExpertParallelSendsTokensToOtherRanks) {
  // One sequence per step: with two ranks, rank 0 routes it and rank 1 routes nothing, so any
  // expert bytes on rank 1 are rows rank 0 dispatched to it.
  const ModelShape s = SmallShape();
  const uint64_t expert_bytes = 4 * Sizes(s).params_per_expert;
  std::vector<std::vector<StepEntry>> plan;
  for (int token = 0; token < 8; ++token) {
    plan.push_back({{.slot = 0, .token = token * 13, .position = 0}});
  }
  const auto single = RunPlan(1, s, plan, false);
  const auto group = RunPlan(2, s, plan, false);
  int steps_with_remote_experts = 0;
  for (size_t step = 0; step < plan.size(); ++step) {
    const uint64_t single_experts = single[0][step].weight_bytes_read - DenseShardBytes(s, 1);
    const uint64_t rank0 = group[0][step].weight_bytes_read - DenseShardBytes(s, 2);
    const uint64_t rank1 = group[1][step].weight_bytes_read - DenseShardBytes(s, 2);
    // Every expert lives on exactly one rank: the group touches what one rank touches.
    EXPECT_EQ(rank0 + rank1, single_experts) << "step " << step;
    EXPECT_EQ(rank1 % expert_bytes, 0u);
    if (rank1 > 0) ++steps_with_remote_experts;
  }
  EXPECT_GT(steps_with_remote_experts, 0);
}

// Not a pass/fail check: prints the step time of the small shape for the record.
TEST(CpuModelTest, StepTimeOfSmallShape) {
  for (int world : {1, 2}) {
    RunGroup(world, [&](int rank, Collectives& comm) {
      auto model = CreateCpuModel(SmallShape(), &comm);
      ASSERT_TRUE(model.ok()) << model.status();
      const int steps = 12;
      const auto start = std::chrono::steady_clock::now();
      for (int p = 0; p < steps; ++p) {
        std::vector<StepEntry> entries;
        for (int slot = 0; slot < 4; ++slot) {
          entries.push_back({.slot = slot, .token = slot * 7 + p, .position = p});
        }
        ASSERT_TRUE((*model)->Step(entries, false).ok());
      }
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count() /
          steps;
      if (rank == 0) {
        std::printf("small shape, %d rank(s), 4 sequences: %.3f ms per step\n", world, ms);
      }
    });
  }
}

}  // namespace
}  // namespace fleet::native
