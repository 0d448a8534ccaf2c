// Process: start, wait, exit statuses, exec failures, and stopping a process that ignores
// SIGTERM.
#include "common/subprocess.h"

#include <signal.h>
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/eventually.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;

TEST(ProcessTest, ReportsExitStatus) {
  auto p = Process::Start({.argv = {"sh", "-c", "exit 3"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto st = p->Wait(absl::Seconds(5));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(DescribeWaitStatus(*st), "exited with status 3");
  EXPECT_FALSE(p->Running());
}

TEST(ProcessTest, MissingProgramIsNotFound) {
  auto p = Process::Start({.argv = {"/nonexistent/program"}});
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsNotFound(p.status())) << p.status();
  EXPECT_THAT(p.status().message(), HasSubstr("/nonexistent/program"));
}

TEST(ProcessTest, StopEscalatesToSigkill) {
  auto p = Process::Start({.argv = {"sh", "-c", "trap '' TERM; exec sleep 30"}});
  ASSERT_TRUE(p.ok());
  // Once the shell has exec'd sleep, SIGTERM is ignored (the disposition survives exec).
  ASSERT_TRUE(fleet::testing::Eventually(absl::Seconds(5), [&] {
    absl::StatusOr<std::string> comm = ReadFileToString(absl::StrCat("/proc/", p->pid(), "/comm"));
    return comm.ok() && *comm == "sleep\n";
  }));
  auto st = p->Stop(absl::Milliseconds(200));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(WIFSIGNALED(*st));
  EXPECT_EQ(WTERMSIG(*st), SIGKILL);
}

TEST(ProcessTest, WaitTimesOutOnARunningProcess) {
  auto p = Process::Start({.argv = {"sleep", "30"}});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(p->Wait(absl::Milliseconds(50)).status()));
}

TEST(ProcessTest, EnvironmentAndOutputFileAreApplied) {
  char tmpl[] = "/tmp/fleet-proc-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string out = std::string(tmpl) + "/out.log";
  auto p = Process::Start(
      {.argv = {"sh", "-c", "echo $FLEET_X"}, .env = {"FLEET_X=hello"}, .output_path = out});
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(p->Wait(absl::Seconds(5)).ok());
  FILE* f = std::fopen(out.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[64] = {};
  ASSERT_NE(std::fgets(buf, sizeof buf, f), nullptr);
  std::fclose(f);
  EXPECT_STREQ(buf, "hello\n");
  std::remove(out.c_str());
  ::rmdir(tmpl);
}

TEST(ProcessTest, StopProcessLeavesAReusedPidAlone) {
  auto p = Process::Start({.argv = {"sleep", "30"}});
  ASSERT_TRUE(p.ok());
  auto ticks = ProcessStartTicks(p->pid());
  ASSERT_TRUE(ticks.ok());
  // A wrong start time means "another process now has this pid": nothing is signalled.
  EXPECT_TRUE(StopProcess(p->pid(), *ticks + 1, absl::Seconds(1)).ok());
  EXPECT_TRUE(p->Running());
  EXPECT_TRUE(StopProcess(p->pid(), *ticks, absl::Seconds(2)).ok());
  auto st = p->Wait(absl::Seconds(2));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(WIFSIGNALED(*st));
}

}  // namespace
}  // namespace fleet
