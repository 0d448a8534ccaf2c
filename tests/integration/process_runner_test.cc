// The real process runner: exec errors reported back, environment, working directory, output to
// a file and to pipes, process groups, resource limits the hard limit forbids, attaching by pid
// and start time, and timeouts. Starts real (short) processes.
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/process/proc_stat.h"
#include "common/process/process_runner_impl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(5);

// A fresh directory of this test process under gtest's temporary directory.
std::string FreshDir(absl::string_view name) {
  std::string dir = absl::StrCat(::testing::TempDir(), "fleet-runner-", ::getpid(), "-", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(ProcessRunnerTest, RunCapturesStdoutStderrAndTheExitStatus) {
  ProcessRunnerImpl runner;
  auto run = runner.Run({.argv = {"sh", "-c", "echo out; echo err >&2; exit 3"}}, kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->out, "out\n");
  EXPECT_EQ(run->err, "err\n");
  EXPECT_FALSE(run->ok());
  EXPECT_EQ(DescribeWaitStatus(run->wait_status), "exited with status 3");

  auto merged = runner.Run(
      {.argv = {"sh", "-c", "echo one; echo two >&2"}, .stderr_to = OutputTo::kStdout}, kWait);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->out, "one\ntwo\n");
  EXPECT_TRUE(merged->ok());
}

TEST(ProcessRunnerTest, EnvironmentWorkingDirectoryAndProgramApply) {
  ProcessRunnerImpl runner;
  std::string dir = FreshDir("cwd");
  auto run = runner.Run({.argv = {"my-shell", "-c", "echo $0 $FLEET_A $FLEET_B; pwd"},
                         .env = {"FLEET_A=first", "FLEET_B=x", "FLEET_B=last"},
                         .program = "/bin/sh",
                         .cwd = dir},
                        kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->out, absl::StrCat("my-shell first last\n", dir, "\n"));
  std::filesystem::remove_all(dir);
}

TEST(ProcessRunnerTest, ExecAndSetupErrorsAreReportedNotExit127) {
  ProcessRunnerImpl runner;
  auto missing = runner.Start({.argv = {"fleet-no-such-program"}});
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("fleet-no-such-program"));
  auto cwd = runner.Start({.argv = {"true"}, .cwd = "/nonexistent/dir"});
  EXPECT_FALSE(cwd.ok());
  EXPECT_THAT(cwd.status().message(), HasSubstr("chdir /nonexistent/dir"));
}

TEST(ProcessRunnerTest, MemlockAboveTheHardLimitIsAClearError) {
  struct rlimit current = {};
  ASSERT_EQ(::getrlimit(RLIMIT_MEMLOCK, &current), 0);
  if (current.rlim_max == RLIM_INFINITY) GTEST_SKIP() << "the hard memlock limit is unlimited";
  // Raising a hard limit needs CAP_SYS_RESOURCE: only where this process lacks it does the
  // child's raise fail.
  struct rlimit raised = {RLIM_INFINITY, RLIM_INFINITY};
  if (::prlimit(0, RLIMIT_MEMLOCK, &raised, nullptr) == 0) {
    ASSERT_EQ(::setrlimit(RLIMIT_MEMLOCK, &current), 0);
    GTEST_SKIP() << "this process may raise its memlock limit (CAP_SYS_RESOURCE)";
  }
  ProcessRunnerImpl runner;
  auto started = runner.Start(
      {.argv = {"true"},
       .limits = {{.resource = RLIMIT_MEMLOCK, .soft = RLIM_INFINITY, .hard = RLIM_INFINITY}},
       .limits_context = "shard ds4/0 on spark-1"});
  ASSERT_FALSE(started.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(started.status())) << started.status();
  EXPECT_THAT(started.status().message(),
              HasSubstr(absl::StrCat("shard ds4/0 on spark-1: memlock unlimited cannot be set")));
  EXPECT_THAT(started.status().message(),
              HasSubstr(absl::StrCat("hard limit is ", FormatMemlock(current.rlim_max))));
  EXPECT_THAT(started.status().message(), HasSubstr("LimitMEMLOCK=infinity"));
}

TEST(ProcessRunnerTest, ALimitTheKernelRefusesIsReportedWithItsContext) {
  // A soft limit above the hard one is refused (EINVAL) whatever the capabilities, so this runs
  // where the memlock case above cannot (root with CAP_SYS_RESOURCE).
  ProcessRunnerImpl runner;
  auto started =
      runner.Start({.argv = {"true"},
                    .limits = {{.resource = RLIMIT_MEMLOCK, .soft = 2 << 20, .hard = 1 << 20}},
                    .limits_context = "shard ds4/0 on spark-1"});
  ASSERT_FALSE(started.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(started.status())) << started.status();
  EXPECT_THAT(started.status().message(),
              HasSubstr("shard ds4/0 on spark-1: memlock 1 MiB cannot be set (Invalid argument): "
                        "the soft limit 2 MiB must not exceed the hard one"));
}

