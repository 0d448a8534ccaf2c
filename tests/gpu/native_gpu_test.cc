// fleet-engine's GPU path on real GPUs (ctest -L gpu; on the lent GPU machine through
// tests/gpu/run-on-gpu-host.sh): NCCL collectives against host references, a group that cannot
// form giving DeadlineExceeded instead of hanging, and the GPU model against the CPU model.
// Skipped, saying why, where no CUDA device can be used; two-GPU cases skip on one GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "engine/collectives/gloo_collectives.h"
#include "engine/cuda/model_cuda.h"
#include "engine/cuda/nccl_collectives.h"
#include "engine/model/model.h"
#include "engine/rendezvous/kv_store.h"
#include "gtest/gtest.h"
#include "tests/gpu/fake_gpu_collectives.h"

namespace fleet::native {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(60);
constexpr int kSteps = 6;  // steps of each model comparison

int CudaDevices(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    *why = absl::StrCat("no usable CUDA device: cudaGetDeviceCount: ", cudaGetErrorName(err), ": ",
                        cudaGetErrorString(err));
    return 0;
  }
  if (count == 0) *why = "no CUDA device on this host";
  return count;
}

class NativeGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    gpus_ = CudaDevices(&why);
    if (gpus_ == 0) GTEST_SKIP() << why;
  }
  // Skips the test unless there are `n` GPUs: NCCL runs one rank per GPU.
  bool NeedGpus(int n) {
    if (gpus_ >= n) return true;
    std::printf("skipped: needs %d GPUs (one NCCL rank per GPU), this host has %d\n", n, gpus_);
    return false;
  }

  int gpus_ = 0;
};

// Runs fn(rank) for every rank of a group on its own thread, as the ranks of a group would.
std::vector<absl::Status> RunRanks(int size, const std::function<absl::Status(int)>& fn) {
  std::vector<absl::Status> status(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] { status[static_cast<size_t>(r)] = fn(r); });
  }
  for (std::thread& t : threads) t.join();
  return status;
}

// Host values <-> the bytes of a dtype. The tests use small integers, exact in all three.
std::vector<char> Encode(DType dtype, const std::vector<double>& values) {
  std::vector<char> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kInt32) {
      const int32_t v = static_cast<int32_t>(values[i]);
      std::memcpy(&bytes[i * 4], &v, 4);
    } else {
      const float f = static_cast<float>(values[i]);
      if (dtype == DType::kFloat32) {
        std::memcpy(&bytes[i * 4], &f, 4);
      } else {
        uint32_t bits = 0;
        std::memcpy(&bits, &f, 4);
        const uint16_t high = static_cast<uint16_t>(bits >> 16);  // exact for small integers
        std::memcpy(&bytes[i * 2], &high, 2);
      }
    }
  }
  return bytes;
}

std::vector<double> Decode(DType dtype, const std::vector<char>& bytes) {
  std::vector<double> values(bytes.size() / DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kInt32) {
      int32_t v = 0;
      std::memcpy(&v, &bytes[i * 4], 4);
      values[i] = v;
    } else if (dtype == DType::kFloat32) {
      float f = 0;
      std::memcpy(&f, &bytes[i * 4], 4);
      values[i] = f;
    } else {
      uint16_t high = 0;
      std::memcpy(&high, &bytes[i * 2], 2);
      const uint32_t bits = static_cast<uint32_t>(high) << 16;
      float f = 0;
      std::memcpy(&f, &bits, 4);
      values[i] = f;
    }
  }
  return values;
}

// Uploads `values`, runs `op` on the device buffer(s), downloads `out_count` elements of the
// result buffer and compares them with `expected`.
absl::Status CheckValues(const std::string& what, const std::vector<double>& got,
                         const std::vector<double>& expected) {
  if (got.size() != expected.size()) {
    return absl::InternalError(
        absl::StrCat(what, ": ", got.size(), " values, expected ", expected.size()));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != expected[i]) {
      return absl::InternalError(
          absl::StrCat(what, ": element ", i, " is ", got[i], ", expected ", expected[i]));
    }
  }
  return absl::OkStatus();
}

