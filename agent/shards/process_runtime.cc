// Shards as child processes (process_runtime.h).
#include "agent/shards/process_runtime.h"

#include <linux/capability.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/files.h"
#include "common/process/process_runner_impl.h"
#include "common/process/rlimits.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

constexpr absl::string_view kMemlockFix =
    "run the agent with LimitMEMLOCK=infinity (systemd) or raise the hard memlock limit in "
    "/etc/security/limits.conf";

bool HasCapability(int cap) {
  absl::StatusOr<std::string> status = ReadFileToString("/proc/self/status");
  if (!status.ok()) return false;
  for (absl::string_view line : absl::StrSplit(*status, '\n')) {
    if (!absl::ConsumePrefix(&line, "CapEff:")) continue;
    uint64_t caps = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line), &caps)) return false;
    return (caps >> cap) & 1;
  }
  return false;
}

// spec.env as "NAME=VALUE" entries, which the runner puts over the agent's own environment.
std::vector<std::string> SpecEnvironment(const v1::ShardSpec& spec) {
  std::vector<std::string> env;
  for (const v1::EnvVar& var : spec.env())
    env.push_back(absl::StrCat(var.name(), "=", var.value()));
  return env;
}

// The PATH the shard will see: the last PATH of spec.env, else the agent's.
std::string ShardPath(const v1::ShardSpec& spec) {
  std::string path;
  if (const char* own = std::getenv("PATH"); own != nullptr) path = own;
  for (const v1::EnvVar& var : spec.env()) {
    if (var.name() == "PATH") path = var.value();
  }
  return path;
}

// The memlock limit the shard gets, and what to tell the operator about it.
struct MemlockPlan {
  ResourceLimit limit = {.resource = RLIMIT_MEMLOCK};
  std::vector<std::string> warnings;
};

absl::StatusOr<MemlockPlan> PlanMemlock(const v1::ShardSpec& spec, const std::string& node) {
  struct rlimit current = {};
  RETURN_IF_ERRNO(::getrlimit(RLIMIT_MEMLOCK, &current), "getrlimit RLIMIT_MEMLOCK");
  MemlockPlan plan;
  if (spec.has_memlock_bytes()) {
    rlim_t wanted = spec.memlock_bytes() == UINT64_MAX ? RLIM_INFINITY : spec.memlock_bytes();
    if (wanted > current.rlim_max && !HasCapability(CAP_SYS_RESOURCE)) {
      return absl::FailedPreconditionError(
          absl::StrCat("memlock ", FormatMemlock(wanted), " cannot be granted on ", node,
                       ": the agent's hard RLIMIT_MEMLOCK is ", FormatMemlock(current.rlim_max),
                       " and it may not raise it; ", kMemlockFix));
    }
    plan.limit.soft = plan.limit.hard = wanted;
    return plan;
  }
  plan.limit.soft = plan.limit.hard = current.rlim_max;
  if (current.rlim_max != RLIM_INFINITY) {
    plan.warnings.push_back(absl::StrCat("memlock kept at ", FormatMemlock(current.rlim_max),
                                         ": the agent's hard limit on ", node, "; ", kMemlockFix));
  }
  return plan;
}

class ProcessShard final : public RunningShard {
 public:
  ProcessShard(std::unique_ptr<ChildProcess> process, std::vector<std::string> warnings)
      : process_(std::move(process)), warnings_(std::move(warnings)) {}
  // The shard outlives the agent's handle, so the next agent can re-adopt it.
  ~ProcessShard() override { process_->Release(); }

  int exit_fd() const override { return process_->exit_fd(); }

  std::optional<std::string> OnExitReady() override {
    absl::MutexLock lock(&mu_);
    if (exit_) return exit_;
    if (!process_->WaitForExit(absl::ZeroDuration())) return std::nullopt;
    if (process_->is_child()) {
      // Engines' worker processes must not outlive their leader: the rest of the group is
      // killed before the leader is reaped.
      absl::StatusOr<int> status = process_->Reap(/*kill_group=*/true);
      exit_ = status.ok() ? DescribeWaitStatus(*status)
                          : std::string("exited (status lost: reaped elsewhere)");
    } else {
      // The group may still hold the leader's workers; its id cannot be reused while it does.
      process_->SignalGroup(SIGKILL).IgnoreError();
      exit_ = "exited (status unknown: started by a previous agent)";
    }
    return exit_;
  }

  absl::Status Stop(absl::Duration grace) override {
    {
      absl::MutexLock lock(&mu_);
      if (exit_) return absl::OkStatus();
    }
    absl::Status stopped = StopChild(*process_, grace, /*group=*/true);
    if (absl::IsDeadlineExceeded(stopped)) {
      return absl::DeadlineExceededError(
          absl::StrCat("shard pid ", process_->pid(), " still runs 5 s after SIGKILL"));
    }
    return stopped;
  }