TEST(ProcessRunnerTest, LimitsWithinTheHardLimitApply) {
  ProcessRunnerImpl runner;
  auto run = runner.Run({.argv = {"sh", "-c", "ulimit -n"},
                         .limits = {{.resource = RLIMIT_NOFILE, .soft = 77, .hard = 77}}},
                        kWait);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->out, "77\n");
}

TEST(ProcessRunnerTest, OutputFileIsAppendedAndTheExitSeenThroughThePidfd) {
  ProcessRunnerImpl runner;
  std::string dir = FreshDir("log");
  std::string log = dir + "/out.log";
  for (const char* word : {"first", "second"}) {
    auto child = runner.Start({.argv = {"echo", word}, .output_path = log});
    ASSERT_TRUE(child.ok()) << child.status();
    ASSERT_TRUE((*child)->WaitForExit(kWait));
    auto status = (*child)->Reap(false);
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_EQ(*status, 0);
  }
  EXPECT_EQ(*ReadFileToString(log), "first\nsecond\n");
  std::filesystem::remove_all(dir);
}

TEST(ProcessRunnerTest, NewSessionLeadsItsGroupAndStopReachesTheWholeGroup) {
  ProcessRunnerImpl runner;
  auto child = runner.Start({.argv = {"sh", "-c", "sleep 30 & echo $!; wait"},
                             .new_session = true,
                             .stdout_to = OutputTo::kPipe});
  ASSERT_TRUE(child.ok()) << child.status();
  pid_t leader = (*child)->pid();
  EXPECT_EQ(::getsid(leader), leader);
  EXPECT_EQ(::getpgid(leader), leader);
  UniqueFd out = (*child)->TakeStdout();
  std::string text;
  char c;
  while (::read(out.get(), &c, 1) == 1 && c != '\n') text.push_back(c);
  pid_t grandchild = 0;
  ASSERT_TRUE(absl::SimpleAtoi(text, &grandchild)) << text;
  EXPECT_EQ(::getpgid(grandchild), leader);
  ASSERT_TRUE(StopChild(**child, absl::Seconds(2), /*group=*/true).ok());
  auto status = (*child)->Reap(/*kill_group=*/true);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFSIGNALED(*status));
  // The grandchild was in the group: SIGTERM reached it too (it is reparented and reaped by init
  // or a subreaper, so only its absence from the group is checked).
  for (absl::Time deadline = absl::Now() + kWait;
       ::getpgid(grandchild) == leader && absl::Now() < deadline;) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::StatusOr<ProcStat> stat = ReadProcStat(grandchild);
  EXPECT_TRUE(!stat.ok() || stat->state == 'Z' || ::getpgid(grandchild) != leader);
}

TEST(ProcessRunnerTest, RunKillsACommandPastItsTimeout) {
  ProcessRunnerImpl runner;
  absl::Time start = absl::Now();
  auto run = runner.Run({.argv = {"sleep", "30"}}, absl::Milliseconds(200));
  EXPECT_TRUE(absl::IsDeadlineExceeded(run.status())) << run.status();
  EXPECT_THAT(run.status().message(), HasSubstr("sleep 30 gave no answer in 200ms"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(ProcessRunnerTest, AttachNeedsTheSameStartTime) {
  ProcessRunnerImpl runner;
  auto child = runner.Start({.argv = {"sleep", "30"}});
  ASSERT_TRUE(child.ok()) << child.status();
  uint64_t ticks = (*child)->start_ticks();
  ASSERT_EQ(ticks, *ProcessStartTicks((*child)->pid()));
  EXPECT_TRUE(absl::IsNotFound(runner.Attach((*child)->pid(), ticks + 1).status()));
  auto attached = runner.Attach((*child)->pid(), ticks);
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_TRUE((*attached)->is_child());  // this process started it
  ASSERT_TRUE(StopChild(**attached, absl::Seconds(2), /*group=*/false).ok());
  auto status = (*child)->Reap(false);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(WTERMSIG(*status), SIGTERM);
  // Dropping an attached handle never kills; dropping the started one after reaping is a no-op.
  attached->reset();
  EXPECT_TRUE(absl::IsNotFound(runner.Attach(999999999, 1).status()));
}

TEST(ProcessRunnerTest, ProcStatParsesNamesWithSpacesAndParentheses) {
  auto stat = ParseProcStat(
      "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 11 22 0 0 20 0 1 0 12345 1000 10 1");
  ASSERT_TRUE(stat.ok()) << stat.status();
  EXPECT_EQ(stat->state, 'S');
  EXPECT_EQ(stat->parent, 7);
  EXPECT_EQ(stat->user_ticks, 11u);
  EXPECT_EQ(stat->system_ticks, 22u);
  EXPECT_EQ(stat->start_ticks, 12345u);
  EXPECT_FALSE(ParseProcStat("42 (truncated").ok());
  EXPECT_FALSE(ParseProcStat("42 (x) S 7").ok());
}

}  // namespace
}  // namespace fleet
