// Supervisor: its policy over a fake runtime and a fake clock (states, readiness, generation
// fencing, idempotent starts, wait_for_tcp), and the real process runtime with /bin/sh
// children (process groups, grace and SIGKILL, re-adoption, pid reuse, memlock, logs).
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "agent/shards/process_runtime.h"
#include "agent/shards/shard_record.h"
#include "agent/shards/supervisor_impl.h"
#include "common/fake_clock.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/docker_run.h"
#include "tests/support/eventually.h"
#include "tests/unit/fake_shard_runtime.h"

namespace fleet::agent {
namespace {

using ::fleet::testing::Eventually;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr absl::Duration kDeadline = absl::Seconds(5);

std::string MakeTempDir() {
  char tmpl[] = "/tmp/fleet-supervisor-XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl), nullptr);
  return tmpl;
}

std::optional<v1::ShardStatus> Find(Supervisor& s, const std::string& group, uint64_t generation,
                                    uint32_t rank) {
  for (const v1::ShardStatus& st : s.List()) {
    if (st.group() == group && st.generation() == generation && st.rank() == rank) return st;
  }
  return std::nullopt;
}

bool HasState(Supervisor& s, const std::string& group, uint64_t generation, uint32_t rank,
              v1::ShardState state) {
  return Eventually(kDeadline, [&] {
    std::optional<v1::ShardStatus> st = Find(s, group, generation, rank);
    return st && st->state() == state;
  });
}

v1::ShardSpec Spec(const std::string& group, uint64_t generation, uint32_t rank,
                   std::vector<std::string> argv = {"fake"}) {
  v1::ShardSpec spec;
  spec.set_group(group);
  spec.set_generation(generation);
  spec.set_rank(rank);
  spec.set_world_size(2);
  spec.set_runtime(v1::SHARD_RUNTIME_PROCESS);
  for (std::string& a : argv) spec.add_argv(std::move(a));
  return spec;
}

v1::ShardSpec Sh(const std::string& group, uint64_t generation, uint32_t rank,
                 const std::string& script) {
  return Spec(group, generation, rank, {"/bin/sh", "-c", script});
}

// A process that is gone, or a zombie waiting for a parent that is not us.
bool Gone(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
  return !stat.ok() || stat->find(") Z ") != std::string::npos;
}

// ---- Policy over a fake runtime and a fake clock.

class FakeRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_dir_ = MakeTempDir();
    auto runtime = std::make_unique<FakeShardRuntime>();
    runtime_ = runtime.get();
    SupervisorDeps deps = {
        .clock = &clock_,
        .process_runtime = std::move(runtime),
        .probe = [this](const v1::ReadinessProbe&) { return probe_result(); },
        .dial = [this](const std::string& address, absl::Duration) { return dial_result(address); },
    };
    auto s =
        SupervisorImpl::Create({.state_dir = state_dir_, .node_name = "spark-1"}, std::move(deps));
    ASSERT_TRUE(s.ok()) << s.status();
    supervisor_ = std::move(*s);
    supervisor_->SetOnChange([this] { ++changes_; });
  }

  absl::Status probe_result() {
    absl::MutexLock lock(&mu_);
    return probe_;
  }
  absl::Status dial_result(const std::string& address) {
    absl::MutexLock lock(&mu_);
    if (refused_.contains(address)) return absl::UnavailableError("connection refused");
    return dial_;
  }

  std::string state_dir_;
  FakeClock clock_;
  absl::Mutex mu_;
  absl::Status probe_ ABSL_GUARDED_BY(mu_);
  absl::Status dial_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> refused_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> changes_ = 0;
  FakeShardRuntime* runtime_ = nullptr;
  std::unique_ptr<SupervisorImpl> supervisor_;
};

TEST_F(FakeRuntimeTest, StartsReadyAndReportsExitAtOnce) {
  auto st = supervisor_->Start(Spec("ds4", 1, 0));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->state(), v1::SHARD_STATE_STARTING);
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 1, 0, v1::SHARD_STATE_READY));
  EXPECT_GT(changes_.load(), 0);

  runtime_->shard("ds4", 1, 0)->Exit("exited with status 3");
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 1, 0, v1::SHARD_STATE_FAILED));
  std::optional<v1::ShardStatus> ended = Find(*supervisor_, "ds4", 1, 0);
  EXPECT_EQ(ended->exit(), "exited with status 3");
  EXPECT_EQ(ended->message(), "exited with status 3");
}

