// RendezvousStore with a fake clock: keys, waiting Gets answered by Set, deadlines kept by
// Tick, tokens, generations, Close and the limits.
#include "controller/rendezvous/rendezvous_store.h"

#include <optional>
#include <string>

#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;

const std::string kToken3(64, '3');
const std::string kToken4(64, '4');

RendezvousCaller Rank(uint32_t rank, uint64_t generation = 4, const std::string& token = kToken4) {
  return {.group = "demo", .generation = generation, .rank = rank, .token = token};
}

// Holds what a Get was answered, if anything yet.
struct Answer {
  std::optional<absl::StatusOr<std::string>> result;
  RendezvousStore::GetCallback Callback() {
    return [this](absl::StatusOr<std::string> r) { result = std::move(r); };
  }
};

class RendezvousStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { store_.Open("demo", 4, kToken4); }

  FakeClock clock_;
  RendezvousStore store_{&clock_};
};

TEST_F(RendezvousStoreTest, GetOfASetKeyIsAnsweredAtOnce) {
  const std::string id("\0\x01id-bytes", 10);  // any bytes, NUL included
  ASSERT_TRUE(store_.Set(Rank(0), "nccl-id", id).ok());
  Answer a;
  store_.Get(Rank(1), "nccl-id", clock_.Now() + absl::Seconds(10), a.Callback());
  ASSERT_TRUE(a.result.has_value());
  ASSERT_TRUE(a.result->ok()) << a.result->status();
  EXPECT_EQ(**a.result, id);
  // A later Set replaces the value.
  ASSERT_TRUE(store_.Set(Rank(0), "nccl-id", "second").ok());
  Answer b;
  store_.Get(Rank(2), "nccl-id", clock_.Now(), b.Callback());
  EXPECT_EQ(**b.result, "second");
}

TEST_F(RendezvousStoreTest, WaitingGetIsAnsweredBySet) {
  Answer a, other;
  store_.Get(Rank(1), "nccl-id", clock_.Now() + absl::Seconds(10), a.Callback());
  store_.Get(Rank(2), "gloo", clock_.Now() + absl::Seconds(10), other.Callback());
  EXPECT_FALSE(a.result.has_value());
  EXPECT_EQ(store_.waiting(), 2u);
  ASSERT_TRUE(store_.Set(Rank(0), "nccl-id", "id").ok());
  ASSERT_TRUE(a.result.has_value());
  EXPECT_EQ(**a.result, "id");
  EXPECT_FALSE(other.result.has_value());  // another key's Get still waits
  EXPECT_EQ(store_.waiting(), 1u);
}

TEST_F(RendezvousStoreTest, DeadlineIsKeptByTickAndNamesTheKey) {
  Answer a;
  store_.Get(Rank(1), "nccl-id", clock_.Now() + absl::Seconds(2), a.Callback());
  clock_.Advance(absl::Seconds(1));
  store_.Tick();
  EXPECT_FALSE(a.result.has_value());
  clock_.Advance(absl::Seconds(1));
  store_.Tick();
  ASSERT_TRUE(a.result.has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(a.result->status())) << a.result->status();
  EXPECT_THAT(a.result->status().message(), HasSubstr("'nccl-id'"));
  EXPECT_EQ(store_.waiting(), 0u);
  // A deadline already past is answered at once.
  Answer late;
  store_.Get(Rank(1), "nccl-id", clock_.Now(), late.Callback());
  ASSERT_TRUE(late.result.has_value());
  EXPECT_TRUE(absl::IsDeadlineExceeded(late.result->status()));
}

TEST_F(RendezvousStoreTest, WrongTokenIsPermissionDeniedAndUnknownGroupNotFound) {
  absl::Status st = store_.Set(Rank(0, 4, kToken3), "k", "v");
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("FLEET_RENDEZVOUS_TOKEN"));
  EXPECT_THAT(st.message(), ::testing::Not(HasSubstr(kToken3)));
  Answer a;
  store_.Get(Rank(1, 4, ""), "k", clock_.Now() + absl::Seconds(1), a.Callback());
  EXPECT_TRUE(absl::IsPermissionDenied(a.result->status()));
  RendezvousCaller stranger = Rank(0);
  stranger.group = "other";
  EXPECT_TRUE(absl::IsNotFound(store_.Set(stranger, "k", "v")));
  EXPECT_EQ(store_.waiting(), 0u);
}