// Every collective of one rank of a group of `size`, for one dtype, against host references
// computed from what every rank contributes.
absl::Status ExerciseCollectives(NcclCollectives& comm, DType dtype) {
  const int r = comm.rank();
  const int size = comm.size();
  const size_t n = 4099;  // not a multiple of anything NCCL chunks by
  const size_t esize = DTypeSize(dtype);
  const std::string name = absl::StrCat(DTypeName(dtype), " rank ", r, "/", size);
  auto roundtrip = [&](Buffer& buf, const std::vector<double>& values) -> absl::Status {
    std::vector<char> bytes = Encode(dtype, values);
    return comm.Upload(buf, bytes.data(), bytes.size());
  };
  auto fetch = [&](Buffer& buf, size_t count) -> absl::StatusOr<std::vector<double>> {
    std::vector<char> bytes(count * esize);
    absl::Status st = comm.Download(bytes.data(), buf, bytes.size());
    if (!st.ok()) return st;
    return Decode(dtype, bytes);
  };

  // AllReduceSum: rank q contributes (i % 7) + q + 1.
  {
    auto buf = comm.Allocate(n * esize);
    if (!buf.ok()) return buf.status();
    std::vector<double> mine(n), sum(n);
    for (size_t i = 0; i < n; ++i) {
      mine[i] = static_cast<double>(i % 7) + r + 1;
      sum[i] = static_cast<double>(size) * (i % 7) + size * (size + 1) / 2.0;
    }
    if (auto st = roundtrip(**buf, mine); !st.ok()) return st;
    if (auto st = comm.AllReduceSum((*buf)->data(), n, dtype); !st.ok()) return st;
    auto got = fetch(**buf, n);
    if (!got.ok()) return got.status();
    if (auto st = CheckValues(name + " all-reduce", *got, sum); !st.ok()) return st;
  }
  // AllGather: rank q contributes q * 10 + (i % 5).
  {
    auto send = comm.Allocate(n * esize);
    auto recv = comm.Allocate(n * esize * size);
    if (!send.ok()) return send.status();
    if (!recv.ok()) return recv.status();
    std::vector<double> mine(n), all(n * size);
    for (size_t i = 0; i < n; ++i) mine[i] = r * 10.0 + static_cast<double>(i % 5);
    for (int q = 0; q < size; ++q) {
      for (size_t i = 0; i < n; ++i) all[q * n + i] = q * 10.0 + static_cast<double>(i % 5);
    }
    if (auto st = roundtrip(**send, mine); !st.ok()) return st;
    if (auto st = comm.AllGather((*send)->data(), (*recv)->data(), n, dtype); !st.ok()) return st;
    auto got = fetch(**recv, n * size);
    if (!got.ok()) return got.status();
    if (auto st = CheckValues(name + " all-gather", *got, all); !st.ok()) return st;
  }
  // Broadcast from the last rank.
  {
    const int root = size - 1;
    auto buf = comm.Allocate(n * esize);
    if (!buf.ok()) return buf.status();
    std::vector<double> mine(n), want(n);
    for (size_t i = 0; i < n; ++i) {
      want[i] = static_cast<double>(i % 9) + 1;
      mine[i] = r == root ? want[i] : -1.0;
    }
    if (auto st = roundtrip(**buf, mine); !st.ok()) return st;
    if (auto st = comm.Broadcast((*buf)->data(), n, dtype, root); !st.ok()) return st;
    auto got = fetch(**buf, n);
    if (!got.ok()) return got.status();
    if (auto st = CheckValues(name + " broadcast", *got, want); !st.ok()) return st;
  }
  // AllToAllV: q sends p count(q, p) elements valued q * 16 + p * 4 + (i % 4); some counts are
  // zero (skipped sends), the rest differ per pair.
  {
    auto count = [](int from, int to) -> size_t {
      return (from + to) % 3 == 2 ? 0 : static_cast<size_t>(37 * (from + 1) + 11 * (to + 2));
    };
    auto value = [](int from, int to, size_t i) {
      return from * 16.0 + to * 4.0 + static_cast<double>(i % 4);
    };
    std::vector<size_t> send_counts(static_cast<size_t>(size)),
        recv_counts(static_cast<size_t>(size));
    std::vector<double> mine, want;
    for (int p = 0; p < size; ++p) {
      send_counts[static_cast<size_t>(p)] = count(r, p);
      recv_counts[static_cast<size_t>(p)] = count(p, r);
      for (size_t i = 0; i < count(r, p); ++i) mine.push_back(value(r, p, i));
      for (size_t i = 0; i < count(p, r); ++i) want.push_back(value(p, r, i));
    }
    auto send = comm.Allocate(std::max<size_t>(mine.size(), 1) * esize);
    auto recv = comm.Allocate(std::max<size_t>(want.size(), 1) * esize);
    if (!send.ok()) return send.status();
    if (!recv.ok()) return recv.status();
    if (auto st = roundtrip(**send, mine); !st.ok()) return st;
    if (auto st = comm.AllToAllV((*send)->data(), send_counts, (*recv)->data(), recv_counts, dtype);
        !st.ok()) {
      return st;
    }
    auto got = fetch(**recv, want.size());
    if (!got.ok()) return got.status();
    if (auto st = CheckValues(name + " all-to-all-v", *got, want); !st.ok()) return st;
  }
  return comm.Barrier();
}

