// Shards as Docker containers (docker_runtime.h).
#include "agent/shards/docker_runtime.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/files.h"
#include "common/process/process_runner_impl.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"

namespace fleet::agent {
namespace {

constexpr absl::Duration kCommandTimeout = absl::Seconds(30);
// `docker run` of a present image; pulling is `fleet stage image`'s job, never a start's.
constexpr absl::Duration kRunTimeout = absl::Minutes(2);

std::string FirstLine(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  return std::string(text.substr(0, text.find('\n')));
}

bool DaemonUnreachable(absl::string_view err) {
  return absl::StrContains(err, "Cannot connect to the Docker daemon") ||
         absl::StrContains(err, "Is the docker daemon running") ||
         absl::StrContains(err, "error during connect");
}

// Ends a helper process of ours (`docker wait`, `docker logs`): SIGTERM, so the CLI leaves
// cleanly, then the handle's destructor kills and reaps whatever is left.
void EndHelper(std::unique_ptr<ChildProcess> helper) {
  if (helper == nullptr) return;
  if (helper->Signal(SIGTERM).ok()) helper->WaitForExit(absl::Seconds(1));
}

class DockerShard final : public RunningShard {
 public:
  DockerShard(ProcessRunner* runner, std::string docker, std::string name)
      : runner_(runner), docker_(std::move(docker)), name_(std::move(name)) {}
  ~DockerShard() override {
    EndHelper(std::move(follower_));
    EndHelper(std::move(waiter_));
  }

  // `docker wait NAME`: prints the exit code once the container ends (at once if it has).
  absl::Status StartWaiter() {
    ASSIGN_OR_RETURN(waiter_, runner_->Start({.argv = {docker_, "wait", name_},
                                              .stdout_to = OutputTo::kPipe,
                                              .stderr_to = OutputTo::kNull}));
    wait_out_ = waiter_->TakeStdout();
    return absl::OkStatus();
  }

  // `docker logs --follow NAME` appending to the log file; `since` skips what an earlier
  // agent already copied.
  absl::Status StartFollower(const std::string& log_path, std::optional<absl::Time> since) {
    std::vector<std::string> argv = {docker_, "logs", "--follow"};
    if (since) {
      argv.push_back("--since");
      argv.push_back(absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", *since, absl::UTCTimeZone()));
    }
    argv.push_back(name_);
    ASSIGN_OR_RETURN(follower_, runner_->Start({.argv = std::move(argv), .output_path = log_path}));
    return absl::OkStatus();
  }

  int exit_fd() const override { return waiter_->exit_fd(); }

  std::optional<std::string> OnExitReady() override {
    absl::MutexLock lock(&mu_);
    if (exit_) return exit_;
    if (!waiter_->WaitForExit(absl::ZeroDuration())) return std::nullopt;
    std::string out;
    char buf[256];
    ssize_t n;
    while (wait_out_.valid() && (n = ::read(wait_out_.get(), buf, sizeof buf)) > 0) {
      out.append(buf, static_cast<size_t>(n));
    }
    waiter_->Reap(/*kill_group=*/false).IgnoreError();
    int code = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(out), &code)) {
      exit_ = absl::StrCat("exited with status ", code);
      return exit_;
    }
    // `docker wait` itself failed (the daemon restarted, say): ask where the container is.
    absl::StatusOr<RunResult> state = runner_->Run(
        {.argv = {docker_, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name_}},
        kCommandTimeout);
    std::vector<std::string> words;
    if (state.ok() && state->ok()) words = absl::StrSplit(FirstLine(state->out), ' ');
    if (words.size() == 2 && words[0] == "true") {
      if (StartWaiter().ok()) return std::nullopt;
      exit_ = absl::StrCat("lost track of container ", name_, ": `docker wait` cannot run");
      return exit_;
    }
    if (words.size() == 2) {
      exit_ = absl::StrCat("exited with status ", words[1]);
    } else {
      exit_ = absl::StrCat("container ", name_, " is gone (removed outside the agent)");
    }
    return exit_;
  }

