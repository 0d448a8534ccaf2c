// Shards as Docker containers (docker_runtime.h).
#include "agent/shards/docker_runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "agent/shards/process_runtime.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace fleet::agent {
namespace {

constexpr absl::Duration kCommandTimeout = absl::Seconds(30);
// `docker run` of a present image; pulling is `fleet stage image`'s job, never a start's.
constexpr absl::Duration kRunTimeout = absl::Minutes(2);

struct CommandResult {
  int wait_status = 0;
  std::string out;
  std::string err;
  bool ok() const { return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0; }
};

// Starts `argv` (argv[0] looked up in PATH) with stdin from /dev/null and stdout and stderr on
// the given descriptors; nothing else of the agent stays open in it.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return ErrnoStatus(absl::StrCat("start ", argv[0]), rc);
  return pid;
}

// Runs `argv` to completion, collecting its output; kills it past `timeout`.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe2");
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return ErrnoStatus("pipe2");
  }
  absl::StatusOr<pid_t> pid = Spawn(argv, out[1], err[1]);
  ::close(out[1]);
  ::close(err[1]);
  if (!pid.ok()) {
    ::close(out[0]);
    ::close(err[0]);
    return pid.status();
  }
  CommandResult result;
  struct pollfd fds[2] = {{.fd = out[0], .events = POLLIN, .revents = 0},
                          {.fd = err[0], .events = POLLIN, .revents = 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (open_fds > 0) {
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) {
      timed_out = true;
      break;
    }
    int r = ::poll(fds, 2, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  if (timed_out) ::kill(*pid, SIGKILL);
  while (::waitpid(*pid, &result.wait_status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(absl::StrJoin(argv, " "), " gave no answer in ",
                                                    absl::FormatDuration(timeout)));
  }
  return result;
}

std::string FirstLine(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  return std::string(text.substr(0, text.find('\n')));
}

bool DaemonUnreachable(absl::string_view err) {
  return absl::StrContains(err, "Cannot connect to the Docker daemon") ||
         absl::StrContains(err, "Is the docker daemon running") ||
         absl::StrContains(err, "error during connect");
}

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool Readable(int fd, absl::Duration timeout) {
  struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

// Ends a helper process of ours (`docker wait`, `docker logs`) and reaps it.
void EndHelper(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

class DockerShard final : public RunningShard {
 public:
  DockerShard(std::string docker, std::string name)
      : docker_(std::move(docker)), name_(std::move(name)) {}
  ~DockerShard() override {
    EndHelper(follower_pid_);
    EndHelper(wait_pid_);
    if (wait_pidfd_ >= 0) ::close(wait_pidfd_);
    if (wait_out_ >= 0) ::close(wait_out_);
  }

  // `docker wait NAME`: prints the exit code once the container ends (at once if it has).
  absl::Status StartWaiter() {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe2");
    int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    absl::StatusOr<pid_t> pid = Spawn({docker_, "wait", name_}, out[1], devnull);
    ::close(out[1]);
    ::close(devnull);
    if (!pid.ok()) {
      ::close(out[0]);
      return pid.status();
    }
    int pidfd = PidfdOpen(*pid);
    if (pidfd < 0) {
      absl::Status st = ErrnoStatus("pidfd_open");
      EndHelper(*pid);
      ::close(out[0]);
      return st;
    }
    wait_pid_ = *pid;
    wait_pidfd_ = pidfd;
    wait_out_ = out[0];
    return absl::OkStatus();
  }

  // `docker logs --follow NAME` appending to the log file; `since` skips what an earlier
  // agent already copied.
  absl::Status StartFollower(const std::string& log_path, std::optional<absl::Time> since) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(absl::StrCat("open ", log_path));
    std::vector<std::string> argv = {docker_, "logs", "--follow"};
    if (since) {
      argv.push_back("--since");
      argv.push_back(absl::FormatTime("%Y-%m-%dT%H:%M:%E9SZ", *since, absl::UTCTimeZone()));
    }
    argv.push_back(name_);
    absl::StatusOr<pid_t> pid = Spawn(argv, fd, fd);
    ::close(fd);
    if (!pid.ok()) return pid.status();
    follower_pid_ = *pid;
    follower_ticks_ = ProcessStartTicks(*pid).value_or(0);
    return absl::OkStatus();
  }

  int exit_fd() const override { return wait_pidfd_; }

  std::optional<std::string> OnExitReady() override {
    absl::MutexLock lock(&mu_);
    if (exit_) return exit_;
    if (!Readable(wait_pidfd_, absl::ZeroDuration())) return std::nullopt;
    std::string out;
    char buf[256];
    ssize_t n;
    while ((n = ::read(wait_out_, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    int status = 0;
    ::waitpid(wait_pid_, &status, 0);
    wait_pid_ = -1;
    int code = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(out), &code)) {
      exit_ = absl::StrCat("exited with status ", code);
      return exit_;
    }
    // `docker wait` itself failed (the daemon restarted, say): ask where the container is.
    absl::StatusOr<CommandResult> state = RunCommand(
        {docker_, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name_},
        kCommandTimeout);
    std::vector<std::string> words;
    if (state.ok() && state->ok()) words = absl::StrSplit(FirstLine(state->out), ' ');
    if (words.size() == 2 && words[0] == "true") {
      ::close(wait_pidfd_);
      ::close(wait_out_);
      wait_pidfd_ = wait_out_ = -1;
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
    ASSIGN_OR_RETURN(
        CommandResult stopped,
        RunCommand({docker_, "stop", "-t", absl::StrCat(seconds), name_}, grace + kCommandTimeout));
    if (!stopped.ok() && !absl::StrContains(stopped.err, "No such container")) {
      return absl::UnavailableError(
          absl::StrCat("docker stop ", name_, " failed: ", FirstLine(stopped.err)));
    }
    ASSIGN_OR_RETURN(CommandResult removed,
                     RunCommand({docker_, "rm", "--force", name_}, kCommandTimeout));
    if (!removed.ok() && !absl::StrContains(removed.err, "No such container")) {
      return absl::UnavailableError(
          absl::StrCat("docker rm ", name_, " failed: ", FirstLine(removed.err)));
    }
    return absl::OkStatus();
  }

  void FillRecord(ShardRecord& record) const override {
    record.container = name_;
    record.helper_pid = follower_pid_;
    record.helper_start_ticks = follower_ticks_;
  }
  pid_t pid() const override { return 0; }
  std::string container() const override { return name_; }
  std::vector<std::string> warnings() const override { return {}; }

 private:
  const std::string docker_;
  const std::string name_;
  absl::Mutex mu_;
  // Written before the shard is handed to the Supervisor, then only by OnExitReady().
  pid_t wait_pid_ = -1;
  int wait_pidfd_ = -1;
  int wait_out_ = -1;
  pid_t follower_pid_ = -1;
  uint64_t follower_ticks_ = 0;
  std::optional<std::string> exit_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<engine::ImageInfo> DockerRuntime::InspectImage(const std::string& image) {
  absl::StatusOr<CommandResult> result =
      RunCommand({options_.docker, "image", "inspect", "--format",
                  "{{json .Config.Entrypoint}}\t{{.Id}}", image},
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
  std::vector<std::string> argv = engine::RenderDockerRun(spec, cache_root, env_file, image);
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
  absl::StatusOr<CommandResult> ran = RunCommand(argv, kRunTimeout);
  // The container has its environment once `docker run` returns: no secret stays at rest.
  ::unlink(env_file.c_str());
  ASSIGN_OR_RETURN(CommandResult run, std::move(ran));
  if (!run.ok()) {
    // A container that was created but could not start keeps its name: remove it so the next
    // attempt is not refused for a name conflict.
    RunCommand({options_.docker, "rm", "--force", name}, kCommandTimeout).IgnoreError();
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
  auto shard = std::make_unique<DockerShard>(options_.docker, name);
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
      CommandResult listed,
      RunCommand({options_.docker, "ps", "--all", "--filter",
                  absl::StrCat("label=fleet.group=", spec.group()), "--filter",
                  absl::StrCat("label=fleet.generation=", spec.generation()), "--filter",
                  absl::StrCat("label=fleet.rank=", spec.rank()), "--format", "{{.Names}}"},
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
    StopProcess(record.helper_pid, record.helper_start_ticks, absl::Seconds(1)).IgnoreError();
  }
  // What the previous agent copied ends about when the file was last written.
  std::optional<absl::Time> since;
  struct stat st {};
  if (::stat(log_path.c_str(), &st) == 0 && st.st_size > 0) {
    since = absl::TimeFromTimespec(st.st_mtim);
  }
  // An exited container is adopted too: `docker wait` reports its exit code at once, and
  // stopping it removes it.
  auto shard = std::make_unique<DockerShard>(options_.docker, name);
  RETURN_IF_ERROR(shard->StartWaiter());
  RETURN_IF_ERROR(shard->StartFollower(log_path, since));
  return shard;
}

}  // namespace fleet::agent