TEST_F(NativeGpuTest, OneRankCollectivesMatchHostReferences) {
  InMemoryKvStore store;
  auto comm = NcclCollectives::Create(&store, 0, 1, 0, kTimeout);
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::printf("%s\n", (*comm)->Describe().c_str());
  EXPECT_TRUE(absl::StartsWith((*comm)->Describe(), "nccl 2.")) << (*comm)->Describe();
  EXPECT_TRUE(absl::EndsWith((*comm)->Describe(), "(cuda device 0)")) << (*comm)->Describe();
  for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kInt32}) {
    absl::Status st = ExerciseCollectives(**comm, dtype);
    EXPECT_TRUE(st.ok()) << st;
  }
  EXPECT_TRUE((*comm)->Synchronize().ok());
}

TEST_F(NativeGpuTest, TwoRankCollectivesMatchHostReferences) {
  if (!NeedGpus(2)) GTEST_SKIP() << "needs 2 GPUs, this host has " << gpus_;
  InMemoryKvStore store;
  std::vector<absl::Status> status = RunRanks(2, [&](int rank) -> absl::Status {
    auto comm = NcclCollectives::Create(&store, rank, 2, rank, kTimeout);
    if (!comm.ok()) return comm.status();
    for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kInt32}) {
      if (absl::Status st = ExerciseCollectives(**comm, dtype); !st.ok()) return st;
    }
    return absl::OkStatus();
  });
  for (const absl::Status& st : status) EXPECT_TRUE(st.ok()) << st;
}