  absl::Status Stop(absl::Duration grace) override {
    int64_t seconds = static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(grace)));
    ASSIGN_OR_RETURN(RunResult stopped,
                     runner_->Run({.argv = {docker_, "stop", "-t", absl::StrCat(seconds), name_}},
                                  grace + kCommandTimeout));
    if (!stopped.ok() && !absl::StrContains(stopped.err, "No such container")) {
      return absl::UnavailableError(
          absl::StrCat("docker stop ", name_, " failed: ", FirstLine(stopped.err)));
    }
    ASSIGN_OR_RETURN(RunResult removed,
                     runner_->Run({.argv = {docker_, "rm", "--force", name_}}, kCommandTimeout));
    if (!removed.ok() && !absl::StrContains(removed.err, "No such container")) {
      return absl::UnavailableError(
          absl::StrCat("docker rm ", name_, " failed: ", FirstLine(removed.err)));
    }
    return absl::OkStatus();
  }

  void FillRecord(ShardRecord& record) const override {
    record.container = name_;
    record.helper_pid = follower_ == nullptr ? -1 : follower_->pid();
    record.helper_start_ticks = follower_ == nullptr ? 0 : follower_->start_ticks();
  }
  pid_t pid() const override { return 0; }
  std::string container() const override { return name_; }
  std::vector<std::string> warnings() const override { return {}; }

 private:
  ProcessRunner* const runner_;
  const std::string docker_;
  const std::string name_;
  absl::Mutex mu_;
  // Written before the shard is handed to the Supervisor, then only by OnExitReady().
  std::unique_ptr<ChildProcess> waiter_;
  UniqueFd wait_out_;
  std::unique_ptr<ChildProcess> follower_;
  std::optional<std::string> exit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

DockerRuntime::DockerRuntime(DockerRuntimeOptions options)
    : options_(std::move(options)),
      runner_(options_.runner == nullptr ? DefaultProcessRunner() : options_.runner) {}

absl::StatusOr<engine::ImageInfo> DockerRuntime::InspectImage(const std::string& image) {
  absl::StatusOr<RunResult> result =
      runner_->Run({.argv = {options_.docker, "image", "inspect", "--format",
                             "{{json .Config.Entrypoint}}\t{{.Id}}", image}},
                   kCommandTimeout);
  if (!result.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no Docker engine on ", options_.node_name, ": ", result.status().message(),
                     "; install docker.io or use runtime: process"));
  }
  if (!result->ok()) {
    if (DaemonUnreachable(result->err)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no Docker engine on ", options_.node_name,
          ": start dockerd or use runtime: process (docker said: ", FirstLine(result->err), ")"));
    }
    return absl::FailedPreconditionError(absl::StrCat("image ", image, " not present on ",
                                                      options_.node_name, ": docker pull ", image,
                                                      " (or fleet stage image ", image, ")"));
  }
  std::vector<std::string> fields = absl::StrSplit(FirstLine(result->out), '\t');
  if (fields.size() != 2) {
    return absl::InternalError(
        absl::StrCat("docker image inspect ", image, " said '", FirstLine(result->out), "'"));
  }
  engine::ImageInfo info;
  info.id = fields[1];
  nlohmann::json entrypoint = nlohmann::json::parse(fields[0], nullptr, /*allow_exceptions=*/false);
  if (entrypoint.is_array()) {
    for (const auto& word : entrypoint) {
      if (word.is_string()) info.entrypoint.push_back(word.get<std::string>());
    }
  }
  return info;
}

absl::Status DockerRuntime::Check(const v1::ShardSpec& spec) {
  RETURN_IF_ERROR(engine::RenderEnvFile(spec).status());
  for (const v1::Mount& mount : spec.mounts()) {
    if (options_.home.empty() && absl::StartsWith(mount.source(), "~")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mount ", mount.source(), " is under ~, but the agent on ", options_.node_name,
          " has no HOME; set HOME in the agent's environment or write an absolute path"));
    }
  }
  return InspectImage(spec.image()).status();
}

void DockerRuntime::PrepareRecord(ShardRecord& record) {
  record.container = engine::ContainerName(record.spec);
}