// The router's configuration reaches its node this way: files written into the shard's own
// directory before it starts; a name that could leave that directory is refused.
TEST_F(FakeRuntimeTest, FilesAreWrittenIntoTheShardsDirectoryBeforeItStarts) {
  v1::ShardSpec spec = Spec("app.router", 1, 0);
  v1::ShardFile& file = *spec.add_files();
  file.set_name("haproxy.cfg");
  file.set_content("global\n");
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  ASSERT_TRUE(HasState(*supervisor_, "app.router", 1, 0, v1::SHARD_STATE_READY));
  absl::StatusOr<std::string> written =
      ReadFileToString(state_dir_ + "/run/app.router/haproxy.cfg");
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, "global\n");

  v1::ShardSpec escape = Spec("app.router", 2, 0);
  v1::ShardFile& bad = *escape.add_files();
  bad.set_name("../../shards/x");
  absl::Status refused = supervisor_->Start(escape).status();
  EXPECT_TRUE(absl::IsInvalidArgument(refused)) << refused;
}

TEST_F(FakeRuntimeTest, ReadyOnlyOnceTheProbePasses) {
  {
    absl::MutexLock lock(&mu_);
    probe_ = absl::UnavailableError("GET http://127.0.0.1:8000/health: connection refused");
  }
  v1::ShardSpec spec = Spec("ds4", 1, 0);
  spec.mutable_readiness()->set_port(8000);
  spec.mutable_readiness()->mutable_period()->set_nanos(10'000'000);
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto st = Find(*supervisor_, "ds4", 1, 0);
    return st && st->state() == v1::SHARD_STATE_RUNNING &&
           st->message() == "GET http://127.0.0.1:8000/health: connection refused";
  }));
  {
    absl::MutexLock lock(&mu_);
    probe_ = absl::OkStatus();
  }
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 1, 0, v1::SHARD_STATE_READY));
  EXPECT_EQ(Find(*supervisor_, "ds4", 1, 0)->message(), "");
}

TEST_F(FakeRuntimeTest, NewGenerationStopsTheOldOneAndOlderOrdersAreAborted) {
  ASSERT_TRUE(supervisor_->Start(Spec("ds4", 4, 0)).ok());
  ASSERT_TRUE(supervisor_->Start(Spec("ds4", 4, 1)).ok());
  ASSERT_TRUE(supervisor_->Start(Spec("other", 1, 0)).ok());
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 4, 1, v1::SHARD_STATE_READY));

  ASSERT_TRUE(supervisor_->Start(Spec("ds4", 5, 0)).ok());
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 5, 0, v1::SHARD_STATE_READY));
  ASSERT_TRUE(Eventually(kDeadline, [&] { return supervisor_->List().size() == 2; }));
  EXPECT_FALSE(runtime_->shard("ds4", 4, 0)->running());
  EXPECT_FALSE(runtime_->shard("ds4", 4, 1)->running());
  EXPECT_TRUE(runtime_->shard("other", 1, 0)->running());

  auto stale = supervisor_->Start(Spec("ds4", 4, 1));
  EXPECT_TRUE(absl::IsAborted(stale.status())) << stale.status();
  EXPECT_EQ(stale.status().message(), "group ds4 already runs generation 5; this order is for 4");
}

TEST_F(FakeRuntimeTest, ResentOrderNeverStartsASecondCopy) {
  ASSERT_TRUE(supervisor_->Start(Spec("ds4", 2, 1)).ok());
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 2, 1, v1::SHARD_STATE_READY));
  v1::ShardSpec changed = Spec("ds4", 2, 1, {"other", "command"});
  auto again = supervisor_->Start(changed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state(), v1::SHARD_STATE_READY);
  EXPECT_EQ(runtime_->launches(), 1);
  EXPECT_THAT(supervisor_->List(), SizeIs(1));
}

TEST_F(FakeRuntimeTest, RefusalOfTheRuntimeIsReturned) {
  runtime_->set_check(absl::FailedPreconditionError("program x not found"));
  auto st = supervisor_->Start(Spec("ds4", 1, 0));
  EXPECT_TRUE(absl::IsFailedPrecondition(st.status()));
  EXPECT_THAT(supervisor_->List(), IsEmpty());
}

