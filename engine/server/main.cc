// fleet-engine: one rank of SparkFleet's built-in tensor/expert-parallel engine. It is NOT a
// language model: it runs a MoE transformer-like decode step on synthetic, seeded weights so a
// cluster's collectives and step time can be exercised and measured, and rank 0 serves an
// OpenAI-compatible API over it (engine/server/api.h).
//
//   fleet-engine serve [--device cpu|cuda] [--port 8000] [shape flags]
//   fleet-engine bench-collectives [--device cpu|cuda] [-b 8] [-e 32M] [--local-ranks N]
//
// Started by a SparkFleet agent (the `native` engine adapter), a rank reads its place from
// FLEET_RANK, FLEET_WORLD_SIZE, FLEET_GROUP and FLEET_GENERATION, and finds the other ranks
// through the controller's rendezvous service (FLEET_CONTROLLER_ADDR, FLEET_CONTROLLER_CA,
// FLEET_RENDEZVOUS_TOKEN). Without FLEET_RANK it runs alone, as a group of one.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/http/server.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "engine/collectives/gloo_collectives.h"
#include "engine/model/model.h"
#include "engine/rendezvous/kv_store.h"
#include "engine/rendezvous/rendezvous_client.h"
#include "engine/server/api.h"
#include "engine/server/bench_collectives.h"
#include "engine/server/metrics.h"
#include "engine/server/scheduler.h"
#include "nlohmann/json.hpp"
#ifdef FLEET_HAVE_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/model_cuda.h"
#include "engine/cuda/nccl_collectives.h"
#endif

