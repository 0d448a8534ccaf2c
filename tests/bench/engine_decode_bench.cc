// fleet-engine's decode step on one GPU: step time, tokens/s and the weight bandwidth a step
// achieves against the device's own copy bandwidth, at batch 1 and 8, with the step replayed as
// a CUDA graph and launched kernel by kernel. Run by hand or by run-on-gpu-host.sh (not ctest).
//
// Bandwidths (written down once):
//   device-to-device copy  = 2 * bytes / time   (each byte is read once and written once)
//   achieved step          = weight bytes read by the step / step time
//                            (the dense shard and LM head, plus every expert that got a token)
// A decode step at small batch is bound by reading its weights, so the achieved figure over the
// copy figure says how close the step is to the memory system's limit.
//
// The result is checked too: graph replay and direct launches must give the same tokens (the
// same kernels in the same order give the same bits); the math itself is checked against the CPU
// model by native_gpu_test.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "engine/cuda/model_cuda.h"
#include "engine/cuda/nccl_collectives.h"
#include "engine/model/model.h"
#include "engine/rendezvous/kv_store.h"

namespace fleet::native {
namespace {

struct Options {
  int device = 0;
  int layers = 8;
  int steps = 50;
  int warmup = 5;
};

struct Result {
  std::string mode;
  int batch = 0;
  double step_ms = 0;  // median
  double tokens_per_s = 0;
  double weight_gb = 0;  // mean weight bytes read per step, 1e9
  double achieved_gbps = 0;
  std::vector<std::vector<int>> tokens;  // every step's next tokens, for the check
};

// DeepSeek-V4-Flash's pattern (many small routed experts, a few per token, one shared expert),
// scaled so one GPU holds it: about 10.6 B parameters, 21 GB in bf16 at 8 layers.
ModelShape BenchShape(int layers) {
  return {.hidden_size = 4096,
          .num_layers = layers,
          .num_heads = 16,
          .num_experts = 64,
          .experts_per_token = 6,
          .expert_ffn_size = 1536,
          .shared_experts = 1,
          .vocab_size = 32768,
          .max_seq_len = 256,
          .max_num_seqs = 8,
          .seed = 1};
}

// Decodes `batch` sequences from position 0 for warmup + steps steps, feeding each step's next
// tokens back, and times the steps after the warm-up (host clock around Step, which returns
// once the tokens are on the host: the latency a caller sees).
absl::StatusOr<Result> Decode(Model& model, int batch, const Options& opt) {
  Result r;
  r.batch = batch;
  std::vector<int> inputs;
  for (int i = 0; i < batch; ++i) inputs.push_back((7919 * i + 17) % model.shape().vocab_size);
  std::vector<double> ms;
  double bytes = 0;
  for (int s = 0; s < opt.warmup + opt.steps; ++s) {
    std::vector<StepEntry> entries;
    for (int i = 0; i < batch; ++i) {
      entries.push_back({.slot = i, .token = inputs[static_cast<size_t>(i)], .position = s});
    }
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<StepOutput> out = model.Step(entries, /*want_logits=*/false);
    const auto stop = std::chrono::steady_clock::now();
    if (!out.ok()) return out.status();
    for (int t : out->next_tokens) {
      if (t < 0 || t >= model.shape().vocab_size) {
        return absl::InternalError(absl::StrCat("step ", s, " gave token ", t, ", outside 0..",
                                                model.shape().vocab_size - 1));
      }
    }
    r.tokens.push_back(out->next_tokens);
    inputs = out->next_tokens;
    if (s >= opt.warmup) {
      ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      bytes += static_cast<double>(out->weight_bytes_read);
    }
  }
  std::sort(ms.begin(), ms.end());
  r.step_ms = ms[ms.size() / 2];
  r.tokens_per_s = batch / (r.step_ms / 1e3);
  r.weight_gb = bytes / opt.steps / 1e9;
  r.achieved_gbps = r.weight_gb / (r.step_ms / 1e3);
  return r;
}

absl::Status Main(const Options& opt) {
  int devices = 0;
  if (cudaError_t err = cudaGetDeviceCount(&devices); err != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA device (", err == cudaSuccess ? "none found" : cudaGetErrorString(err),
        "); run this on a GPU host"));
  }
  cudaDeviceProp prop{};
  if (cudaError_t err = cudaGetDeviceProperties(&prop, opt.device); err != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda device ", opt.device, ": ", cudaGetErrorString(err)));
  }
  const ModelShape shape = BenchShape(opt.layers);
  const ShapeSizes sizes = Sizes(shape);
  std::printf("fleet-engine decode benchmark\n");
  std::printf(
      "shape: DeepSeek-V4-Flash-like, scaled to fit one GPU: hidden %d, %d layers, %d heads "
      "(head_dim %d), %d routed experts (%d per token, ffn %d), %d shared expert, vocab %d, "
      "max_seq_len %d, max_num_seqs %d, seed %llu\n",
      shape.hidden_size, shape.num_layers, shape.num_heads, shape.head_dim(), shape.num_experts,
      shape.experts_per_token, shape.expert_ffn_size, shape.shared_experts, shape.vocab_size,
      shape.max_seq_len, shape.max_num_seqs, static_cast<unsigned long long>(shape.seed));
  std::printf(
      "parameters: %.2f B in all (%.1f GB as bf16), dense %.3f B, %.1f M per routed expert "
      "(%.1f MB), embedding %.1f M\n",
      sizes.total_params / 1e9, 2.0 * sizes.total_params / 1e9, sizes.dense_params / 1e9,
      sizes.params_per_expert / 1e6, 2.0 * sizes.params_per_expert / 1e6,
      static_cast<double>(shape.vocab_size) * shape.hidden_size / 1e6);
  std::printf("gpu: %s (cuda device %d, sm_%d%d, %d SMs, %.1f GiB)\n", prop.name, opt.device,
              prop.major, prop.minor, prop.multiProcessorCount,
              prop.totalGlobalMem / double(1 << 30));
  absl::StatusOr<double> d2d = MeasureDeviceCopyBandwidth(opt.device);
  if (!d2d.ok()) return d2d.status();
  std::printf("device-to-device copy bandwidth: %.0f GB/s (2 x 1 GiB / median time)\n", *d2d);