TEST_F(FakeRuntimeTest, MalformedSpecIsInvalid) {
  EXPECT_TRUE(absl::IsInvalidArgument(supervisor_->Start(Spec("../x", 1, 0)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(supervisor_->Start(Spec("ds4", 0, 0)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(supervisor_->Start(Spec("ds4", 1, 2)).status()));
  v1::ShardSpec bad_wait = Spec("ds4", 1, 0);
  bad_wait.set_wait_for_tcp("no-port");
  EXPECT_TRUE(absl::IsInvalidArgument(supervisor_->Start(bad_wait).status()));
}

TEST_F(FakeRuntimeTest, WaitForTcpFailsPastItsTimeout) {
  {
    absl::MutexLock lock(&mu_);
    dial_ = absl::UnavailableError("connection refused");
  }
  v1::ShardSpec spec = Spec("ds4", 3, 1);
  spec.set_wait_for_tcp("10.0.0.1:29500");
  auto st = supervisor_->Start(spec);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->message(), "waiting for 10.0.0.1:29500 to accept connections");
  clock_.Advance(absl::Minutes(9));
  EXPECT_EQ(Find(*supervisor_, "ds4", 3, 1)->state(), v1::SHARD_STATE_STARTING);
  clock_.Advance(absl::Minutes(2));
  ASSERT_TRUE(HasState(*supervisor_, "ds4", 3, 1, v1::SHARD_STATE_FAILED));
  EXPECT_THAT(Find(*supervisor_, "ds4", 3, 1)->message(),
              HasSubstr("10.0.0.1:29500 did not accept connections within 10m: the head's master "
                        "port never opened: see `fleet logs ds4 --rank 0`"));
  EXPECT_EQ(runtime_->launches(), 0);
}

TEST_F(FakeRuntimeTest, HeadWaitsForEveryAddressBeforeLaunching) {
  {
    absl::MutexLock lock(&mu_);
    refused_ = {"10.0.0.3:50052"};
  }
  v1::ShardSpec spec = Spec("gguf", 1, 0);
  spec.set_wait_for_tcp("10.0.0.2:50052");
  spec.add_also_wait_for_tcp("10.0.0.3:50052");
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    std::optional<v1::ShardStatus> status = Find(*supervisor_, "gguf", 1, 0);
    return status && status->message() == "waiting for 10.0.0.3:50052 to accept connections";
  }));
  EXPECT_EQ(runtime_->launches(), 0);
  {
    absl::MutexLock lock(&mu_);
    refused_.clear();
  }
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    clock_.Advance(absl::Seconds(1));
    return runtime_->launches() == 1;
  }));
  v1::ShardSpec lone = Spec("gguf", 2, 0);
  lone.add_also_wait_for_tcp("10.0.0.3:50052");
  EXPECT_TRUE(absl::IsInvalidArgument(supervisor_->Start(lone).status()));
}

TEST_F(FakeRuntimeTest, StopWhileWaitingNeverLaunches) {
  {
    absl::MutexLock lock(&mu_);
    dial_ = absl::UnavailableError("connection refused");
  }
  v1::ShardSpec spec = Spec("ds4", 3, 1);
  spec.set_wait_for_tcp("10.0.0.1:29500");
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  auto stopped = supervisor_->Stop("ds4", 0);
  ASSERT_TRUE(stopped.ok());
  ASSERT_THAT(*stopped, SizeIs(1));
  EXPECT_EQ((*stopped)[0].state(), v1::SHARD_STATE_EXITED);
  EXPECT_EQ(runtime_->launches(), 0);
  EXPECT_THAT(supervisor_->List(), IsEmpty());
}