namespace fleet::native {
namespace {

constexpr char kComponent[] = "fleet-engine";

struct CommonFlags {
  std::string device = "cpu";
  int cuda_device = -1;  // -1: rank % visible devices
  double rendezvous_timeout_s = 120;
  double collective_timeout_s = 60;
};

struct ServeFlags {
  std::string host = "0.0.0.0";
  int port = 8000;
  double shutdown_grace_s = 30;
  double http_idle_timeout_s = 60;
  double http_request_timeout_s = 30;
  int max_request_kib = 1024;
  std::string model_name = "fleet-engine-synthetic";
  int verify_steps = 0;
  ModelShape shape;
};

// Where this rank sits in its group.
struct Place {
  int rank = 0;
  int world_size = 1;
  std::string group = "standalone";
  uint64_t generation = 0;
  bool in_group = false;  // started by an agent, with the FLEET_* variables
};

// Rank 0 once it serves: the signal thread drains its HTTP server, then stops its scheduler,
// instead of exiting.
struct Leader {
  Scheduler* scheduler;
  http::HttpServer* server;
  absl::Duration grace;
};
std::atomic<Leader*> leader{nullptr};

[[noreturn]] void Exit(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

[[noreturn]] void Fail(const std::string& what, const absl::Status& status) {
  Log(LogLevel::kError, kComponent, what, {{"error", status.ToString()}});
  std::fprintf(stderr, "fleet-engine: %s: %s\n", what.c_str(), status.ToString().c_str());
  Exit(1);
}

absl::StatusOr<Place> ReadPlace() {
  Place place;
  const char* rank = std::getenv("FLEET_RANK");
  if (rank == nullptr) return place;
  place.in_group = true;
  const char* world = std::getenv("FLEET_WORLD_SIZE");
  const char* group = std::getenv("FLEET_GROUP");
  const char* generation = std::getenv("FLEET_GENERATION");
  if (world == nullptr || group == nullptr || generation == nullptr) {
    return absl::FailedPreconditionError(
        "FLEET_RANK is set but FLEET_WORLD_SIZE, FLEET_GROUP or FLEET_GENERATION is not: "
        "start fleet-engine through a SparkFleet recipe (engine: native), or unset FLEET_RANK "
        "to run it alone");
  }
  if (!absl::SimpleAtoi(world, &place.world_size) || place.world_size < 1 ||
      !absl::SimpleAtoi(rank, &place.rank) || place.rank < 0 || place.rank >= place.world_size ||
      !absl::SimpleAtoi(generation, &place.generation)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FLEET_RANK=", rank, ", FLEET_WORLD_SIZE=", world,
                     ", FLEET_GENERATION=", generation, " are not a rank within a group size"));
  }
  place.group = group;
  return place;
}

std::string Hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

// The group's collectives and, for serve, its model: one backend per device kind.
struct Backend {
  std::unique_ptr<Collectives> collectives;
  std::unique_ptr<Model> model;
};

#ifdef FLEET_HAVE_CUDA
absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  if (cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device cuda, but CUDA sees no usable GPU (", cudaGetErrorString(error),
                     "): check the NVIDIA driver and CUDA_VISIBLE_DEVICES, or use --device cpu"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError(
        "--device cuda, but this machine has no GPU: use --device cpu");
  }
  return count;
}
#endif

absl::StatusOr<std::unique_ptr<Collectives>> Connect(const CommonFlags& flags, const Place& place,
                                                     KvStore* store, const std::string& prefix) {
  const absl::Duration timeout = absl::Seconds(flags.collective_timeout_s);
  if (flags.device == "cpu") {
    GlooOptions options{.key_prefix = prefix,
                        .connect_timeout = absl::Seconds(flags.rendezvous_timeout_s),
                        .timeout = timeout};
    // The plan sets GLOO_SOCKET_IFNAME to the node's fabric interface; without it Gloo binds
    // the host name's address, as Gloo itself does by default.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      options.interface = ifname;
    } else {
      options.address = place.in_group ? Hostname() : "127.0.0.1";
    }
    ASSIGN_OR_RETURN(auto gloo,
                     GlooCollectives::Create(store, place.rank, place.world_size, options));
    return std::unique_ptr<Collectives>(std::move(gloo));
  }
  if (flags.device == "cuda") {
#ifdef FLEET_HAVE_CUDA
    int device = flags.cuda_device;
    if (device < 0) {
      ASSIGN_OR_RETURN(int count, CudaDeviceCount());
      device = place.rank % count;
    }
    ASSIGN_OR_RETURN(auto nccl,
                     NcclCollectives::Create(store, place.rank, place.world_size, device, timeout,
                                             absl::Seconds(flags.rendezvous_timeout_s)));
    return std::unique_ptr<Collectives>(std::move(nccl));
#else
    return absl::FailedPreconditionError(
        "this fleet-engine was built without CUDA: rebuild it on a machine with the CUDA "
        "Toolkit and NCCL in /usr/local/cuda, or use --device cpu");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device ", flags.device, " is not one of cpu, cuda"));
}

absl::StatusOr<std::unique_ptr<Model>> MakeModel(const CommonFlags& flags, const ModelShape& shape,
                                                 Collectives* collectives) {
#ifdef FLEET_HAVE_CUDA
  if (flags.device == "cuda") {
    return CreateCudaModel(shape, static_cast<NcclCollectives*>(collectives));
  }
#else
  (void)flags;
#endif
  return CreateCpuModel(shape, collectives);
}

absl::StatusOr<std::unique_ptr<KvStore>> MakeStore(const Place& place) {
  if (!place.in_group) return std::unique_ptr<KvStore>(std::make_unique<InMemoryKvStore>());
  ASSIGN_OR_RETURN(auto client, RendezvousClient::FromEnvironment());
  return std::unique_ptr<KvStore>(std::move(client));
}

// The reference check before serving: `steps` steps of a few sequences on the whole group,
// compared with the same steps on a single-rank model of the same weights built here on rank 0.
absl::StatusOr<std::string> VerifyAgainstSingleRank(const CommonFlags& flags,
                                                    const ModelShape& shape, int world_size,
                                                    Scheduler& scheduler, int steps) {
  InMemoryKvStore solo_store;
  ASSIGN_OR_RETURN(std::unique_ptr<Collectives> solo,
                   Connect(flags, Place{}, &solo_store, "reference/"));
  ASSIGN_OR_RETURN(std::unique_ptr<Model> reference, MakeModel(flags, shape, solo.get()));
  const int sequences = std::min(shape.max_num_seqs, 4);
  int tokens_equal = 0;
  int tokens_total = 0;
  double max_error = 0;
  for (int step = 0; step < steps; ++step) {
    std::vector<StepEntry> entries;
    for (int s = 0; s < sequences; ++s) {
      entries.push_back(
          {.slot = s, .token = (step * 7 + s * 13 + 1) % shape.vocab_size, .position = step});
    }
    ASSIGN_OR_RETURN(StepOutput group, scheduler.LeaderStep(entries, /*want_logits=*/true));
    ASSIGN_OR_RETURN(StepOutput single, reference->Step(entries, /*want_logits=*/true));
    double scale = 0;
    for (float v : single.logits) scale = std::max(scale, std::fabs(static_cast<double>(v)));
    for (size_t i = 0; i < single.logits.size(); ++i) {
      max_error =
          std::max(max_error, std::fabs(static_cast<double>(group.logits[i]) - single.logits[i]) /
                                  std::max(scale, 1e-30));
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      tokens_equal += group.next_tokens[i] == single.next_tokens[i] ? 1 : 0;
      ++tokens_total;
    }
  }
  // float32 on CPU differs only by summation order; bf16 on GPU by rounding of partial sums.
  const double tolerance = flags.device == "cpu" ? 1e-4 : 3e-2;
  std::string summary = absl::StrCat(
      "TP=", world_size, " step vs TP=1 over ", steps, " steps: ", tokens_equal, "/", tokens_total,
      " next tokens equal, max |logit difference| / max |logit| = ", max_error, " (tolerance ",
      tolerance, ")");
  if (max_error > tolerance) {
    return absl::InternalError(absl::StrCat("reference check failed: ", summary));
  }
  return summary;
}

int Serve(const CommonFlags& flags, const ServeFlags& serve) {
  absl::StatusOr<Place> place = ReadPlace();
  if (!place.ok()) Fail("cannot tell this rank's place", place.status());
  if (absl::Status valid = ValidateShape(serve.shape, place->world_size); !valid.ok()) {
    Fail("the model shape does not fit the group", valid);
  }
  absl::StatusOr<std::unique_ptr<KvStore>> store = MakeStore(*place);
  if (!store.ok()) Fail("cannot reach the rendezvous service", store.status());
  Log(LogLevel::kInfo, kComponent, "joining the group",
      {{"group", place->group},
       {"generation", absl::StrCat(place->generation)},
       {"rank", absl::StrCat(place->rank)},
       {"world_size", absl::StrCat(place->world_size)},
       {"device", flags.device}});
  absl::StatusOr<std::unique_ptr<Collectives>> collectives =
      Connect(flags, *place, store->get(), "serve/");
  if (!collectives.ok()) Fail("the group did not form", collectives.status());
  absl::StatusOr<std::unique_ptr<Model>> model = MakeModel(flags, serve.shape, collectives->get());
  if (!model.ok()) Fail("cannot build the model", model.status());
  const ShapeSizes sizes = Sizes(serve.shape);
  std::printf("rank %d of %d: %s; model of %llu parameters (synthetic, seed %llu)\n", place->rank,
              place->world_size, (*collectives)->Describe().c_str(),
              static_cast<unsigned long long>(sizes.total_params),
              static_cast<unsigned long long>(serve.shape.seed));
  std::fflush(stdout);

  Metrics metrics(serve.model_name);
  const SchedulerOptions scheduler_options{.max_num_seqs = serve.shape.max_num_seqs,
                                           .max_seq_len = serve.shape.max_seq_len,
                                           .vocab_size = serve.shape.vocab_size};
  Scheduler scheduler(model->get(), collectives->get(), &metrics, scheduler_options);
  if (place->rank != 0) {
    absl::Status followed = scheduler.RunFollower();
    if (!followed.ok()) Fail("the group broke", followed);
    Log(LogLevel::kInfo, kComponent, "rank 0 ended the group; exiting",
        {{"rank", absl::StrCat(place->rank)}});
    return 0;
  }

  std::string reference = "not run (--verify-steps 0)";
  if (serve.verify_steps > 0 && place->world_size > 1) {
    absl::StatusOr<std::string> checked = VerifyAgainstSingleRank(
        flags, serve.shape, place->world_size, scheduler, serve.verify_steps);
    if (!checked.ok()) Fail("the reference check failed", checked.status());
    reference = *checked;
    std::printf("reference check: %s\n", reference.c_str());
  } else if (serve.verify_steps > 0) {
    reference = "not needed: the group has one rank";
  }

  const ModelShape& shape = serve.shape;
  nlohmann::json info = {{"group", place->group},
                         {"generation", place->generation},
                         {"world_size", place->world_size},
                         {"device", flags.device},
                         {"collectives", (*collectives)->Describe()},
                         {"reference_check", reference},
                         {"synthetic", true},
                         {"shape",
                          {{"hidden_size", shape.hidden_size},
                           {"num_layers", shape.num_layers},
                           {"num_heads", shape.num_heads},
                           {"num_experts", shape.num_experts},
                           {"experts_per_token", shape.experts_per_token},
                           {"expert_ffn_size", shape.expert_ffn_size},
                           {"shared_experts", shape.shared_experts},
                           {"vocab_size", shape.vocab_size},
                           {"max_seq_len", shape.max_seq_len},
                           {"max_num_seqs", shape.max_num_seqs},
                           {"seed", shape.seed},
                           {"parameters", sizes.total_params}}}};
  EngineApi api(&scheduler, &metrics,
                {.model_name = serve.model_name,
                 .max_seq_len = shape.max_seq_len,
                 .vocab_size = shape.vocab_size},
                info);
  absl::StatusOr<uint64_t> open_files = http::RaiseOpenFileLimit();
  if (!open_files.ok()) Fail("cannot raise the open-file limit", open_files.status());
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server = http::HttpServer::Start(
      {.host = serve.host,
       .port = serve.port,
       // Every sequence the scheduler can hold (running + waiting) has a worker, plus room for
       // the ones writing their last chunks, so the scheduler's own 429 is what a client meets
       // when the queue is full, and vllm:num_requests_waiting counts every waiting client.
       .max_handlers = 2 * shape.max_num_seqs + scheduler_options.max_waiting,
       .inline_paths = EngineApi::InlinePaths(),
       .max_body_bytes = static_cast<size_t>(serve.max_request_kib) * 1024,
       .idle_timeout = absl::Seconds(serve.http_idle_timeout_s),
       .request_timeout = absl::Seconds(serve.http_request_timeout_s)},
      [&api](const http::HttpRequest& r) { return api.Handle(r); });
  if (!server.ok()) Fail("cannot open the HTTP port", server.status());
  // From now on SIGTERM/SIGINT drain the server, then end the loop: followers are told to exit.
  Leader self{.scheduler = &scheduler,
              .server = server->get(),
              .grace = absl::Seconds(serve.shutdown_grace_s)};
  leader.store(&self);
  std::printf("serving %s on http://%s:%d with %d rank(s); open-file limit %llu\n",
              serve.model_name.c_str(), serve.host.c_str(), (*server)->port(), place->world_size,
              static_cast<unsigned long long>(*open_files));
  std::fflush(stdout);
  absl::Status led = scheduler.RunLeader();
  if (!led.ok()) Fail("the group broke", led);
  return 0;
}

// One rank of bench-collectives: its collectives, the sweep, and rank 0's tables.
absl::Status BenchRank(const CommonFlags& flags, const Place& place, KvStore* store,
                       const BenchOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Collectives> collectives,
                   Connect(flags, place, store, "bench/"));
  ASSIGN_OR_RETURN(std::vector<BenchRow> rows, RunCollectiveBench(*collectives, options));
  if (place.rank == 0) {
    for (const std::string& op : options.ops) {
      std::printf("%s\n", FormatBenchTable(op, rows, *collectives).c_str());
    }
    std::fflush(stdout);
  }
  // No rank exits before rank 0 has written the tables: an orchestrator that stops a group
  // when one of its ranks ends would otherwise stop rank 0 before it prints.
  RETURN_IF_ERROR(collectives->Barrier());
  if (place.rank != 0) return absl::OkStatus();
  int64_t wrong = 0;
  for (const BenchRow& row : rows) wrong += row.wrong;
  if (wrong != 0) {
    return absl::DataLossError(absl::StrCat(wrong,
                                            " elements were wrong: the collectives "
                                            "returned incorrect data"));
  }
  return absl::OkStatus();
}