  void FillRecord(ShardRecord& record) const override {
    record.pid = process_->pid();
    record.start_ticks = process_->start_ticks();
  }
  pid_t pid() const override { return process_->pid(); }
  std::string container() const override { return ""; }
  std::vector<std::string> warnings() const override { return warnings_; }

 private:
  const std::unique_ptr<ChildProcess> process_;
  const std::vector<std::string> warnings_;
  absl::Mutex mu_;
  std::optional<std::string> exit_ ABSL_GUARDED_BY(mu_);
};

// The recipe's runtime.ulimits (other than memlock) as setrlimit(2) resources, by docker's names.
absl::StatusOr<std::vector<ResourceLimit>> SpecLimits(const v1::ShardSpec& spec) {
  std::vector<ResourceLimit> limits;
  for (const v1::Ulimit& limit : spec.ulimits()) {
    // memlock travels as memlock_bytes, never here.
    std::optional<int> resource = ResourceByName(limit.name());
    if (!resource.has_value() || *resource == RLIMIT_MEMLOCK) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ulimit \"", limit.name(), "\" is not a resource this agent knows; use one of ",
          absl::StrJoin(ResourceNames(), ", "), " (memlock has its own setting)"));
    }
    auto value = [](uint64_t v) { return v == UINT64_MAX ? RLIM_INFINITY : v; };
    limits.push_back(
        {.resource = *resource, .soft = value(limit.soft()), .hard = value(limit.hard())});
  }
  return limits;
}

}  // namespace

ProcessRuntime::ProcessRuntime(std::string node_name, ProcessRunner* runner)
    : node_name_(std::move(node_name)),
      runner_(runner == nullptr ? DefaultProcessRunner() : runner) {}

absl::StatusOr<std::string> ResolveProgram(const std::string& program,
                                           const std::string& path_env) {
  if (program.empty()) return absl::InvalidArgumentError("the shard's argv is empty");
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) == 0) return program;
    return absl::FailedPreconditionError(
        absl::StrCat("program ", program, " is missing or not executable"));
  }
  for (absl::string_view dir : absl::StrSplit(path_env, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string agent_dir;
  if (n > 0) {
    agent_dir = std::string(self, static_cast<size_t>(n));
    agent_dir.resize(agent_dir.rfind('/'));
    std::string candidate = absl::StrCat(agent_dir, "/", program);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "program ", program, " not found in PATH (", path_env, ") nor beside the agent (", agent_dir,
      "): install it or give its full path in the recipe's command"));
}

absl::Status ProcessRuntime::Check(const v1::ShardSpec& spec) {
  if (spec.argv().empty()) return absl::InvalidArgumentError("the shard's argv is empty");
  RETURN_IF_ERROR(ResolveProgram(spec.argv(0), ShardPath(spec)).status());
  RETURN_IF_ERROR(SpecLimits(spec).status());
  return PlanMemlock(spec, node_name_).status();
}

absl::StatusOr<std::unique_ptr<RunningShard>> ProcessRuntime::Launch(const v1::ShardSpec& spec,
                                                                     const std::string& log_path) {
  if (spec.argv().empty()) return absl::InvalidArgumentError("the shard's argv is empty");
  ASSIGN_OR_RETURN(std::string program, ResolveProgram(spec.argv(0), ShardPath(spec)));
  ASSIGN_OR_RETURN(MemlockPlan memlock, PlanMemlock(spec, node_name_));
  ASSIGN_OR_RETURN(std::vector<ResourceLimit> limits, SpecLimits(spec));
  limits.push_back(memlock.limit);
  SpawnOptions options{
      .argv = {spec.argv().begin(), spec.argv().end()},
      .env = SpecEnvironment(spec),
      .output_path = log_path,
      // Its own session, so its own process group: Stop reaches the workers an engine forks.
      .new_session = true,
      .program = program,
      .cwd = spec.working_dir(),
      .limits = std::move(limits),
      .limits_context = absl::StrCat("shard ", spec.group(), "/", spec.rank(), " on ", node_name_),
  };
  ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> process, runner_->Start(options));
  return std::make_unique<ProcessShard>(std::move(process), std::move(memlock.warnings));
}

absl::StatusOr<std::unique_ptr<RunningShard>> ProcessRuntime::Adopt(const ShardRecord& record,
                                                                    const std::string&) {
  ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> process,
                   runner_->Attach(record.pid, record.start_ticks));
  return std::make_unique<ProcessShard>(std::move(process), std::vector<std::string>{});
}

}  // namespace fleet::agent