absl::StatusOr<std::unique_ptr<RunningShard>> DockerRuntime::Launch(const v1::ShardSpec& spec,
                                                                    const std::string& log_path) {
  ASSIGN_OR_RETURN(engine::ImageInfo image, InspectImage(spec.image()));
  std::string name = engine::ContainerName(spec);
  std::string cache_root = absl::StrCat(options_.cache_root, "/", spec.group());
  ASSIGN_OR_RETURN(std::string env, engine::RenderEnvFile(spec));
  std::string env_file = engine::EnvFilePath(options_.state_dir, spec);
  v1::AgentPaths paths;
  paths.set_home(options_.home);
  paths.set_state_dir(options_.state_dir);
  paths.set_cache_root(options_.cache_root);
  std::vector<std::string> argv = engine::RenderDockerRunOn(spec, paths, image);
  argv[0] = options_.docker;
  // Docker would create missing bind-mount sources owned by root; create the caches first.
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    absl::string_view mount = argv[i + 1];
    if (argv[i] != "-v" || !absl::ConsumePrefix(&mount, cache_root + "/")) continue;
    RETURN_IF_ERROR(
        MakeDirectories(absl::StrCat(cache_root, "/", mount.substr(0, mount.find(':'))), 0755));
  }
  // 0600: the environment may hold secrets (HF_TOKEN) that only the agent's user may read.
  RETURN_IF_ERROR(WriteFileAtomically(env_file, env, 0600));
  absl::StatusOr<RunResult> ran = runner_->Run({.argv = std::move(argv)}, kRunTimeout);
  // The container has its environment once `docker run` returns: no secret stays at rest.
  ::unlink(env_file.c_str());
  ASSIGN_OR_RETURN(RunResult run, std::move(ran));
  if (!run.ok()) {
    // A container that was created but could not start keeps its name: remove it so the next
    // attempt is not refused for a name conflict.
    runner_->Run({.argv = {options_.docker, "rm", "--force", name}}, kCommandTimeout).IgnoreError();
    std::string said = std::string(absl::StripAsciiWhitespace(run.err));
    // runc's "error setting rlimit type 8" (RLIMIT_MEMLOCK): dockerd's own hard limit is lower
    // than what --ulimit memlock asks for, and dockerd may not raise it.
    if (absl::StrContains(said, "rlimit") && absl::StrContains(said, "operation not permitted")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "memlock ", spec.has_memlock_bytes() ? FormatMemlock(spec.memlock_bytes()) : "unlimited",
          " could not be granted to container ", name, " on ", options_.node_name,
          ": the Docker engine's own hard memlock limit is lower; run dockerd with "
          "LimitMEMLOCK=infinity (systemctl edit docker) or set \"default-ulimits\": "
          "{\"memlock\": {\"Name\": \"memlock\", \"Hard\": -1, \"Soft\": -1}} in "
          "/etc/docker/daemon.json, then restart docker (docker said: ",
          FirstLine(said), ")"));
    }
    if (DaemonUnreachable(said)) {
      return absl::FailedPreconditionError(absl::StrCat("no Docker engine on ", options_.node_name,
                                                        ": start dockerd or use runtime: process"));
    }
    return absl::InternalError(absl::StrCat("docker run ", name, " failed: ", said));
  }
  auto shard = std::make_unique<DockerShard>(runner_, options_.docker, name);
  RETURN_IF_ERROR(shard->StartWaiter());
  RETURN_IF_ERROR(shard->StartFollower(log_path, std::nullopt));
  return shard;
}

absl::StatusOr<std::unique_ptr<RunningShard>> DockerRuntime::Adopt(const ShardRecord& record,
                                                                   const std::string& log_path) {
  const v1::ShardSpec& spec = record.spec;
  // A previous agent that died during `docker run` left the env file behind.
  ::unlink(engine::EnvFilePath(options_.state_dir, spec).c_str());
  std::string name = record.container.empty() ? engine::ContainerName(spec) : record.container;
  ASSIGN_OR_RETURN(
      RunResult listed,
      runner_->Run(
          {.argv = {options_.docker, "ps", "--all", "--filter",
                    absl::StrCat("label=fleet.group=", spec.group()), "--filter",
                    absl::StrCat("label=fleet.generation=", spec.generation()), "--filter",
                    absl::StrCat("label=fleet.rank=", spec.rank()), "--format", "{{.Names}}"}},
          kCommandTimeout));
  if (!listed.ok()) {
    return absl::UnavailableError(absl::StrCat("docker ps failed: ", FirstLine(listed.err)));
  }
  std::vector<absl::string_view> names = absl::StrSplit(listed.out, '\n', absl::SkipEmpty());
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    return absl::NotFoundError(absl::StrCat("container ", name, " is gone"));
  }
  // The previous agent's `docker logs` may have outlived it (killed with SIGKILL): one writer.
  if (record.helper_pid > 0) {
    StopProcess(record.helper_pid, record.helper_start_ticks, absl::Seconds(1), runner_)
        .IgnoreError();
  }
  // What the previous agent copied ends about when the file was last written.
  std::optional<absl::Time> since;
  struct stat st {};
  if (::stat(log_path.c_str(), &st) == 0 && st.st_size > 0) {
    since = absl::TimeFromTimespec(st.st_mtim);
  }
  // An exited container is adopted too: `docker wait` reports its exit code at once, and
  // stopping it removes it.
  auto shard = std::make_unique<DockerShard>(runner_, options_.docker, name);
  RETURN_IF_ERROR(shard->StartWaiter());
  RETURN_IF_ERROR(shard->StartFollower(log_path, since));
  return shard;
}

}  // namespace fleet::agent