int BenchCollectives(const CommonFlags& flags, const BenchOptions& options, int local_ranks) {
  absl::StatusOr<Place> place = ReadPlace();
  if (!place.ok()) Fail("cannot tell this rank's place", place.status());
  if (place->in_group) {
    if (local_ranks != 1) {
      Fail("bad flags",
           absl::InvalidArgumentError("--local-ranks is for runs outside a group; in a group every "
                                      "rank is its own process"));
    }
    absl::StatusOr<std::unique_ptr<KvStore>> store = MakeStore(*place);
    if (!store.ok()) Fail("cannot reach the rendezvous service", store.status());
    absl::Status status = BenchRank(flags, *place, store->get(), options);
    if (!status.ok()) Fail("bench-collectives failed", status);
    return 0;
  }
  // Ranks as threads of this process, meeting in memory.
  InMemoryKvStore store;
  std::vector<absl::Status> results(local_ranks);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < local_ranks; ++rank) {
    threads.emplace_back([&, rank] {
      Place local{.rank = rank, .world_size = local_ranks, .group = "local"};
      results[rank] = BenchRank(flags, local, &store, options);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int rank = 0; rank < local_ranks; ++rank) {
    if (!results[rank].ok()) Fail(absl::StrCat("rank ", rank, " failed"), results[rank]);
  }
  return 0;
}

// "64M", "1G", "8" → bytes.
bool ParseBytes(const std::string& text, size_t* bytes) {
  if (text.empty()) return false;
  size_t multiplier = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'K':
    case 'k':
      multiplier = size_t{1} << 10;
      break;
    case 'M':
    case 'm':
      multiplier = size_t{1} << 20;
      break;
    case 'G':
    case 'g':
      multiplier = size_t{1} << 30;
      break;
    default:
      break;
  }
  if (multiplier != 1) digits.pop_back();
  size_t value = 0;
  if (!absl::SimpleAtoi(digits, &value)) return false;
  *bytes = value * multiplier;
  return true;
}