// ---- The real process runtime with /bin/sh children.

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { state_dir_ = MakeTempDir(); }

  // `look_at_head`: what the head watch sees (unset: heads are not watched).
  std::unique_ptr<SupervisorImpl> NewSupervisor(
      uint64_t log_max_bytes = 16 << 20,
      std::function<HeadLook(const v1::ReadinessProbe&)> look_at_head = nullptr) {
    SupervisorDeps deps = {
        .clock = RealClock::Get(),
        .process_runtime = std::make_unique<ProcessRuntime>("spark-1"),
        .probe = [](const v1::ReadinessProbe&) { return absl::OkStatus(); },
        .look_at_head = std::move(look_at_head),
        .one_token = [](const v1::ReadinessProbe&,
                        absl::Duration) { return absl::UnavailableError("no engine here"); },
        .dial = DialTcp,
    };
    auto s = SupervisorImpl::Create({.state_dir = state_dir_,
                                     .node_name = "spark-1",
                                     .log_max_bytes = log_max_bytes,
                                     .log_files_kept = 2},
                                    std::move(deps));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  void TearDown() override {
    for (pid_t pid : leftovers_) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }

  std::string state_dir_;
  std::vector<pid_t> leftovers_;  // shards a test leaves running on purpose
};

TEST_F(ProcessTest, RunsInItsOwnSessionAndReportsExitAtOnce) {
  auto s = NewSupervisor();
  v1::ShardSpec spec = Sh("ds4", 1, 0, "echo hello $FLEET_X; read line; exit 3");
  auto* env = spec.add_env();
  env->set_name("FLEET_X");
  env->set_value("world");
  ASSERT_TRUE(s->Start(spec).ok());
  // stdin is /dev/null: `read` fails at once and the shell exits 3.
  ASSERT_TRUE(HasState(*s, "ds4", 1, 0, v1::SHARD_STATE_FAILED));
  EXPECT_EQ(Find(*s, "ds4", 1, 0)->exit(), "exited with status 3");
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto log = s->ReadLog("ds4", 0, std::nullopt, 10, 0);
    return log.ok() && log->data == "hello world\n";
  }));
}

TEST_F(ProcessTest, AHeadThatStopsAnsweringIsStoppedWithTheReason) {
  std::atomic<int> looks{0};
  auto s = NewSupervisor(16 << 20, [&](const v1::ReadinessProbe&) {
    ++looks;
    return HeadLook{.health = absl::UnavailableError("GET http://127.0.0.1:1/health: HTTP 503"),
                    .metrics = std::nullopt};
  });
  v1::ShardSpec spec = Sh("ds4", 1, 0, "exec sleep 30");
  spec.mutable_readiness()->set_host("127.0.0.1");
  spec.mutable_readiness()->set_port(1);
  v1::HeadWatch& watch = *spec.mutable_readiness()->mutable_watch();
  watch.mutable_period()->set_nanos(50'000'000);
  watch.set_failure_threshold(2);
  spec.mutable_stop_grace()->set_nanos(300'000'000);
  ASSERT_TRUE(s->Start(spec).ok());
  ASSERT_TRUE(HasState(*s, "ds4", 1, 0, v1::SHARD_STATE_FAILED));
  std::optional<v1::ShardStatus> status = Find(*s, "ds4", 1, 0);
  ASSERT_TRUE(status.has_value());
  EXPECT_THAT(status->message(), HasSubstr("failed its health check 2 times in a row"));
  EXPECT_THAT(status->message(), HasSubstr("HTTP 503"));
  EXPECT_THAT(status->exit(), HasSubstr("signal"));
  EXPECT_EQ(looks.load(), 2);
}

TEST_F(ProcessTest, OutputOfAStoppedShardStaysReadable) {
  auto s = NewSupervisor();
  ASSERT_TRUE(s->Start(Sh("ds4", 1, 0, "echo ibv_reg_mr failed; exec sleep 30")).ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto log = s->ReadLog("ds4", 0, std::nullopt, 10, 0);
    return log.ok() && log->data == "ibv_reg_mr failed\n";
  }));
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
  auto log = s->ReadLog("ds4", 0, std::nullopt, 10, 0);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->data, "ibv_reg_mr failed\n");
  EXPECT_TRUE(absl::IsNotFound(s->ReadLog("ds4", 7, std::nullopt, 10, 0).status()));
}

TEST_F(ProcessTest, ShardGetsItsOwnSession) {
  auto s = NewSupervisor();
  ASSERT_TRUE(s->Start(Sh("ds4", 1, 0, "exec sleep 30")).ok());
  ASSERT_TRUE(HasState(*s, "ds4", 1, 0, v1::SHARD_STATE_READY));
  pid_t pid = Find(*s, "ds4", 1, 0)->pid();
  EXPECT_EQ(::getsid(pid), pid);
  EXPECT_EQ(::getpgid(pid), pid);
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
}