  InMemoryKvStore store;
  absl::StatusOr<std::unique_ptr<NcclCollectives>> comm =
      NcclCollectives::Create(&store, 0, 1, opt.device, absl::Seconds(120));
  if (!comm.ok()) return comm.status();
  std::printf("collectives: %s\n", (*comm)->Describe().c_str());

  std::vector<Result> results;
  for (bool graphs : {true, false}) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Model>> model =
        CreateCudaModel(shape, comm->get(), {.cuda_graphs = graphs});
    if (!model.ok()) return model.status();
    std::printf("%s model: weights generated on the device in %.2f s\n",
                graphs ? "graph" : "direct",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    for (int batch : {1, 8}) {
      absl::StatusOr<Result> r = Decode(**model, batch, opt);
      if (!r.ok()) return r.status();
      r->mode = graphs ? "graph" : "direct";
      results.push_back(*r);
    }
  }

  // Check: the same computation whether replayed or launched directly.
  bool same = true;
  for (size_t i = 0; i < 2; ++i) same = same && results[i].tokens == results[i + 2].tokens;

  std::printf("\n== decode step, %s, %d steps after %d warm-up (median) ==\n", prop.name, opt.steps,
              opt.warmup);
  std::printf("%-7s %5s %9s %10s %12s %12s %9s\n", "MODE", "BATCH", "STEP_MS", "TOKENS/S",
              "WEIGHT_GB", "ACHIEVED_GB/S", "OF_D2D");
  for (const Result& r : results) {
    std::printf("%-7s %5d %9.3f %10.1f %12.3f %12.0f %9.2f\n", r.mode.c_str(), r.batch, r.step_ms,
                r.tokens_per_s, r.weight_gb, r.achieved_gbps, r.achieved_gbps / *d2d);
  }
  std::printf("d2d copy: %.0f GB/s; target: achieved/d2d >= 0.60 at batch 1 (graph): %s\n", *d2d,
              results[0].achieved_gbps / *d2d >= 0.6 ? "met" : "NOT met");
  std::printf("check: graph replay and direct launches gave the same tokens: %s\n",
              same ? "yes" : "NO");
  if (!same) return absl::InternalError("graph replay and direct launches disagree");
  return absl::OkStatus();
}

}  // namespace
}  // namespace fleet::native

int main(int argc, char** argv) {
  fleet::native::Options opt;
  CLI::App app{"fleet-engine decode benchmark on one GPU"};
  app.add_option("--device", opt.device, "CUDA device")->capture_default_str();
  app.add_option("--layers", opt.layers, "layers of the benchmark shape")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--steps", opt.steps, "timed steps per batch size")
      ->capture_default_str()
      ->check(CLI::Range(1, 200));
  app.add_option("--warmup", opt.warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::Range(1, 50));
  CLI11_PARSE(app, argc, argv);
  absl::Status st = fleet::native::Main(opt);
  if (!st.ok()) {
    std::fprintf(stderr, "engine_decode_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