int Main(int argc, char** argv) {
  // Blocked before any thread starts, so only the signal thread (serve) sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  CLI::App app{
      "fleet-engine: one rank of SparkFleet's built-in tensor/expert-parallel engine. NOT a "
      "language model: a MoE transformer-like decode step on synthetic, seeded weights, for "
      "exercising and measuring a cluster. Rank 0 serves an OpenAI-compatible API."};
  app.require_subcommand(1);
  CommonFlags common;
  auto add_common = [&common](CLI::App* command) {
    command->add_option("--device", common.device, "cpu (Gloo over TCP) or cuda (NCCL)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
    command->add_option("--cuda-device", common.cuda_device,
                        "GPU index; default: rank modulo the visible GPUs");
    command
        ->add_option("--rendezvous-timeout", common.rendezvous_timeout_s,
                     "seconds to wait for every rank to join")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    command
        ->add_option("--collective-timeout", common.collective_timeout_s,
                     "seconds one collective may take before the group counts as broken")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
  };

  ServeFlags serve;
  CLI::App* serve_command = app.add_subcommand("serve", "join the group and serve (rank 0)");
  add_common(serve_command);
  serve_command->add_option("--host", serve.host, "HTTP listen address (rank 0)")
      ->capture_default_str();
  serve_command->add_option("--port", serve.port, "HTTP port (rank 0)")
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  serve_command->add_option("--served-model-name", serve.model_name, "the model id served")
      ->capture_default_str();
  serve_command
      ->add_option("--shutdown-grace", serve.shutdown_grace_s,
                   "seconds running requests get to finish after SIGTERM (new ones are refused)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  serve_command
      ->add_option("--http-idle-timeout", serve.http_idle_timeout_s,
                   "seconds a keep-alive connection may wait for its next request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve_command
      ->add_option("--http-request-timeout", serve.http_request_timeout_s,
                   "seconds a request body may take to arrive after its head")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  serve_command
      ->add_option("--max-request-kib", serve.max_request_kib,
                   "largest request body in KiB; larger ones are answered 413")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  serve_command
      ->add_option("--verify-steps", serve.verify_steps,
                   "before serving, check this many steps of the group against a single-rank "
                   "model on rank 0 (0: no check)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  ModelShape& shape = serve.shape;
  auto positive = [&](const char* name, int* value, const char* help) {
    serve_command->add_option(name, *value, help)
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
  };
  positive("--hidden-size", &shape.hidden_size, "hidden size");
  positive("--num-layers", &shape.num_layers, "layers");
  positive("--num-heads", &shape.num_heads, "attention heads (split across ranks)");
  positive("--num-experts", &shape.num_experts, "routed experts (split across ranks)");
  positive("--experts-per-token", &shape.experts_per_token, "routed experts per token (top-k)");
  positive("--expert-ffn-size", &shape.expert_ffn_size, "FFN width of one expert");
  serve_command->add_option("--shared-experts", shape.shared_experts, "shared experts")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  positive("--vocab-size", &shape.vocab_size, "vocabulary (split across ranks)");
  positive("--max-seq-len", &shape.max_seq_len, "context length per sequence");
  positive("--max-num-seqs", &shape.max_num_seqs, "sequences batched into one step");
  serve_command->add_option("--seed", shape.seed, "weights' seed")->capture_default_str();

  BenchOptions bench;
  std::string min_bytes = "8", max_bytes = "32M", ops = "all_reduce,all_gather";
  int local_ranks = 1;
  CLI::App* bench_command = app.add_subcommand(
      "bench-collectives", "all-reduce and all-gather bandwidth, nccl-tests' layout");
  add_common(bench_command);
  bench_command->add_option("-b,--minbytes", min_bytes, "smallest size (8, 1K, 4M)")
      ->capture_default_str();
  bench_command->add_option("-e,--maxbytes", max_bytes, "largest size")->capture_default_str();
  bench_command->add_option("-f,--stepfactor", bench.factor, "size multiplier")
      ->check(CLI::Range(2, 1024))
      ->capture_default_str();
  bench_command->add_option("-n,--iters", bench.iters, "timed iterations per size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  bench_command->add_option("-w,--warmup_iters", bench.warmup, "untimed iterations per size")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  bench_command->add_option("--ops", ops, "collectives to run, comma-separated")
      ->capture_default_str();
  bench_command
      ->add_option("--local-ranks", local_ranks,
                   "outside a group: run this many ranks as threads of this process")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  // The first SIGTERM/SIGINT stops a serving rank 0 cleanly (its followers are told to exit);
  // anywhere else, or the second time, the process exits at once.
  std::thread([stop_signals] {
    int signo = 0;
    for (;;) {
      if (sigwait(&stop_signals, &signo) != 0) continue;
      Log(LogLevel::kInfo, kComponent, "stopping", {{"signal", strsignal(signo)}});
      Leader* serving = leader.exchange(nullptr);
      if (serving == nullptr) Exit(0);
      // New connections are refused at once; running streams get the grace period to finish
      // before the scheduler stops and fails whatever still runs.
      const int left = serving->server->Drain(absl::Now() + serving->grace);
      Log(LogLevel::kInfo, kComponent, "HTTP drained; stopping the group",
          {{"unfinished_requests", absl::StrCat(left)}});
      serving->scheduler->Stop();
    }
  }).detach();

  if (bench_command->parsed()) {
    if (!ParseBytes(min_bytes, &bench.min_bytes) || !ParseBytes(max_bytes, &bench.max_bytes)) {
      Fail("bad flags",
           absl::InvalidArgumentError(absl::StrCat("sizes must look like 8, 64K, 32M or 1G, not '",
                                                   min_bytes, "' / '", max_bytes, "'")));
    }
    bench.ops = absl::StrSplit(ops, ',', absl::SkipEmpty());
    return BenchCollectives(common, bench, local_ranks);
  }
  return Serve(common, serve);
}

}  // namespace
}  // namespace fleet::native

int main(int argc, char** argv) { fleet::native::Exit(fleet::native::Main(argc, argv)); }