TEST_F(ProcessTest, StopKillsTheWholeProcessGroup) {
  auto s = NewSupervisor();
  std::string pidfile = state_dir_ + "/grandchild";
  ASSERT_TRUE(
      s->Start(Sh("ds4", 1, 0, absl::StrCat("sleep 30 & echo $! > ", pidfile, "; wait"))).ok());
  pid_t grandchild = 0;
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto text = ReadFileToString(pidfile);
    return text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &grandchild);
  }));
  pid_t leader = Find(*s, "ds4", 1, 0)->pid();
  auto stopped = s->Stop("ds4", 0);
  ASSERT_TRUE(stopped.ok());
  ASSERT_THAT(*stopped, SizeIs(1));
  EXPECT_EQ((*stopped)[0].state(), v1::SHARD_STATE_EXITED);
  EXPECT_TRUE(Gone(leader));
  EXPECT_TRUE(Eventually(kDeadline, [&] { return Gone(grandchild); }));
  EXPECT_THAT(s->List(), IsEmpty());
}

TEST_F(ProcessTest, ShardIgnoringSigtermIsKilledAfterTheGrace) {
  auto s = NewSupervisor();
  std::string marker = state_dir_ + "/trapped";
  v1::ShardSpec spec = Sh(
      "ds4", 1, 0, absl::StrCat("trap '' TERM; touch ", marker, "; while :; do sleep 0.05; done"));
  spec.mutable_stop_grace()->set_nanos(300'000'000);
  ASSERT_TRUE(s->Start(spec).ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] { return ::access(marker.c_str(), F_OK) == 0; }));
  absl::Time begin = absl::Now();
  auto stopped = s->Stop("ds4", 0);
  ASSERT_TRUE(stopped.ok());
  EXPECT_GE(absl::Now() - begin, absl::Milliseconds(300));
  EXPECT_EQ((*stopped)[0].exit(), "killed by signal 9 (Killed)");
}

TEST_F(ProcessTest, ReadoptedByTheNextSupervisorWithoutASecondCopy) {
  v1::ShardSpec spec = Sh("ds4", 2, 1, "echo up; exec sleep 30");
  pid_t pid = 0;
  {
    auto first = NewSupervisor();
    ASSERT_TRUE(first->Start(spec).ok());
    ASSERT_TRUE(HasState(*first, "ds4", 2, 1, v1::SHARD_STATE_READY));
    pid = Find(*first, "ds4", 2, 1)->pid();
    ASSERT_TRUE(Eventually(kDeadline, [&] {
      auto log = first->ReadLog("ds4", 1, std::nullopt, 0, 0);
      return log.ok() && log->data == "up\n";
    }));
  }
  leftovers_.push_back(pid);
  EXPECT_FALSE(Gone(pid));

  auto second = NewSupervisor();
  ASSERT_TRUE(HasState(*second, "ds4", 2, 1, v1::SHARD_STATE_READY));
  EXPECT_EQ(Find(*second, "ds4", 2, 1)->pid(), pid);
  auto again = second->Start(spec);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->pid(), pid);
  EXPECT_THAT(second->List(), SizeIs(1));
  auto log = second->ReadLog("ds4", 1, 0, 0, 0);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->data, "up\n");

  ::kill(pid, SIGKILL);
  ASSERT_TRUE(HasState(*second, "ds4", 2, 1, v1::SHARD_STATE_FAILED));
  leftovers_.clear();
}

TEST_F(ProcessTest, RecordOfADeadShardIsNotAdopted) {
  pid_t pid = 0;
  {
    auto first = NewSupervisor();
    ASSERT_TRUE(first->Start(Sh("ds4", 1, 0, "exec sleep 30")).ok());
    ASSERT_TRUE(HasState(*first, "ds4", 1, 0, v1::SHARD_STATE_READY));
    pid = Find(*first, "ds4", 1, 0)->pid();
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  auto second = NewSupervisor();
  std::optional<v1::ShardStatus> st = Find(*second, "ds4", 1, 0);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state(), v1::SHARD_STATE_FAILED);
  EXPECT_EQ(st->message(), "ended while the agent was down");
  // Kept listed until stopped or replaced; a new generation replaces it.
  ASSERT_TRUE(second->Start(Sh("ds4", 2, 0, "exec sleep 30")).ok());
  ASSERT_TRUE(HasState(*second, "ds4", 2, 0, v1::SHARD_STATE_READY));
  ASSERT_TRUE(Eventually(kDeadline, [&] { return !Find(*second, "ds4", 1, 0).has_value(); }));
  ASSERT_TRUE(second->Stop("ds4", 0).ok());
}