TEST_F(NativeGpuTest, RejectsBadArguments) {
  InMemoryKvStore store;
  EXPECT_TRUE(absl::IsInvalidArgument(NcclCollectives::Create(&store, 2, 2, 0, kTimeout).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(NcclCollectives::Create(nullptr, 0, 1, 0, kTimeout).status()));
  EXPECT_TRUE(
      absl::IsFailedPrecondition(NcclCollectives::Create(&store, 0, 1, 4096, kTimeout).status()));
}

// The model tests' shape: every part of the layer, small enough for the CPU reference.
ModelShape SmallShape() {
  return {.hidden_size = 256,
          .num_layers = 2,
          .num_heads = 4,
          .num_experts = 8,
          .experts_per_token = 2,
          .expert_ffn_size = 128,
          .shared_experts = 1,
          .vocab_size = 512,
          .max_seq_len = 64,
          .max_num_seqs = 4,
          .seed = 7};
}

// A few decode steps of `sequences` sequences; step s feeds tokens[s] (one per sequence) at
// position s.
struct Trace {
  std::vector<std::vector<int>> tokens;    // [step][seq] next tokens
  std::vector<std::vector<float>> logits;  // [step][seq * vocab]
  std::vector<uint64_t> weight_bytes;      // [step]
};

std::vector<StepEntry> Entries(const std::vector<int>& inputs, int position) {
  std::vector<StepEntry> entries;
  for (size_t i = 0; i < inputs.size(); ++i) {
    entries.push_back({.slot = static_cast<int>(i), .token = inputs[i], .position = position});
  }
  return entries;
}

// Runs one step per element of inputs, inputs[s] being step s's tokens.
absl::StatusOr<Trace> RunSteps(Model& model, const std::vector<std::vector<int>>& inputs) {
  Trace trace;
  for (size_t s = 0; s < inputs.size(); ++s) {
    auto out = model.Step(Entries(inputs[s], static_cast<int>(s)), /*want_logits=*/true);
    if (!out.ok()) return out.status();
    trace.tokens.push_back(out->next_tokens);
    trace.logits.push_back(out->logits);
    trace.weight_bytes.push_back(out->weight_bytes_read);
  }
  return trace;
}

// The GPU model of `shape` over `comm`, run through `inputs`.
absl::StatusOr<Trace> TraceOf(const ModelShape& shape, GpuCollectives* comm,
                              const std::vector<std::vector<int>>& inputs) {
  ASSIGN_OR_RETURN(std::unique_ptr<Model> gpu, CreateCudaModel(shape, comm));
  return RunSteps(*gpu, inputs);
}

// The same on a one-rank NCCL group on GPU 0: the reference of the sharded runs.
absl::StatusOr<Trace> OneRankTrace(const ModelShape& shape,
                                   const std::vector<std::vector<int>>& inputs) {
  InMemoryKvStore store;
  ASSIGN_OR_RETURN(auto comm, NcclCollectives::Create(&store, 0, 1, 0, kTimeout));
  return TraceOf(shape, comm.get(), inputs);
}

// kSteps steps of three sequences (an odd batch: the ranks route unequal shares).
std::vector<std::vector<int>> OddBatchInputs() {
  std::vector<std::vector<int>> inputs;
  for (int s = 0; s < kSteps; ++s) {
    inputs.push_back({(s * 13) % 512, (s * 29 + 3) % 512, (s * 71 + 5) % 512});
  }
  return inputs;
}

// Per entry: relative L2 error of the logits, and whether the next tokens agree.
struct Agreement {
  int entries = 0;
  int same_token = 0;
  int within = 0;  // relative error <= tolerance
  double median = 0;
  double worst = 0;
  bool finite = true;
};

Agreement Compare(const Trace& got, const Trace& want, int vocab, double tolerance) {
  Agreement a;
  std::vector<double> errors;
  for (size_t s = 0; s < want.tokens.size(); ++s) {
    for (size_t i = 0; i < want.tokens[s].size(); ++i) {
      ++a.entries;
      if (got.tokens[s][i] == want.tokens[s][i]) ++a.same_token;
      double diff = 0;
      double norm = 0;
      for (int v = 0; v < vocab; ++v) {
        const double g = got.logits[s][i * vocab + v];
        const double w = want.logits[s][i * vocab + v];
        if (!std::isfinite(g)) a.finite = false;
        diff += (g - w) * (g - w);
        norm += w * w;
      }
      const double rel = std::sqrt(diff / std::max(norm, 1e-30));
      errors.push_back(rel);
      if (rel <= tolerance) ++a.within;
    }
  }
  std::sort(errors.begin(), errors.end());
  a.median = errors[errors.size() / 2];
  a.worst = errors.back();
  return a;
}

// Step 0's tokens, then the reference's own next tokens (teacher forcing: both models see the
// same inputs, so one disagreement does not carry into later steps' inputs).
std::vector<std::vector<int>> InputsFrom(const Trace& reference, int sequences, int steps,
                                         int vocab) {
  std::vector<std::vector<int>> inputs;
  std::vector<int> first;
  for (int i = 0; i < sequences; ++i) first.push_back((37 * i + 11) % vocab);
  inputs.push_back(first);
  for (int s = 0; s + 1 < steps; ++s) inputs.push_back(reference.tokens[static_cast<size_t>(s)]);
  return inputs;
}

absl::StatusOr<Trace> CpuReference(const ModelShape& shape, int steps) {
  InMemoryKvStore store;
  auto gloo = GlooCollectives::Create(&store, 0, 1, {.address = "127.0.0.1"});
  if (!gloo.ok()) return gloo.status();
  auto cpu = CreateCpuModel(shape, gloo->get());
  if (!cpu.ok()) return cpu.status();
  // Feed the CPU model its own tokens step by step.
  Trace trace;
  std::vector<int> inputs;
  for (int i = 0; i < shape.max_num_seqs; ++i) inputs.push_back((37 * i + 11) % shape.vocab_size);
  for (int s = 0; s < steps; ++s) {
    auto out = (*cpu)->Step(Entries(inputs, s), /*want_logits=*/true);
    if (!out.ok()) return out.status();
    trace.tokens.push_back(out->next_tokens);
    trace.logits.push_back(out->logits);
    trace.weight_bytes.push_back(out->weight_bytes_read);
    inputs = out->next_tokens;
  }
  return trace;
}

// GPU (bf16 weights, bf16 product inputs, float32 accumulation) against CPU (float32). bf16
// keeps 8 significant bits, so each weight and each product input is off by up to 2^-9 (0.2%)
// relative; summed over a dot product these errors partly cancel, and over two layers and the
// LM head they stay near 0.5% of the logits' norm. 3% leaves room for that growth; an indexing
// or layout mistake gives errors of order 100%. An entry whose router saw two experts within
// that rounding of each other may pick a different one and differ by more, hence "most".
constexpr double kBf16Tolerance = 3e-2;

TEST_F(NativeGpuTest, OneRankModelMatchesCpuModel) {
  const ModelShape shape = SmallShape();
  auto want = CpuReference(shape, kSteps);
  ASSERT_TRUE(want.ok()) << want.status();
  auto got = OneRankTrace(shape, InputsFrom(*want, shape.max_num_seqs, kSteps, shape.vocab_size));
  ASSERT_TRUE(got.ok()) << got.status();
  const Agreement a = Compare(*got, *want, shape.vocab_size, kBf16Tolerance);
  std::printf(
      "gpu tp=1 vs cpu: %d/%d same next token, %d/%d within %.0e relative, median %.2e, worst "
      "%.2e\n",
      a.same_token, a.entries, a.within, a.entries, kBf16Tolerance, a.median, a.worst);
  EXPECT_TRUE(a.finite);
  EXPECT_GE(a.same_token * 10, a.entries * 9) << "fewer than 90% of next tokens agree";
  EXPECT_GE(a.within * 10, a.entries * 9) << "fewer than 90% of entries within tolerance";
  EXPECT_LE(a.median, 1e-2);
  // Bytes: bf16 is half of the CPU's float32 for the same experts; routing may differ by a
  // near-tie, so compare within one expert per layer.
  const uint64_t expert_bytes = 3ull * shape.hidden_size * shape.expert_ffn_size * 2;
  for (size_t s = 0; s < got->weight_bytes.size(); ++s) {
    const double diff = std::fabs(static_cast<double>(got->weight_bytes[s]) -
                                  static_cast<double>(want->weight_bytes[s]) / 2);
    EXPECT_LE(diff, static_cast<double>(shape.num_layers * expert_bytes)) << "step " << s;
  }
}

TEST_F(NativeGpuTest, GraphReplayGivesTheSameBitsAsDirectLaunches) {
  const ModelShape shape = SmallShape();
  InMemoryKvStore store;
  auto comm = NcclCollectives::Create(&store, 0, 1, 0, kTimeout);
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::vector<std::vector<int>> inputs;
  for (int s = 0; s < kSteps; ++s) inputs.push_back({(s * 13) % 512, (s * 29 + 3) % 512});
  Trace traces[2];
  for (bool graphs : {true, false}) {
    auto gpu = CreateCudaModel(shape, comm->get(), {.cuda_graphs = graphs});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    auto trace = RunSteps(**gpu, inputs);
    ASSERT_TRUE(trace.ok()) << trace.status();
    traces[graphs ? 0 : 1] = *trace;
  }
  EXPECT_EQ(traces[0].tokens, traces[1].tokens);
  EXPECT_EQ(traces[0].logits, traces[1].logits);
  EXPECT_EQ(traces[0].weight_bytes, traces[1].weight_bytes);
}

TEST_F(NativeGpuTest, ModelRejectsBadEntries) {
  const ModelShape shape = SmallShape();
  InMemoryKvStore store;
  auto comm = NcclCollectives::Create(&store, 0, 1, 0, kTimeout);
  ASSERT_TRUE(comm.ok()) << comm.status();
  auto gpu = CreateCudaModel(shape, comm->get());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  Model& m = **gpu;
  EXPECT_TRUE(absl::IsInvalidArgument(m.Step({{.slot = 9, .token = 1}}, false).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(m.Step({{.slot = 0, .token = 512}}, false).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      m.Step({{.slot = 0, .token = 1}, {.slot = 0, .token = 2}}, false).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(m.Step({{.slot = 0, .token = 1, .position = 3}}, false).status()));
  auto ok = m.Step({{.slot = 0, .token = 1, .position = 0}}, false);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->next_tokens.size(), 1u);
  EXPECT_GE(ok->next_tokens[0], 0);
  EXPECT_LT(ok->next_tokens[0], shape.vocab_size);
  EXPECT_TRUE(ok->logits.empty());
  EXPECT_TRUE(m.Step({}, false).ok());
  ModelShape odd = shape;
  odd.hidden_size = 260;  // a multiple of the 4 heads, not of 8
  EXPECT_TRUE(absl::IsInvalidArgument(CreateCudaModel(odd, comm->get()).status()));
}

// The tensor/expert-parallel path (sharded weights, all-reduces, expert dispatch with its
// per-layer host sync, all-gathers of results and logits) on ONE GPU: the ranks are threads
// whose collectives go through host memory (fake_gpu_collectives.h), since NCCL needs a GPU per
// rank. World 4 with 3 sequences leaves one rank routing nothing.
TEST_F(NativeGpuTest, ShardedModelOnOneGpuMatchesOneRank) {
  ModelShape shape = SmallShape();
  shape.max_num_seqs = 3;  // an odd batch: the ranks route unequal shares
  const std::vector<std::vector<int>> inputs = OddBatchInputs();
  absl::StatusOr<Trace> one_rank = OneRankTrace(shape, inputs);
  ASSERT_TRUE(one_rank.ok()) << one_rank.status();
  const Trace& one = *one_rank;
  for (int world : {2, 4}) {
    LoopbackGroup group(world);
    std::vector<Trace> traces(static_cast<size_t>(world));
    std::vector<absl::Status> status = RunRanks(world, [&](int rank) -> absl::Status {
      ASSIGN_OR_RETURN(auto comm, FakeGpuCollectives::Create(&group, rank, 0));
      ASSIGN_OR_RETURN(traces[static_cast<size_t>(rank)], TraceOf(shape, comm.get(), inputs));
      return absl::OkStatus();
    });
    for (const absl::Status& st : status) ASSERT_TRUE(st.ok()) << "world " << world << ": " << st;
    for (int r = 1; r < world; ++r) {
      EXPECT_EQ(traces[static_cast<size_t>(r)].tokens, traces[0].tokens) << "rank " << r;
      EXPECT_EQ(traces[static_cast<size_t>(r)].logits, traces[0].logits) << "rank " << r;
    }
    // As for two GPUs below: only the order of float32 sums differs from one rank.
    const Agreement a = Compare(traces[0], one, shape.vocab_size, 1e-2);
    std::printf(
        "gpu tp=%d (one gpu, fake collectives) vs tp=1: %d/%d same next token, %d/%d within "
        "1e-2, median %.2e, worst %.2e\n",
        world, a.same_token, a.entries, a.within, a.entries, a.median, a.worst);
    EXPECT_TRUE(a.finite);
    EXPECT_GE(a.same_token * 20, a.entries * 19) << "world " << world;
    EXPECT_GE(a.within * 20, a.entries * 19) << "world " << world;
  }
}

TEST_F(NativeGpuTest, TwoRankModelMatchesOneRank) {
  if (!NeedGpus(2)) GTEST_SKIP() << "needs 2 GPUs, this host has " << gpus_;
  ModelShape shape = SmallShape();
  shape.max_num_seqs = 3;  // an odd batch: the ranks route unequal shares
  const std::vector<std::vector<int>> inputs = OddBatchInputs();
  absl::StatusOr<Trace> one_rank = OneRankTrace(shape, inputs);
  ASSERT_TRUE(one_rank.ok()) << one_rank.status();
  const Trace& one = *one_rank;
  InMemoryKvStore store;
  Trace two[2];
  std::vector<absl::Status> status = RunRanks(2, [&](int rank) -> absl::Status {
    ASSIGN_OR_RETURN(auto comm, NcclCollectives::Create(&store, rank, 2, rank, kTimeout));
    ASSIGN_OR_RETURN(two[rank], TraceOf(shape, comm.get(), inputs));
    return absl::OkStatus();
  });
  for (const absl::Status& st : status) ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(two[0].tokens, two[1].tokens) << "ranks disagree";
  // Both sides are bf16; only the order of float32 sums differs (all-reduce of partial
  // products), which can move a bf16 rounding by one step: far below the CPU comparison's 3%.
  const Agreement a = Compare(two[0], one, shape.vocab_size, 1e-2);
  std::printf("gpu tp=2 vs tp=1: %d/%d same next token, %d/%d within 1e-2, median %.2e\n",
              a.same_token, a.entries, a.within, a.entries, a.median);
  EXPECT_GE(a.same_token * 20, a.entries * 19);
  EXPECT_GE(a.within * 20, a.entries * 19);
}

TEST_F(NativeGpuTest, DeviceCopyBandwidthIsMeasured) {
  auto gbps = MeasureDeviceCopyBandwidth(0);
  ASSERT_TRUE(gbps.ok()) << gbps.status();
  std::printf("device-to-device copy: %.0f GB/s\n", *gbps);
  EXPECT_GT(*gbps, 100.0);
}

// Last in the file: if NCCL ever failed to abort a half-made communicator, this would hang, and
// run-on-gpu-host.sh runs it on its own with a shorter limit.
TEST_F(NativeGpuTest, MissingPeerGivesDeadlineExceededNotAHang) {
  // Rank 0 of a group of 2 whose rank 1 never starts: the communicator cannot form.
  InMemoryKvStore store;
  const absl::Time start = absl::Now();
  auto comm = NcclCollectives::Create(&store, 0, 2, 0, absl::Seconds(3));
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(comm.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(comm.status())) << comm.status();
  EXPECT_LT(took, absl::Seconds(30)) << "the abort took too long";
  std::printf("rank without its peer: %s (after %s)\n", comm.status().ToString().c_str(),
              absl::FormatDuration(took).c_str());

  // Rank 1 whose rank 0 never publishes the group's id.
  InMemoryKvStore empty;
  auto orphan = NcclCollectives::Create(&empty, 1, 2, 0, absl::Seconds(1));
  ASSERT_FALSE(orphan.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(orphan.status())) << orphan.status();
}

}  // namespace
}  // namespace fleet::native
