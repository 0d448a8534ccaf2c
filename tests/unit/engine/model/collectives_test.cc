// GlooCollectives over loopback TCP, with groups of 1, 2 and 4 ranks as threads: every collective
// against a reference computed here, and the errors a missing or departed rank causes.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "engine/collectives/gloo_collectives.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/gloo_group.h"

namespace fleet::native {
namespace {

using ::fleet::native::testing::LoopbackOptions;
using ::fleet::native::testing::RunGroup;
using ::fleet::native::testing::UniquePrefix;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// A value rank `rank` contributes at `index`: small integers, so float sums are exact.
int32_t Contribution(int rank, size_t index) {
  return static_cast<int32_t>((rank + 1) * 100 + static_cast<int>(index % 37)) - 50;
}

class GroupSizeTest : public ::testing::TestWithParam<int> {};

TEST_P(GroupSizeTest, AllReduceSumFloatAndInt) {
  const int size = GetParam();
  // Large enough that Gloo's ring splits it into several segments per rank.
  const size_t count = 70001;
  std::vector<int32_t> expected(count, 0);
  for (int r = 0; r < size; ++r) {
    for (size_t i = 0; i < count; ++i) expected[i] += Contribution(r, i);
  }
  RunGroup(size, [&](int rank, Collectives& comm) {
    std::vector<float> f(count);
    std::vector<int32_t> n(count);
    for (size_t i = 0; i < count; ++i) {
      n[i] = Contribution(rank, i);
      f[i] = static_cast<float>(n[i]);
    }
    ASSERT_TRUE(comm.AllReduceSum(f.data(), count, DType::kFloat32).ok());
    ASSERT_TRUE(comm.AllReduceSum(n.data(), count, DType::kInt32).ok());
    EXPECT_THAT(n, ElementsAreArray(expected));
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(f[i], static_cast<float>(expected[i])) << "rank " << rank << " index " << i;
    }
  });
}

TEST_P(GroupSizeTest, AllGatherAndInPlace) {
  const int size = GetParam();
  const size_t count = 5;
  RunGroup(size, [&](int rank, Collectives& comm) {
    std::vector<int32_t> send(count);
    for (size_t i = 0; i < count; ++i) send[i] = Contribution(rank, i);
    std::vector<int32_t> expected;
    for (int r = 0; r < size; ++r) {
      for (size_t i = 0; i < count; ++i) expected.push_back(Contribution(r, i));
    }
    std::vector<int32_t> recv(count * size, -1);
    ASSERT_TRUE(comm.AllGather(send.data(), recv.data(), count, DType::kInt32).ok());
    EXPECT_THAT(recv, ElementsAreArray(expected));

    // `send` may be the rank's own block of `recv`.
    std::vector<float> in_place(count * size, -1.0f);
    for (size_t i = 0; i < count; ++i) {
      in_place[rank * count + i] = static_cast<float>(Contribution(rank, i));
    }
    ASSERT_TRUE(
        comm.AllGather(&in_place[rank * count], in_place.data(), count, DType::kFloat32).ok());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(in_place[i], static_cast<float>(expected[i]));
    }
  });
}

TEST_P(GroupSizeTest, AllToAll) {
  const int size = GetParam();
  const size_t count = 3;
  RunGroup(size, [&](int rank, Collectives& comm) {
    // Element i of the block for rank q from rank p: p * 1000 + q * 10 + i.
    std::vector<float> send(count * size);
    for (int q = 0; q < size; ++q) {
      for (size_t i = 0; i < count; ++i) send[q * count + i] = rank * 1000 + q * 10 + i;
    }
    std::vector<float> recv(count * size);
    ASSERT_TRUE(comm.AllToAll(send.data(), recv.data(), count, DType::kFloat32).ok());
    for (int p = 0; p < size; ++p) {
      for (size_t i = 0; i < count; ++i) {
        EXPECT_EQ(recv[p * count + i], static_cast<float>(p * 1000 + rank * 10 + i));
      }
    }
  });
}

// How many elements rank p sends rank q: uneven, and zero for some pairs (and for every pair of
// the last rank's sends).
size_t PairCount(int p, int q, int size) {
  if (size > 1 && p == size - 1) return 0;
  return static_cast<size_t>((p + 2 * q) % 3) * (q + 1);
}