TEST_F(ProcessTest, ReusedPidIsNeitherAdoptedNorKilled) {
  // A record naming a live process (a stand-in for whoever got the pid) with another start
  // time: the shard it names ended and the pid was reused.
  auto bystander = Process::Start({.argv = {"sleep", "30"}});
  ASSERT_TRUE(bystander.ok());
  auto ticks = ProcessStartTicks(bystander->pid());
  ASSERT_TRUE(ticks.ok());
  ShardRecord record;
  record.spec = Sh("ds4", 1, 0, "exec sleep 30");
  record.pid = bystander->pid();
  record.start_ticks = *ticks + 1;
  ASSERT_TRUE(MakeDirectories(state_dir_ + "/shards").ok());
  ASSERT_TRUE(
      WriteFileAtomically(ShardRecordPath(state_dir_, record.spec), SerializeShardRecord(record))
          .ok());
  auto s = NewSupervisor();
  std::optional<v1::ShardStatus> st = Find(*s, "ds4", 1, 0);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state(), v1::SHARD_STATE_FAILED);
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
  EXPECT_TRUE(bystander->Running());
}

TEST_F(ProcessTest, RecordRoundTrips) {
  ShardRecord record;
  record.spec = Sh("ds4", 7, 1, "echo 'a b'");
  record.pid = 42;
  record.start_ticks = 99;
  record.container = "fleet-ds4-g7-r1";
  record.log_base = 1234;
  record.started_at = absl::FromUnixNanos(1'700'000'000'123'456'789);
  auto parsed = ParseShardRecord(SerializeShardRecord(record));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->spec.SerializeAsString(), record.spec.SerializeAsString());
  EXPECT_EQ(parsed->pid, 42);
  EXPECT_EQ(parsed->start_ticks, 99u);
  EXPECT_EQ(parsed->container, "fleet-ds4-g7-r1");
  EXPECT_EQ(parsed->log_base, 1234u);
  EXPECT_EQ(parsed->started_at, record.started_at);
  EXPECT_FALSE(ParseShardRecord("pid 1\n").ok());
}

