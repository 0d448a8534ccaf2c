// The executors: ThreadPool runs tasks on several threads at once and finishes its queue on
// shutdown; SerialQueue keeps one key's tasks in order, one at a time, while other keys go
// ahead, checked step by step on a FakeExecutor.
#include "common/thread_pool.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "common/fake_executor.h"
#include "common/serial_queue.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

using ::testing::ElementsAre;

TEST(ThreadPoolTest, RunsAsManyTasksAtOnceAsItHasThreads) {
  constexpr int kThreads = 4;
  ThreadPool pool(kThreads);
  // Each task waits for all of them to have started: that returns only if they run at once.
  absl::BlockingCounter started(kThreads);
  absl::Notification go;
  absl::BlockingCounter done(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    pool.Post([&] {
      started.DecrementCount();
      go.WaitForNotification();
      done.DecrementCount();
    });
  }
  started.Wait();
  go.Notify();
  done.Wait();
}

TEST(ThreadPoolTest, ShutdownRunsWhatIsQueuedAndLaterPostsRunInline) {
  ThreadPool pool(1);
  absl::Notification release;
  pool.Post([&] { release.WaitForNotification(); });
  std::atomic<int> ran{0};
  for (int i = 0; i < 3; ++i) pool.Post([&] { ++ran; });
  release.Notify();
  pool.Shutdown();
  EXPECT_EQ(ran.load(), 3);
  bool inline_ran = false;
  pool.Post([&] { inline_ran = true; });
  EXPECT_TRUE(inline_ran);
  pool.Shutdown();  // idempotent
}

TEST(ThreadPoolTest, ZeroThreadsStillMakesProgress) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.size(), 1);
  absl::Notification ran;
  pool.Post([&] { ran.Notify(); });
  ran.WaitForNotification();
}

TEST(SerialQueueTest, OneKeyRunsInOrderOneAtATime) {
  FakeExecutor executor;
  SerialQueue queue(&executor);
  std::vector<std::string> ran;
  for (const char* step : {"apply", "stop", "apply again"}) {
    queue.Post("echo", [&ran, step] { ran.push_back(step); });
  }
  // Only the first is on the executor: the others wait without holding a thread.
  EXPECT_EQ(executor.pending(), 1u);
  EXPECT_EQ(queue.busy_keys(), 1u);
  ASSERT_TRUE(executor.RunNext());
  EXPECT_THAT(ran, ElementsAre("apply"));
  EXPECT_EQ(executor.pending(), 1u);
  EXPECT_EQ(executor.RunAll(), 2);
  EXPECT_THAT(ran, ElementsAre("apply", "stop", "apply again"));
  EXPECT_EQ(queue.busy_keys(), 0u);
}

TEST(SerialQueueTest, OtherKeysGoAheadOfABusyOne) {
  FakeExecutor executor;
  SerialQueue queue(&executor);
  std::vector<std::string> ran;
  queue.Post("a", [&] { ran.push_back("a1"); });
  queue.Post("a", [&] { ran.push_back("a2"); });
  queue.Post("b", [&] { ran.push_back("b1"); });
  queue.Post("c", [&] { ran.push_back("c1"); });
  // a1, b1 and c1 are runnable at once; a2 waits for a1.
  ASSERT_EQ(executor.pending(), 3u);
  ASSERT_TRUE(executor.Run(2));
  ASSERT_TRUE(executor.Run(1));
  EXPECT_THAT(ran, ElementsAre("c1", "b1"));
  EXPECT_EQ(executor.pending(), 1u);
  EXPECT_EQ(executor.RunAll(), 2);
  EXPECT_THAT(ran, ElementsAre("c1", "b1", "a1", "a2"));
}

TEST(SerialQueueTest, AKeyThatWentIdleStartsAgainAtOnce) {
  FakeExecutor executor;
  SerialQueue queue(&executor);
  int ran = 0;
  queue.Post("a", [&] { ++ran; });
  EXPECT_EQ(executor.RunAll(), 1);
  queue.Post("a", [&] { ++ran; });
  EXPECT_EQ(executor.pending(), 1u);
  EXPECT_EQ(executor.RunAll(), 1);
  EXPECT_EQ(ran, 2);
}

// On a real pool: while one key's task is held, another key's tasks run to completion, and
// the held key's next task has not started.
TEST(SerialQueueTest, OnAPoolAHeldKeyHoldsUpOnlyItself) {
  ThreadPool pool(2);
  SerialQueue queue(&pool);
  absl::Notification a1_started, release_a1, b_done;
  std::atomic<bool> a2_ran{false};
  queue.Post("a", [&] {
    a1_started.Notify();
    release_a1.WaitForNotification();
  });
  queue.Post("a", [&] { a2_ran = true; });
  a1_started.WaitForNotification();
  queue.Post("b", [&] { b_done.Notify(); });
  b_done.WaitForNotification();
  EXPECT_FALSE(a2_ran.load());
  release_a1.Notify();
  pool.Shutdown();
  EXPECT_TRUE(a2_ran.load());
}

}  // namespace
}  // namespace fleet
