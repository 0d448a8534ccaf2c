// The scheduler over real Gloo groups of CPU models on 127.0.0.1: continuous batching, the
// leader's schedule followed by other ranks, and a group that breaks failing instead of hanging.
#include "engine/server/scheduler.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "engine/server/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/server/test_group.h"

namespace fleet::native {
namespace {

using ::testing::HasSubstr;
using testing::MakeGroup;
using testing::SmallShape;

// Runs each sequence to its end and returns its tokens.
std::vector<int> Drain(Sequence& sequence) {
  std::vector<int> tokens;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  Sequence::Update update;
  while (!update.done && absl::Now() < deadline) {
    update = sequence.Next(deadline);
    tokens.insert(tokens.end(), update.tokens.begin(), update.tokens.end());
  }
  EXPECT_TRUE(update.done);
  EXPECT_TRUE(update.status.ok()) << update.status;
  EXPECT_EQ(update.finish_reason, "length");
  return tokens;
}

std::vector<int> Prompt(int seed, int length) {
  std::vector<int> prompt;
  for (int i = 0; i < length; ++i) prompt.push_back((seed * 31 + i * 7) % 128);
  return prompt;
}

// Counts steps through the step histogram's count line.
int64_t Steps(const Metrics& metrics) {
  const std::string text = metrics.Render();
  const std::string key = "fleet_engine:step_seconds_count{model_name=\"m\"} ";
  size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + key.size()));
}

struct Served {
  std::vector<std::vector<int>> tokens;
  int64_t steps = 0;
};

// Submits every prompt before the leader starts (so they are all waiting at its first step),
// serves them on a group of `world` ranks, and stops.
Served Serve(int world, const ModelShape& shape, const std::vector<std::vector<int>>& prompts,
             int max_tokens) {
  auto group = MakeGroup(world, shape);
  std::vector<std::unique_ptr<Metrics>> metrics;
  std::vector<std::unique_ptr<Scheduler>> schedulers;
  for (int rank = 0; rank < world; ++rank) {
    metrics.push_back(std::make_unique<Metrics>("m"));
    schedulers.push_back(std::make_unique<Scheduler>(
        group[rank].model.get(), group[rank].collectives.get(), metrics.back().get(),
        SchedulerOptions{.max_num_seqs = shape.max_num_seqs,
                         .max_seq_len = shape.max_seq_len,
                         .vocab_size = shape.vocab_size,
                         .idle_beat = absl::Milliseconds(50)}));
  }
  std::vector<std::shared_ptr<Sequence>> sequences;
  for (const auto& prompt : prompts) {
    auto sequence = schedulers[0]->Submit(prompt, max_tokens);
    EXPECT_TRUE(sequence.ok()) << sequence.status();
    sequences.push_back(*sequence);
  }
  std::vector<absl::Status> results(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      results[rank] = rank == 0 ? schedulers[0]->RunLeader() : schedulers[rank]->RunFollower();
    });
  }
  Served served;
  for (auto& sequence : sequences) served.tokens.push_back(Drain(*sequence));
  schedulers[0]->Stop();
  for (auto& thread : threads) thread.join();
  for (const absl::Status& result : results) EXPECT_TRUE(result.ok()) << result;
  served.steps = Steps(*metrics[0]);
  return served;
}

TEST(SchedulerTest, ConcurrentRequestsShareSteps) {
  ModelShape shape = SmallShape();
  const int prompt_len = 5, max_tokens = 6;
  std::vector<std::vector<int>> prompts = {Prompt(1, prompt_len), Prompt(2, prompt_len),
                                           Prompt(3, prompt_len), Prompt(4, prompt_len)};
  Served served = Serve(1, shape, prompts, max_tokens);
  // Every sequence needs prompt_len + max_tokens - 1 steps; batched, four take no more.
  EXPECT_EQ(served.steps, prompt_len + max_tokens - 1);
  for (const auto& tokens : served.tokens) EXPECT_EQ(tokens.size(), size_t{max_tokens});
}