// True when this process may raise its hard memlock limit (root with CAP_SYS_RESOURCE).
bool CanRaiseMemlock() {
  pid_t pid = ::fork();
  if (pid == 0) {
    struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
    ::_exit(::setrlimit(RLIMIT_MEMLOCK, &unlimited) == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST_F(ProcessTest, MemlockUnlimitedThatCannotBeGrantedIsRefusedWithTheFix) {
  if (CanRaiseMemlock()) GTEST_SKIP() << "this process may raise its memlock limit";
  struct rlimit current = {};
  ::getrlimit(RLIMIT_MEMLOCK, &current);
  auto s = NewSupervisor();
  v1::ShardSpec spec = Sh("ds4", 1, 0, "exit 0");
  spec.set_memlock_bytes(UINT64_MAX);
  auto st = s->Start(spec);
  ASSERT_TRUE(absl::IsFailedPrecondition(st.status())) << st.status();
  EXPECT_EQ(st.status().message(),
            absl::StrCat("memlock unlimited cannot be granted on spark-1: the agent's hard "
                         "RLIMIT_MEMLOCK is ",
                         FormatMemlock(current.rlim_max),
                         " and it may not raise it; run the agent with LimitMEMLOCK=infinity "
                         "(systemd) or raise the hard memlock limit in "
                         "/etc/security/limits.conf"));
}

TEST_F(ProcessTest, MemlockIsAppliedOrTheShortfallIsAWarning) {
  struct rlimit current = {};
  ::getrlimit(RLIMIT_MEMLOCK, &current);
  auto s = NewSupervisor();
  v1::ShardSpec set = Sh("ds4", 1, 0, "ulimit -l; exec sleep 30");
  set.set_memlock_bytes(4 << 20);
  ASSERT_TRUE(s->Start(set).ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto log = s->ReadLog("ds4", 0, 0, 0, 0);
    return log.ok() && log->data == "4096\n";
  }));
  EXPECT_THAT(Find(*s, "ds4", 1, 0)->warnings(), IsEmpty());

  ASSERT_TRUE(s->Start(Sh("ds4", 1, 1, "exec sleep 30")).ok());
  ASSERT_TRUE(HasState(*s, "ds4", 1, 1, v1::SHARD_STATE_READY));
  if (current.rlim_max == RLIM_INFINITY) {
    EXPECT_THAT(Find(*s, "ds4", 1, 1)->warnings(), IsEmpty());
  } else {
    EXPECT_THAT(Find(*s, "ds4", 1, 1)->warnings(),
                ::testing::ElementsAre(absl::StrCat(
                    "memlock kept at ", FormatMemlock(current.rlim_max),
                    ": the agent's hard limit on spark-1; run the agent with "
                    "LimitMEMLOCK=infinity (systemd) or raise the hard memlock limit in "
                    "/etc/security/limits.conf")));
  }
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
}

TEST_F(ProcessTest, MissingProgramNamesItAndThePath) {
  auto s = NewSupervisor();
  auto st = s->Start(Spec("ds4", 1, 0, {"fleet-no-such-engine"}));
  ASSERT_TRUE(absl::IsFailedPrecondition(st.status())) << st.status();
  EXPECT_THAT(st.status().message(), HasSubstr("program fleet-no-such-engine not found in PATH ("));
}

TEST_F(ProcessTest, OffsetsCountAcrossRotation) {
  // 60 lines of 50 bytes with a 400-byte cap: several rotations, two rotated files kept.
  auto s = NewSupervisor(/*log_max_bytes=*/400);
  ASSERT_TRUE(s->Start(Sh("ds4", 1, 0,
                          "i=10; while [ $i -lt 70 ]; do "
                          "echo \"line $i 01234567890123456789012345678901234567890\"; "
                          "i=$((i+1)); sleep 0.01; done; exec sleep 30"))
                  .ok());
  constexpr uint64_t kTotal = 60 * 50;
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto tail = s->ReadLog("ds4", 0, std::nullopt, 1, 0);
    return tail.ok() && tail->next_offset == kTotal;
  }));
  // From 0: the oldest bytes are rotated away; what is kept reads back contiguously.
  auto chunk = s->ReadLog("ds4", 0, 0, 0, 0);
  ASSERT_TRUE(chunk.ok());
  EXPECT_TRUE(chunk->truncated);
  EXPECT_GT(chunk->start_offset, 0u);
  EXPECT_EQ(chunk->next_offset, kTotal);
  EXPECT_EQ(chunk->start_offset % 50, 0u);
  std::vector<std::string> lines = absl::StrSplit(chunk->data, '\n', absl::SkipEmpty());
  int first = static_cast<int>(chunk->start_offset / 50) + 10;
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].substr(0, 7), absl::StrCat("line ", first + static_cast<int>(i)));
  }
  // Small reads walk across the rotated files without a gap.
  uint64_t at = chunk->start_offset;
  std::string walked;
  while (at < kTotal) {
    auto part = s->ReadLog("ds4", 0, at, 0, 33);
    ASSERT_TRUE(part.ok());
    ASSERT_EQ(part->start_offset, at);
    ASSERT_FALSE(part->data.empty());
    walked += part->data;
    at = part->next_offset;
  }
  EXPECT_EQ(walked, chunk->data);
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
}

TEST_F(ProcessTest, TailLines) {
  auto s = NewSupervisor();
  ASSERT_TRUE(s->Start(Sh("ds4", 1, 0,
                          "i=0; while [ $i -lt 100 ]; do echo row-$i; i=$((i+1)); "
                          "done; exec sleep 30"))
                  .ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto tail = s->ReadLog("ds4", 0, std::nullopt, 3, 0);
    return tail.ok() && tail->data == "row-97\nrow-98\nrow-99\n";
  }));
  auto tail = s->ReadLog("ds4", 0, std::nullopt, 3, 0);
  EXPECT_EQ(tail->next_offset - tail->start_offset, tail->data.size());
  auto capped = s->ReadLog("ds4", 0, std::nullopt, 3, 7);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->data, "row-99\n");
  EXPECT_TRUE(absl::IsNotFound(s->ReadLog("ds4", 5, std::nullopt, 3, 0).status()));
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
}

