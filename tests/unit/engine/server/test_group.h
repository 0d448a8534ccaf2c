// A Gloo group of N ranks as threads of one test process on the loopback, with a CPU model per
// rank: what the server tests run the scheduler and the API on.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model/model.h"
#include "engine/rendezvous/kv_store.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/gloo_group.h"

namespace fleet::native::testing {

struct TestRank {
  std::unique_ptr<Collectives> collectives;
  std::unique_ptr<Model> model;
};

// A small shape that steps in well under a millisecond on one core.
inline ModelShape SmallShape() {
  return {.hidden_size = 64,
          .num_layers = 2,
          .num_heads = 4,
          .num_experts = 4,
          .experts_per_token = 2,
          .expert_ffn_size = 32,
          .shared_experts = 1,
          .vocab_size = 128,
          .max_seq_len = 64,
          .max_num_seqs = 4,
          .seed = 7};
}

// Connects `n` ranks (each on its own thread, as Gloo needs) and builds their models.
inline std::vector<TestRank> MakeGroup(int n, const ModelShape& shape,
                                       absl::Duration timeout = absl::Seconds(10)) {
  // Read only while the ranks connect.
  InMemoryKvStore store;
  const std::string prefix = UniquePrefix();
  std::vector<TestRank> ranks(n);
  std::vector<absl::Status> errors(n);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < n; ++rank) {
    threads.emplace_back([&, rank] {
      auto gloo = GlooCollectives::Create(&store, rank, n, LoopbackOptions(prefix, timeout));
      if (!gloo.ok()) {
        errors[rank] = gloo.status();
        return;
      }
      ranks[rank].collectives = *std::move(gloo);
      auto model = CreateCpuModel(shape, ranks[rank].collectives.get());
      if (!model.ok()) {
        errors[rank] = model.status();
        return;
      }
      ranks[rank].model = *std::move(model);
    });
  }
  for (auto& thread : threads) thread.join();
  for (const absl::Status& error : errors) EXPECT_TRUE(error.ok()) << error;
  return ranks;
}

}  // namespace fleet::native::testing