TEST(SchedulerTest, RequestsBeyondMaxNumSeqsWaitForASlot) {
  ModelShape shape = SmallShape();
  shape.max_num_seqs = 2;
  const int prompt_len = 3, max_tokens = 4;
  std::vector<std::vector<int>> prompts = {Prompt(1, prompt_len), Prompt(2, prompt_len),
                                           Prompt(3, prompt_len), Prompt(4, prompt_len)};
  Served served = Serve(1, shape, prompts, max_tokens);
  EXPECT_EQ(served.steps, 2 * (prompt_len + max_tokens - 1));
}

TEST(SchedulerTest, BatchedAnswersEqualAnswersAlone) {
  ModelShape shape = SmallShape();
  std::vector<std::vector<int>> prompts = {Prompt(1, 4), Prompt(2, 7), Prompt(3, 2)};
  Served together = Serve(1, shape, prompts, 5);
  for (size_t i = 0; i < prompts.size(); ++i) {
    Served alone = Serve(1, shape, {prompts[i]}, 5);
    EXPECT_EQ(alone.tokens[0], together.tokens[i]) << "prompt " << i;
  }
}

TEST(SchedulerTest, TwoRankGroupAnswersLikeOneRank) {
  ModelShape shape = SmallShape();
  std::vector<std::vector<int>> prompts = {Prompt(5, 6), Prompt(6, 3)};
  Served one = Serve(1, shape, prompts, 8);
  Served two = Serve(2, shape, prompts, 8);
  EXPECT_EQ(one.tokens, two.tokens);
}

TEST(SchedulerTest, RefusesWhatCannotFit) {
  ModelShape shape = SmallShape();
  auto group = MakeGroup(1, shape);
  Metrics metrics("m");
  Scheduler scheduler(group[0].model.get(), group[0].collectives.get(), &metrics,
                      {.max_num_seqs = 4, .max_seq_len = 64, .vocab_size = 128, .max_waiting = 1});
  EXPECT_EQ(scheduler.Submit({}, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.Submit({1}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.Submit({500}, 4).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status too_long = scheduler.Submit(Prompt(1, 60), 10).status();
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.message(), HasSubstr("exceeds the model's context of 64"));
  ASSERT_TRUE(scheduler.Submit({1, 2}, 4).ok());
  EXPECT_EQ(scheduler.Submit({1, 2}, 4).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(SchedulerTest, StopFailsQueuedRequestsAndReleasesFollowers) {
  ModelShape shape = SmallShape();
  auto group = MakeGroup(2, shape);
  Metrics m0("m"), m1("m");
  Scheduler leader(group[0].model.get(), group[0].collectives.get(), &m0,
                   {.max_num_seqs = 4,
                    .max_seq_len = 64,
                    .vocab_size = 128,
                    .idle_beat = absl::Milliseconds(20)});
  Scheduler follower(group[1].model.get(), group[1].collectives.get(), &m1,
                     {.max_num_seqs = 4, .max_seq_len = 64, .vocab_size = 128});
  absl::Status follower_result = absl::UnknownError("not run");
  std::thread follower_thread([&] { follower_result = follower.RunFollower(); });
  // Stopped before it runs: the leader's first act is to tell the follower to exit.
  auto queued = leader.Submit({1, 2, 3}, 4);
  ASSERT_TRUE(queued.ok());
  leader.Stop();
  EXPECT_TRUE(leader.RunLeader().ok());
  follower_thread.join();
  EXPECT_TRUE(follower_result.ok()) << follower_result;
  Sequence::Update update = (*queued)->Next(absl::Now() + absl::Seconds(5));
  EXPECT_TRUE(update.done);
  EXPECT_EQ(update.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(leader.healthy());
}

TEST(SchedulerTest, FollowerFailsWhenTheLeaderIsGone) {
  ModelShape shape = SmallShape();
  auto group = MakeGroup(2, shape, absl::Seconds(1));
  Metrics metrics("m");
  Scheduler follower(group[1].model.get(), group[1].collectives.get(), &metrics,
                     {.max_num_seqs = 4, .max_seq_len = 64, .vocab_size = 128});
  // Rank 0 leaves the group without a word: the follower must not wait forever.
  group[0].model.reset();
  group[0].collectives.reset();
  const absl::Time start = absl::Now();
  absl::Status status = follower.RunFollower();
  EXPECT_FALSE(status.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

}  // namespace
}  // namespace fleet::native