TEST_F(ProcessTest, WaitsForTcpBeforeStarting) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  struct sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string target = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));

  auto s = NewSupervisor();
  v1::ShardSpec spec = Sh("ds4", 1, 1, "exec sleep 30");
  spec.set_wait_for_tcp(target);
  ASSERT_TRUE(s->Start(spec).ok());
  // Bound but not listening: connections are refused, the shard waits.
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto st = Find(*s, "ds4", 1, 1);
    return st && st->message() == absl::StrCat("waiting for ", target, " to accept connections");
  }));
  absl::SleepFor(absl::Milliseconds(150));  // a few dial attempts; the state must not move
  EXPECT_EQ(Find(*s, "ds4", 1, 1)->state(), v1::SHARD_STATE_STARTING);
  EXPECT_EQ(Find(*s, "ds4", 1, 1)->pid(), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_TRUE(HasState(*s, "ds4", 1, 1, v1::SHARD_STATE_READY));
  EXPECT_GT(Find(*s, "ds4", 1, 1)->pid(), 0);
  ::close(fd);
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
}

// ---- What every shard is given to reach the controller (fleet-engine's rendezvous).

const ControllerAccess kAccess = {.address = "10.0.0.1:7100",
                                  .ca_path = "/var/lib/fleet/pki/ca.crt"};

TEST(ControllerAccessTest, ProcessShardGetsTheAddressAndCaLastAndNoMount) {
  v1::ShardSpec spec = WithControllerAccess(Sh("ds4", 1, 0, "true"), kAccess);
  ASSERT_GE(spec.env_size(), 2);
  // Last, so a recipe's own value of either cannot point the rank elsewhere.
  EXPECT_EQ(spec.env(spec.env_size() - 2).name(), "FLEET_CONTROLLER_ADDR");
  EXPECT_EQ(spec.env(spec.env_size() - 2).value(), "10.0.0.1:7100");
  EXPECT_EQ(spec.env(spec.env_size() - 1).name(), "FLEET_CONTROLLER_CA");
  EXPECT_EQ(spec.env(spec.env_size() - 1).value(), "/var/lib/fleet/pki/ca.crt");
  EXPECT_EQ(spec.mounts_size(), 0);
}

TEST(ControllerAccessTest, DockerShardSeesTheCaFileAtTheSamePathReadOnly) {
  v1::ShardSpec spec = Spec("ds4", 2, 1, {"fleet-engine"});
  spec.set_runtime(v1::SHARD_RUNTIME_DOCKER);
  spec.set_image("fleet-engine:1");
  spec = WithControllerAccess(spec, kAccess);
  std::vector<std::string> run =
      engine::RenderDockerRun(spec, "/state/cache/ds4", "/state/ds4.env", std::nullopt);
  EXPECT_THAT(run, ::testing::Contains("/var/lib/fleet/pki/ca.crt:/var/lib/fleet/pki/ca.crt:ro"));
  absl::StatusOr<std::string> env = engine::RenderEnvFile(spec);
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_THAT(*env, ::testing::HasSubstr("FLEET_CONTROLLER_ADDR=10.0.0.1:7100\n"
                                         "FLEET_CONTROLLER_CA=/var/lib/fleet/pki/ca.crt\n"));
}

TEST(ControllerAccessTest, NoControllerAddressAddsNothing) {
  v1::ShardSpec spec = Sh("ds4", 1, 0, "true");
  EXPECT_EQ(WithControllerAccess(spec, {}).SerializeAsString(), spec.SerializeAsString());
}

TEST_F(ProcessTest, ShardSeesTheControllerItsAgentUses) {
  auto s = NewSupervisor();
  ASSERT_TRUE(
      s->Start(WithControllerAccess(
                   Sh("ds4", 1, 0, "echo $FLEET_CONTROLLER_ADDR $FLEET_CONTROLLER_CA"), kAccess))
          .ok());
  ASSERT_TRUE(Eventually(kDeadline, [&] {
    auto log = s->ReadLog("ds4", 0, std::nullopt, 10, 0);
    return log.ok() && log->data == "10.0.0.1:7100 /var/lib/fleet/pki/ca.crt\n";
  }));
  ASSERT_TRUE(s->Stop("ds4", 0).ok());
}

}  // namespace
}  // namespace fleet::agent