TEST_F(RendezvousStoreTest, OldGenerationIsAbortedNamingBothGenerations) {
  store_.Open("demo", 3, kToken3);
  Answer waiting;
  store_.Get(Rank(1, 3, kToken3), "nccl-id", clock_.Now() + absl::Seconds(10), waiting.Callback());
  ASSERT_TRUE(store_.Set(Rank(0, 3, kToken3), "gloo", "addr").ok());
  store_.Open("demo", 4, kToken4);
  // The replaced generation's waiter learns it at once; its keys are gone.
  ASSERT_TRUE(waiting.result.has_value());
  EXPECT_TRUE(absl::IsAborted(waiting.result->status())) << waiting.result->status();
  absl::Status st = store_.Set(Rank(1, 3, kToken3), "k", "v");
  EXPECT_TRUE(absl::IsAborted(st)) << st;
  EXPECT_EQ(st.message(),
            "rank 1 of group demo is from generation 3; the group is at generation 4: it was "
            "replaced, exit");
  Answer gone;
  store_.Get(Rank(1), "gloo", clock_.Now(), gone.Callback());
  EXPECT_TRUE(absl::IsDeadlineExceeded(gone.result->status()));
}

TEST_F(RendezvousStoreTest, CloseAbortsWaitingGetsAndLaterRequests) {
  Answer a;
  store_.Get(Rank(1), "nccl-id", clock_.Now() + absl::Seconds(10), a.Callback());
  store_.Close("demo", 3);  // another generation: nothing happens
  EXPECT_FALSE(a.result.has_value());
  store_.Close("demo", 4);
  ASSERT_TRUE(a.result.has_value());
  EXPECT_TRUE(absl::IsAborted(a.result->status()));
  EXPECT_THAT(a.result->status().message(), HasSubstr("generation 4 of group demo ended"));
  absl::Status st = store_.Set(Rank(0), "nccl-id", "id");
  EXPECT_TRUE(absl::IsAborted(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("generation 4 of group demo ended"));
}

TEST_F(RendezvousStoreTest, ReopeningTheSameGenerationKeepsItsKeys) {
  ASSERT_TRUE(store_.Set(Rank(0), "nccl-id", "id").ok());
  store_.Open("demo", 4, kToken4);
  Answer a;
  store_.Get(Rank(1), "nccl-id", clock_.Now(), a.Callback());
  EXPECT_EQ(**a.result, "id");
}

TEST_F(RendezvousStoreTest, CallbacksRunOutsideTheLock) {
  // A callback that calls the store again would deadlock if it ran under the store's lock.
  size_t seen = 99;
  store_.Get(Rank(1), "nccl-id", clock_.Now() + absl::Seconds(1),
             [&](absl::StatusOr<std::string>) { seen = store_.waiting(); });
  ASSERT_TRUE(store_.Set(Rank(0), "nccl-id", "id").ok());
  EXPECT_EQ(seen, 0u);
}

TEST(RendezvousLimitsTest, KeysValuesAndWaitersAreBounded) {
  FakeClock clock;
  RendezvousStore store(
      &clock, {.max_keys = 2, .max_key_bytes = 8, .max_value_bytes = 4, .max_waiting = 1});
  store.Open("demo", 4, kToken4);
  ASSERT_TRUE(store.Set(Rank(0), "a", "1234").ok());
  ASSERT_TRUE(store.Set(Rank(0), "b", "").ok());
  absl::Status st = store.Set(Rank(0), "c", "1");
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("already holds 2 rendezvous keys"));
  EXPECT_TRUE(store.Set(Rank(0), "a", "5678").ok());  // replacing a key adds none
  st = store.Set(Rank(0), "b", "12345");
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("is 5 bytes; a value may hold at most 4"));
  EXPECT_TRUE(absl::IsInvalidArgument(store.Set(Rank(0), "", "1")));
  EXPECT_TRUE(absl::IsInvalidArgument(store.Set(Rank(0), "123456789", "1")));

  Answer first, second;
  store.Get(Rank(1), "x", clock.Now() + absl::Seconds(1), first.Callback());
  store.Get(Rank(2), "y", clock.Now() + absl::Seconds(1), second.Callback());
  EXPECT_FALSE(first.result.has_value());
  ASSERT_TRUE(second.result.has_value());
  EXPECT_TRUE(absl::IsResourceExhausted(second.result->status()));
}

TEST(RendezvousShutdownTest, WaitingAndLaterGetsAreUnavailable) {
  FakeClock clock;
  RendezvousStore store(&clock);
  store.Open("demo", 4, kToken4);
  Answer waiting, later;
  store.Get(Rank(1), "k", clock.Now() + absl::Seconds(10), waiting.Callback());
  store.Shutdown();
  ASSERT_TRUE(waiting.result.has_value());
  EXPECT_TRUE(absl::IsUnavailable(waiting.result->status()));
  store.Get(Rank(1), "k", clock.Now() + absl::Seconds(10), later.Callback());
  ASSERT_TRUE(later.result.has_value());
  EXPECT_TRUE(absl::IsUnavailable(later.result->status()));
}

}  // namespace
}  // namespace fleet::controller