TEST_P(GroupSizeTest, AllToAllVUnevenAndZeroCounts) {
  const int size = GetParam();
  RunGroup(size, [&](int rank, Collectives& comm) {
    std::vector<size_t> send_counts(size), recv_counts(size);
    std::vector<int32_t> send;
    std::vector<int32_t> expected;
    for (int q = 0; q < size; ++q) {
      send_counts[q] = PairCount(rank, q, size);
      for (size_t i = 0; i < send_counts[q]; ++i) send.push_back(rank * 1000 + q * 10 + i);
    }
    for (int p = 0; p < size; ++p) {
      recv_counts[p] = PairCount(p, rank, size);
      for (size_t i = 0; i < recv_counts[p]; ++i) expected.push_back(p * 1000 + rank * 10 + i);
    }
    std::vector<int32_t> recv(expected.size(), -1);
    ASSERT_TRUE(
        comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts, DType::kInt32).ok());
    EXPECT_THAT(recv, ElementsAreArray(expected));

    // The same exchange in float32, one more time to show the group stays in step.
    std::vector<float> fsend(send.begin(), send.end());
    std::vector<float> frecv(expected.size(), -1.0f);
    ASSERT_TRUE(
        comm.AllToAllV(fsend.data(), send_counts, frecv.data(), recv_counts, DType::kFloat32).ok());
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(frecv[i], expected[i]);
  });
}

TEST_P(GroupSizeTest, BroadcastFromLastRank) {
  const int size = GetParam();
  const int root = size - 1;
  const size_t count = 1000;
  RunGroup(size, [&](int rank, Collectives& comm) {
    std::vector<float> f(count, -1.0f);
    std::vector<int32_t> n(count, -1);
    if (rank == root) {
      for (size_t i = 0; i < count; ++i) {
        f[i] = 0.5f * static_cast<float>(i);
        n[i] = static_cast<int32_t>(i) * 3;
      }
    }
    ASSERT_TRUE(comm.Broadcast(f.data(), count, DType::kFloat32, root).ok());
    ASSERT_TRUE(comm.Broadcast(n.data(), count, DType::kInt32, root).ok());
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(f[i], 0.5f * static_cast<float>(i));
      ASSERT_EQ(n[i], static_cast<int32_t>(i) * 3);
    }
  });
}

TEST_P(GroupSizeTest, BarrierWaitsForEveryRank) {
  const int size = GetParam();
  std::atomic<int> arrived{0};
  RunGroup(size, [&](int rank, Collectives& comm) {
    // The last rank arrives late (the sleep is the lateness under test); nobody may leave the
    // barrier before it arrived.
    if (rank == size - 1) absl::SleepFor(absl::Milliseconds(50));
    arrived++;
    ASSERT_TRUE(comm.Barrier().ok());
    EXPECT_EQ(arrived.load(), size) << "rank " << rank << " left the barrier early";
    EXPECT_TRUE(comm.Synchronize().ok());
  });
}

TEST_P(GroupSizeTest, BFloat16IsRefused) {
  const int size = GetParam();
  RunGroup(size, [&](int, Collectives& comm) {
    uint16_t data[4] = {};
    absl::Status status = comm.AllReduceSum(data, 4, DType::kBFloat16);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("bfloat16 collectives need the NCCL backend"));
    // Refusing touched no socket: the group still works.
    int32_t one = 1;
    ASSERT_TRUE(comm.AllReduceSum(&one, 1, DType::kInt32).ok());
    EXPECT_EQ(one, size);
  });
}

INSTANTIATE_TEST_SUITE_P(Sizes, GroupSizeTest, ::testing::Values(1, 2, 4),
                         [](const auto& info) { return absl::StrCat(info.param, "ranks"); });

