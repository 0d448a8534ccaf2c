// Runs the ranks of a Gloo group as threads of one test, over an InMemoryKvStore on the loopback
// interface: what the collectives and model tests build their groups with.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "engine/collectives/gloo_collectives.h"
#include "engine/rendezvous/kv_store.h"
#include "gtest/gtest.h"

namespace fleet::native::testing {

// Options for one rank of a test group: loopback only, a prefix of its own.
inline GlooOptions LoopbackOptions(const std::string& prefix,
                                   absl::Duration timeout = absl::Seconds(10)) {
  return {.interface = "lo", .key_prefix = prefix, .connect_timeout = timeout, .timeout = timeout};
}

// A key prefix no other group of this process uses.
inline std::string UniquePrefix() {
  static std::atomic<int> next{0};
  return absl::StrCat("test-group-", next++, "/");
}

// Connects `size` ranks, each on its own thread (Gloo's connect and collectives block), and runs
// body(rank, collectives) on each; returns when every rank has finished.
inline void RunGroup(int size, const std::function<void(int, Collectives&)>& body,
                     absl::Duration timeout = absl::Seconds(10)) {
  InMemoryKvStore store;
  const std::string prefix = UniquePrefix();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      auto comm = GlooCollectives::Create(&store, rank, size, LoopbackOptions(prefix, timeout));
      ASSERT_TRUE(comm.ok()) << "rank " << rank << ": " << comm.status();
      body(rank, **comm);
    });
  }
  for (std::thread& thread : threads) thread.join();
}

}  // namespace fleet::native::testing