TEST(GlooCollectivesTest, BuffersAreAlignedHostMemory) {
  InMemoryKvStore store;
  auto comm = GlooCollectives::Create(&store, 0, 1, LoopbackOptions(UniquePrefix()));
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->Describe(), "gloo/tcp lo");
  EXPECT_EQ((*comm)->rank(), 0);
  EXPECT_EQ((*comm)->size(), 1);
  auto buffer = (*comm)->Allocate(100);
  ASSERT_TRUE(buffer.ok());
  EXPECT_EQ((*buffer)->bytes(), 100u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*buffer)->data()) % 64, 0u);
  std::vector<char> in(100), out(100);
  std::iota(in.begin(), in.end(), 0);
  ASSERT_TRUE((*comm)->Upload(**buffer, in.data(), in.size()).ok());
  ASSERT_TRUE((*comm)->Download(out.data(), **buffer, out.size()).ok());
  EXPECT_EQ(in, out);
  EXPECT_EQ((*comm)->Upload(**buffer, in.data(), 101).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GlooCollectivesTest, RejectsBadOptions) {
  InMemoryKvStore store;
  auto both = GlooCollectives::Create(&store, 0, 1, {.interface = "lo", .address = "127.0.0.1"});
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(both.status().message()), HasSubstr("exactly one of interface"));
  auto rank = GlooCollectives::Create(&store, 2, 2, LoopbackOptions(UniquePrefix()));
  EXPECT_EQ(rank.status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = GlooCollectives::Create(&store, 0, 1, {.interface = "fleet-no-such0"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("fleet-no-such0"));
}

TEST(GlooCollectivesTest, RankThatNeverStartsFailsConnectWithinTimeout) {
  InMemoryKvStore store;
  const absl::Time start = absl::Now();
  auto comm =
      GlooCollectives::Create(&store, 0, 2, LoopbackOptions(UniquePrefix(), absl::Seconds(1)));
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("rank 1"));
  EXPECT_LT(elapsed, absl::Seconds(5));
}

TEST(GlooCollectivesTest, RankThatNeverArrivesFailsCollectiveWithinTimeout) {
  absl::Notification rank0_done;
  absl::Status rank0_status;
  absl::Duration elapsed;
  RunGroup(
      2,
      [&](int rank, Collectives& comm) {
        if (rank == 1) {
          // Connected, alive, but never joins the collective.
          rank0_done.WaitForNotificationWithTimeout(absl::Seconds(20));
          return;
        }
        std::vector<float> data(16, 1.0f);
        const absl::Time start = absl::Now();
        rank0_status = comm.AllReduceSum(data.data(), data.size(), DType::kFloat32);
        elapsed = absl::Now() - start;
        // The group is broken from now on, without touching the network.
        absl::Status again = comm.Barrier();
        EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
        EXPECT_THAT(std::string(again.message()), HasSubstr("broken"));
        rank0_done.Notify();
      },
      absl::Seconds(1));
  EXPECT_EQ(rank0_status.code(), absl::StatusCode::kDeadlineExceeded) << rank0_status;
  EXPECT_THAT(std::string(rank0_status.message()), HasSubstr("allreduce"));
  EXPECT_GE(elapsed, absl::Milliseconds(900));
  EXPECT_LT(elapsed, absl::Seconds(5));
}

TEST(GlooCollectivesTest, PeerThatExitsIsUnavailableNamingIt) {
  InMemoryKvStore store;
  const std::string prefix = UniquePrefix();
  absl::Status status;
  absl::Duration elapsed;
  std::thread peer([&] {
    auto comm = GlooCollectives::Create(&store, 1, 2, LoopbackOptions(prefix, absl::Seconds(5)));
    ASSERT_TRUE(comm.ok()) << comm.status();
    ASSERT_TRUE((*comm)->Barrier().ok());
    // Leaves the group: its sockets close, as when a rank's process exits.
  });
  auto comm = GlooCollectives::Create(&store, 0, 2, LoopbackOptions(prefix, absl::Seconds(5)));
  ASSERT_TRUE(comm.ok()) << comm.status();
  ASSERT_TRUE((*comm)->Barrier().ok());
  peer.join();
  std::vector<float> data(1 << 16, 1.0f);
  const absl::Time start = absl::Now();
  status = (*comm)->AllReduceSum(data.data(), data.size(), DType::kFloat32);
  elapsed = absl::Now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("rank 1"));
  // Well before the 5 s timeout: a closed connection is noticed at once.
  EXPECT_LT(elapsed, absl::Seconds(2));
}

}  // namespace
}  // namespace fleet::native
