// The Supervisor's policy: generations, states, records, re-adoption (supervisor_impl.h).
#include "agent/shards/supervisor_impl.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/host_port.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"

namespace fleet::agent {
namespace {

constexpr absl::Duration kMonitorPeriod = absl::Milliseconds(100);
constexpr absl::Duration kTcpPollPeriod = absl::Milliseconds(50);
constexpr absl::Duration kTcpConnectTimeout = absl::Milliseconds(200);
constexpr absl::Duration kDefaultWaitTimeout = absl::Minutes(10);
constexpr absl::Duration kDefaultReadinessPeriod = absl::Milliseconds(100);
constexpr absl::Duration kDefaultStopGrace = absl::Seconds(10);
// After a runtime's Stop returned, the monitor reports the end within one poll; this bounds
// the wait should it not (a shard that survived SIGKILL).
constexpr absl::Duration kEndReportTimeout = absl::Seconds(5);

absl::Duration DurationOf(const google::protobuf::Duration& d, absl::Duration fallback) {
  if (d.seconds() == 0 && d.nanos() == 0) return fallback;
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

void SetTime(google::protobuf::Timestamp* out, absl::Time t) {
  timespec ts = absl::ToTimespec(t);
  out->set_seconds(ts.tv_sec);
  out->set_nanos(static_cast<int32_t>(ts.tv_nsec));
}

// "HOST:PORT" or "[V6]:PORT" with a host: a TCP endpoint a shard may wait for.
absl::StatusOr<HostPort> ParseEndpoint(absl::string_view host_port) {
  absl::StatusOr<HostPort> parsed = ParseHostPort(host_port);
  if (parsed.ok() && parsed->host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", host_port, "' names no host"));
  }
  return parsed;
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

absl::Status Validate(const v1::ShardSpec& spec) {
  if (!ValidName(spec.group())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group name '", spec.group(), "' must be 1 to 64 letters, digits, '-', '_' or '.'"));
  }
  if (spec.generation() == 0) {
    return absl::InvalidArgumentError("generation must be at least 1");
  }
  if (spec.world_size() > 0 && spec.rank() >= spec.world_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", spec.rank(), " is outside world size ", spec.world_size()));
  }
  switch (spec.runtime()) {
    case v1::SHARD_RUNTIME_PROCESS:
      if (spec.argv().empty()) return absl::InvalidArgumentError("process shard without argv");
      break;
    case v1::SHARD_RUNTIME_DOCKER:
      if (spec.image().empty()) return absl::InvalidArgumentError("docker shard without image");
      break;
    default:
      return absl::InvalidArgumentError("shard runtime must be process or docker");
  }
  if (!spec.wait_for_tcp().empty() && !ParseEndpoint(spec.wait_for_tcp()).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("wait_for_tcp '", spec.wait_for_tcp(), "' is not HOST:PORT"));
  }
  for (const v1::ShardFile& file : spec.files()) {
    if (spec.runtime() != v1::SHARD_RUNTIME_PROCESS) {
      return absl::InvalidArgumentError("files are for process shards only");
    }
    if (!ValidName(file.name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shard file name '", file.name(), "' must be 1 to 64 letters, digits, '-', '_' or '.'"));
    }
  }
  for (const std::string& also : spec.also_wait_for_tcp()) {
    if (spec.wait_for_tcp().empty() || !ParseEndpoint(also).ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("also_wait_for_tcp '", also, "' needs wait_for_tcp and must be HOST:PORT"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

v1::ShardSpec WithControllerAccess(v1::ShardSpec spec, const ControllerAccess& access) {
  if (access.address.empty()) return spec;
  v1::EnvVar& address = *spec.add_env();
  address.set_name(kControllerAddrEnv);
  address.set_value(access.address);
  if (access.ca_path.empty()) return spec;
  v1::EnvVar& ca = *spec.add_env();
  ca.set_name(kControllerCaEnv);
  ca.set_value(access.ca_path);
  if (spec.runtime() == v1::SHARD_RUNTIME_DOCKER) {
    v1::Mount& mount = *spec.add_mounts();
    mount.set_source(access.ca_path);
    mount.set_target(access.ca_path);
    mount.set_read_only(true);
  }
  return spec;
}

// One shard, shared by the entry list, its lifecycle thread and the monitor thread. Fields
// other than `spec` and `runtime` are guarded by SupervisorImpl::mu_.
struct SupervisorImpl::Entry {
  v1::ShardSpec spec;
  ShardRuntime* runtime = nullptr;
  v1::ShardStatus status;
  ShardRecord record;
  bool record_written = false;
  std::unique_ptr<ShardLog> log;
  std::unique_ptr<RunningShard> running;
  std::thread lifecycle;
  bool stop_requested = false;
  bool ended = false;          // `running` has ended (or never started)
  bool stopped = false;        // StopEntry finished
  std::string failed_because;  // why WatchHead stopped it: the message of its end
  absl::Time wait_deadline;    // wait_for_tcp gives up here; counted from the order
  absl::CondVar cv;            // stop_requested, ended or stopped changed
};

absl::Status DialTcp(const std::string& host_port, absl::Duration timeout) {
  absl::StatusOr<HostPort> endpoint = ParseEndpoint(host_port);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", host_port, "' is not HOST:PORT"));
  }
  struct addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* addrs = nullptr;
  if (int rc = ::getaddrinfo(endpoint->host.c_str(), absl::StrCat(endpoint->port).c_str(), &hints,
                             &addrs);
      rc != 0) {
    return absl::UnavailableError(absl::StrCat(host_port, ": ", ::gai_strerror(rc)));
  }
  std::string error = "no address";
  for (struct addrinfo* a = addrs; a != nullptr; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) continue;
    int rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      struct pollfd p = {.fd = fd.get(), .events = POLLOUT, .revents = 0};
      if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <= 0) {
        err = ETIMEDOUT;
      } else {
        socklen_t len = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    fd.reset();
    if (err == 0) {
      ::freeaddrinfo(addrs);
      return absl::OkStatus();
    }
    error = std::strerror(err);
  }
  ::freeaddrinfo(addrs);
  return absl::UnavailableError(absl::StrCat(host_port, ": ", error));
}

absl::StatusOr<std::unique_ptr<SupervisorImpl>> SupervisorImpl::Create(SupervisorOptions options,
                                                                       SupervisorDeps deps) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("state_dir is empty");
  if (deps.clock == nullptr) deps.clock = RealClock::Get();
  for (const char* sub : {"/shards", "/logs", "/cache"}) {
    RETURN_IF_ERROR(MakeDirectories(absl::StrCat(options.state_dir, sub), 0755));
  }
  int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) return ErrnoStatus("eventfd");
  std::unique_ptr<SupervisorImpl> supervisor(
      new SupervisorImpl(std::move(options), std::move(deps), wake_fd));
  RETURN_IF_ERROR(supervisor->Adopt());
  supervisor->monitor_ = std::thread(&SupervisorImpl::Monitor, supervisor.get());
  return supervisor;
}

SupervisorImpl::SupervisorImpl(SupervisorOptions options, SupervisorDeps deps, int wake_fd)
    : options_(std::move(options)), deps_(std::move(deps)), wake_fd_(wake_fd) {}

SupervisorImpl::~SupervisorImpl() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    for (auto& e : entries_) {
      e->cv.SignalAll();
      if (e->lifecycle.joinable()) threads.push_back(std::move(e->lifecycle));
    }
  }
  // Lifecycle threads return within a probe or connect timeout (a fencing stop they are in
  // finishes first, within its grace); the monitor keeps reporting ends until they are done.
  for (std::thread& t : threads) t.join();
  {
    absl::MutexLock lock(&mu_);
    monitor_shutdown_ = true;
  }
  Wake();
  if (monitor_.joinable()) monitor_.join();
  ::close(wake_fd_);
}

ShardRuntime* SupervisorImpl::RuntimeFor(const v1::ShardSpec& spec) {
  return spec.runtime() == v1::SHARD_RUNTIME_DOCKER ? deps_.docker_runtime.get()
                                                    : deps_.process_runtime.get();
}

absl::Status SupervisorImpl::WriteShardFiles(const v1::ShardSpec& spec) const {
  if (spec.files().empty()) return absl::OkStatus();
  // Only the agent's user reads them: the router's admin socket is created beside them.
  RETURN_IF_ERROR(MakeDirectories(spec.working_dir(), 0700));
  for (const v1::ShardFile& file : spec.files()) {
    RETURN_IF_ERROR(
        WriteFileAtomically(absl::StrCat(spec.working_dir(), "/", file.name()), file.content()));
  }
  return absl::OkStatus();
}

ShardLogOptions SupervisorImpl::LogOptions(const v1::ShardSpec& spec) const {
  return {
      .path = absl::StrCat(options_.state_dir, "/logs/", spec.group(), "/r", spec.rank(), ".log"),
      .max_bytes = options_.log_max_bytes,
      .files_kept = options_.log_files_kept};
}

void SupervisorImpl::WriteRecord(Entry& entry) {
  if (entry.stopped) return;
  entry.record.spec = entry.spec;
  if (entry.log) entry.record.log_base = entry.log->base();
  if (entry.running) entry.running->FillRecord(entry.record);
  std::string path = ShardRecordPath(options_.state_dir, entry.spec);
  // 0600: the record holds the spec, whose env may carry secrets (HF_TOKEN).
  absl::Status st = WriteFileAtomically(path, SerializeShardRecord(entry.record), 0600);
  if (!st.ok()) {
    // The shard runs either way; only re-adoption after an agent restart is at stake.
    Log(LogLevel::kError, "supervisor", "cannot write shard record",
        {{"path", path}, {"error", st.message()}});
    return;
  }
  entry.record_written = true;
}

void SupervisorImpl::SetState(Entry& entry, v1::ShardState state, absl::string_view message) {
  bool changed = entry.status.state() != state;
  entry.status.set_state(state);
  entry.status.set_message(std::string(message));
  if (changed) {
    SetTime(entry.status.mutable_changed_at(), deps_.clock->Now());
    Log(LogLevel::kInfo, "supervisor", "shard state",
        {{"group", entry.spec.group()},
         {"generation", absl::StrCat(entry.spec.generation())},
         {"rank", absl::StrCat(entry.spec.rank())},
         {"state", v1::ShardState_Name(state)},
         {"message", message}});
  }
}

void SupervisorImpl::Notify() {
  absl::MutexLock lock(&notify_mu_);
  if (on_change_) on_change_();
}

void SupervisorImpl::SetOnChange(absl::AnyInvocable<void()> on_change) {
  absl::MutexLock lock(&notify_mu_);
  on_change_ = std::move(on_change);
}

void SupervisorImpl::Wake() {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_, &one, sizeof one);
  (void)ignored;
}

absl::Status SupervisorImpl::Adopt() {
  std::string dir = absl::StrCat(options_.state_dir, "/shards");
  std::error_code error;
  std::vector<std::string> paths;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (absl::EndsWith(it->path().filename().string(), ".record")) {
      paths.push_back(it->path().string());
    }
  }
  if (error) return ErrnoStatus(absl::StrCat("open ", dir), error.value());
  std::sort(paths.begin(), paths.end());

  std::vector<std::shared_ptr<Entry>> adopted;
  for (const std::string& path : paths) {
    absl::StatusOr<std::string> text = ReadFileToString(path);
    absl::StatusOr<ShardRecord> record =
        text.ok() ? ParseShardRecord(*text) : absl::StatusOr<ShardRecord>(text.status());
    if (!record.ok()) {
      Log(LogLevel::kError, "supervisor", "skipping unreadable shard record",
          {{"path", path}, {"error", record.status().message()}});
      continue;
    }
    auto entry = std::make_shared<Entry>();
    entry->spec = record->spec;
    entry->runtime = RuntimeFor(entry->spec);
    entry->record = *record;
    entry->record_written = true;
    entry->log = std::make_unique<ShardLog>(LogOptions(entry->spec), record->log_base);
    v1::ShardStatus& status = entry->status;
    status.set_group(entry->spec.group());
    status.set_generation(entry->spec.generation());
    status.set_rank(entry->spec.rank());
    status.set_runtime(entry->spec.runtime());
    status.set_pid(record->pid);
    status.set_container(record->container);
    SetTime(status.mutable_started_at(), record->started_at);
    absl::StatusOr<std::unique_ptr<RunningShard>> running =
        entry->runtime->Adopt(*record, LogOptions(entry->spec).path);
    absl::MutexLock lock(&mu_);
    if (running.ok()) {
      entry->running = std::move(*running);
      SetState(*entry, v1::SHARD_STATE_RUNNING, "re-adopted after an agent restart");
    } else {
      entry->ended = true;
      SetState(
          *entry, v1::SHARD_STATE_FAILED,
          absl::IsNotFound(running.status())
              ? "ended while the agent was down"
              : absl::StrCat("cannot tell whether it still runs: ", running.status().message()));
    }
    entries_.push_back(entry);
    adopted.push_back(entry);
  }

  // Two generations of a group were recorded when an agent died during a fencing stop: the
  // newest finishes it, so ranks of two generations never run side by side.
  std::map<std::string, uint64_t> newest;
  for (const auto& e : adopted) {
    uint64_t& g = newest[e->spec.group()];
    g = std::max<uint64_t>(g, e->spec.generation());
  }
  std::map<std::string, std::vector<std::shared_ptr<Entry>>> older;
  for (const auto& e : adopted) {
    if (e->spec.generation() < newest[e->spec.group()]) older[e->spec.group()].push_back(e);
  }
  absl::MutexLock lock(&mu_);
  for (const auto& e : adopted) {
    if (e->spec.generation() < newest[e->spec.group()]) continue;
    std::vector<std::shared_ptr<Entry>> to_stop = std::move(older[e->spec.group()]);
    older[e->spec.group()].clear();
    if (e->ended && to_stop.empty()) continue;
    e->lifecycle = std::thread(&SupervisorImpl::Lifecycle, this, e, std::move(to_stop), false);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ShardStatus> SupervisorImpl::Start(const v1::ShardSpec& spec) {
  RETURN_IF_ERROR(Validate(spec));
  ShardRuntime* runtime = RuntimeFor(spec);
  if (runtime == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("this agent has no ", v1::ShardRuntime_Name(spec.runtime()), " runtime"));
  }
  // Present already (a re-sent order), or fenced off by a newer generation.
  auto present = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::StatusOr<v1::ShardStatus> {
    for (const auto& e : entries_) {
      if (e->spec.group() != spec.group()) continue;
      if (e->spec.generation() > spec.generation()) {
        return absl::AbortedError(absl::StrCat("group ", spec.group(), " already runs generation ",
                                               e->spec.generation(), "; this order is for ",
                                               spec.generation()));
      }
      if (e->spec.generation() == spec.generation() && e->spec.rank() == spec.rank()) {
        return e->status;
      }
    }
    return absl::NotFoundError("");
  };
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<v1::ShardStatus> existing = present();
    if (!absl::IsNotFound(existing.status())) return existing;
  }
  RETURN_IF_ERROR(runtime->Check(spec));

  v1::ShardStatus status;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the supervisor is shutting down");
    absl::StatusOr<v1::ShardStatus> existing = present();
    if (!absl::IsNotFound(existing.status())) return existing;
    std::vector<std::shared_ptr<Entry>> older;
    for (const auto& e : entries_) {
      if (e->spec.group() != spec.group() || e->spec.generation() >= spec.generation()) continue;
      older.push_back(e);
      if (!e->stop_requested && !e->ended) {
        SetState(*e, v1::SHARD_STATE_STOPPING,
                 absl::StrCat("replaced by generation ", spec.generation()));
      }
    }
    auto entry = std::make_shared<Entry>();
    entry->spec = spec;
    entry->spec.clear_working_dir();
    if (!spec.files().empty()) {
      entry->spec.set_working_dir(absl::StrCat(options_.state_dir, "/run/", spec.group()));
    }
    entry->runtime = runtime;
    entry->status.set_group(spec.group());
    entry->status.set_generation(spec.generation());
    entry->status.set_rank(spec.rank());
    entry->status.set_runtime(spec.runtime());
    entry->wait_deadline =
        deps_.clock->Now() + DurationOf(spec.wait_timeout(), kDefaultWaitTimeout);
    SetState(*entry, v1::SHARD_STATE_STARTING,
             !older.empty() ? "stopping the older generation first"
             : !spec.wait_for_tcp().empty()
                 ? absl::StrCat("waiting for ", spec.wait_for_tcp(), " to accept connections")
                 : "starting");
    entries_.push_back(entry);
    entry->lifecycle = std::thread(&SupervisorImpl::Lifecycle, this, entry, std::move(older), true);
    status = entry->status;
  }
  Notify();
  return status;
}

void SupervisorImpl::Lifecycle(std::shared_ptr<Entry> entry,
                               std::vector<std::shared_ptr<Entry>> older, bool launch) {
  for (const auto& o : older) {
    StopEntry(o);
    Forget(o);
  }
  if (!launch) {
    if (ProbeUntilReady(*entry)) WatchHead(*entry);
    return;
  }
  const v1::ShardSpec& spec = entry->spec;
  // wait_for_tcp, then each of also_wait_for_tcp (llama.cpp's head waits for every rpc-server).
  std::vector<std::string> waits;
  if (!spec.wait_for_tcp().empty()) waits.push_back(spec.wait_for_tcp());
  waits.insert(waits.end(), spec.also_wait_for_tcp().begin(), spec.also_wait_for_tcp().end());
  for (const std::string& address : waits) {
    {
      absl::MutexLock lock(&mu_);
      SetState(*entry, v1::SHARD_STATE_STARTING,
               absl::StrCat("waiting for ", address, " to accept connections"));
    }
    Notify();
    if (!WaitForTcp(*entry, address)) return;
  }
  ShardLogOptions log_options = LogOptions(spec);
  absl::Status prepared =
      MakeDirectories(log_options.path.substr(0, log_options.path.rfind('/')), 0755);
  if (prepared.ok()) prepared = ShardLog::StartFresh(log_options);
  if (prepared.ok()) prepared = WriteShardFiles(spec);
  {
    absl::MutexLock lock(&mu_);
    if (entry->stop_requested || shutdown_) return;
    if (!prepared.ok()) {
      entry->ended = true;
      SetState(*entry, v1::SHARD_STATE_FAILED,
               absl::StrCat("cannot prepare the log file: ", prepared.message()));
      entry->cv.SignalAll();
    } else {
      entry->log = std::make_unique<ShardLog>(log_options, 0);
      entry->record.spec = spec;
      entry->record.started_at = deps_.clock->Now();
      entry->runtime->PrepareRecord(entry->record);
      WriteRecord(*entry);
    }
  }
  if (!prepared.ok()) {
    Notify();
    return;
  }
  absl::StatusOr<std::unique_ptr<RunningShard>> running =
      entry->runtime->Launch(spec, log_options.path);
  {
    absl::MutexLock lock(&mu_);
    if (!running.ok()) {
      entry->ended = true;
      SetState(*entry, v1::SHARD_STATE_FAILED, running.status().message());
      ::unlink(ShardRecordPath(options_.state_dir, spec).c_str());
      entry->record_written = false;
      entry->cv.SignalAll();
    } else {
      entry->running = std::move(*running);
      entry->status.set_pid(entry->running->pid());
      entry->status.set_container(entry->running->container());
      for (const std::string& w : entry->running->warnings()) entry->status.add_warnings(w);
      SetTime(entry->status.mutable_started_at(), entry->record.started_at);
      SetState(*entry, v1::SHARD_STATE_RUNNING, "");
      WriteRecord(*entry);
    }
  }
  Wake();
  Notify();
  if (running.ok() && ProbeUntilReady(*entry)) WatchHead(*entry);
}

bool SupervisorImpl::WaitForTcp(Entry& entry, const std::string& address) {
  const v1::ShardSpec& spec = entry.spec;
  absl::Duration timeout = DurationOf(spec.wait_timeout(), kDefaultWaitTimeout);
  for (;;) {
    if (deps_.dial(address, kTcpConnectTimeout).ok()) return true;
    if (deps_.clock->Now() >= entry.wait_deadline) {
      {
        absl::MutexLock lock(&mu_);
        if (entry.stop_requested || shutdown_) return false;
        entry.ended = true;
        SetState(
            entry, v1::SHARD_STATE_FAILED,
            absl::StrCat(
                address, " did not accept connections within ", absl::FormatDuration(timeout),
                address == spec.wait_for_tcp() && spec.rank() > 0
                    ? absl::StrCat(": the head's master port never opened: see "
                                   "`fleet logs ",
                                   spec.group(), " --rank 0`")
                    : absl::StrCat(": a rank of group ", spec.group(),
                                   " never opened its port: see `fleet logs ", spec.group(), "`")));
        entry.cv.SignalAll();
      }
      Notify();
      return false;
    }
    if (SleepUnlessStopped(entry, kTcpPollPeriod)) return false;
  }
}

bool SupervisorImpl::ProbeUntilReady(Entry& entry) {
  const v1::ReadinessProbe& probe = entry.spec.readiness();
  absl::Duration period = DurationOf(probe.period(), kDefaultReadinessPeriod);
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (entry.stop_requested || entry.ended || shutdown_) return false;
      if (probe.port() == 0 || !deps_.probe) {
        SetState(entry, v1::SHARD_STATE_READY, "");
      }
    }
    if (probe.port() == 0 || !deps_.probe) break;
    absl::Status st = deps_.probe(probe);
    {
      absl::MutexLock lock(&mu_);
      if (entry.stop_requested || entry.ended || shutdown_) return false;
      if (st.ok()) {
        SetState(entry, v1::SHARD_STATE_READY, "");
      } else {
        SetState(entry, v1::SHARD_STATE_RUNNING, st.message());
      }
    }
    if (st.ok()) break;
    if (SleepUnlessStopped(entry, period)) return false;
  }
  Notify();
  return true;
}

void SupervisorImpl::WatchHead(Entry& entry) {
  const v1::ReadinessProbe& probe = entry.spec.readiness();
  if (probe.port() == 0 || !probe.has_watch() || !deps_.look_at_head || !deps_.one_token) return;
  const absl::Duration period = DurationOf(probe.watch().period(), absl::Seconds(5));
  HeadWatchJudge judge(probe.watch(), deps_.clock->Now());
  // The previous metrics read, for `fleet health`'s token rate.
  std::optional<HeadMetrics> last;
  absl::Time last_at;
  std::optional<std::string> why;
  while (!why.has_value()) {
    if (SleepUnlessStopped(entry, period)) return;
    {
      absl::MutexLock lock(&mu_);
      if (entry.ended) return;
    }
    HeadLook look = deps_.look_at_head(probe);
    const absl::Time now = deps_.clock->Now();
    if (look.metrics.has_value()) {
      absl::MutexLock lock(&mu_);
      *entry.status.mutable_engine() = EngineFiguresOf(*look.metrics, now, last, last_at);
      last = look.metrics;
      last_at = now;
    }
    why = judge.Observe(now, look.health, look.metrics);
    if (!why.has_value() && judge.WantsCompletion(deps_.clock->Now())) {
      absl::Status answered = deps_.one_token(probe, judge.idle_probe_timeout());
      why = judge.ObserveCompletion(deps_.clock->Now(), answered);
    }
  }
  RunningShard* running = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (entry.ended || entry.stop_requested || shutdown_) return;
    entry.failed_because = *why;
    SetState(entry, v1::SHARD_STATE_STOPPING, absl::StrCat("stopping: ", *why));
    running = entry.running.get();
  }
  Notify();
  Log(LogLevel::kWarning, "supervisor", "stopping a head that stopped working",
      {{"group", entry.spec.group()}, {"rank", absl::StrCat(entry.spec.rank())}, {"why", *why}});
  // The monitor reports the end (FAILED, with the reason); a later StopEntry finds it ended.
  if (running != nullptr) {
    (void)running->Stop(DurationOf(entry.spec.stop_grace(), kDefaultStopGrace));
  }
}

bool SupervisorImpl::SleepUnlessStopped(Entry& entry, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  absl::Time deadline = absl::Now() + timeout;
  while (!entry.stop_requested && !shutdown_ && absl::Now() < deadline) {
    entry.cv.WaitWithDeadline(&mu_, deadline);
  }
  return entry.stop_requested || shutdown_;
}

void SupervisorImpl::StopEntry(const std::shared_ptr<Entry>& entry) {
  std::thread lifecycle;
  {
    absl::MutexLock lock(&mu_);
    if (entry->stop_requested) {
      while (!entry->stopped) entry->cv.Wait(&mu_);
      return;
    }
    entry->stop_requested = true;
    if (!entry->ended) SetState(*entry, v1::SHARD_STATE_STOPPING, "stopping");
    lifecycle = std::move(entry->lifecycle);
    entry->cv.SignalAll();
  }
  Notify();
  if (lifecycle.joinable()) lifecycle.join();

  // An ended shard is stopped too: its container must be removed, its group's stragglers
  // killed.
  RunningShard* running = nullptr;
  {
    absl::MutexLock lock(&mu_);
    running = entry->running.get();
  }
  absl::Status stopped = absl::OkStatus();
  if (running != nullptr) {
    stopped = running->Stop(DurationOf(entry->spec.stop_grace(), kDefaultStopGrace));
  }
  {
    absl::MutexLock lock(&mu_);
    absl::Time deadline = absl::Now() + kEndReportTimeout;
    while (running != nullptr && !entry->ended && absl::Now() < deadline) {
      entry->cv.WaitWithDeadline(&mu_, deadline);
    }
    if (!entry->ended) {
      entry->ended = true;
      if (running == nullptr) {
        SetState(*entry, v1::SHARD_STATE_EXITED, "stopped before it started");
      } else {
        SetState(*entry, v1::SHARD_STATE_FAILED,
                 absl::StrCat("could not be stopped: ",
                              stopped.ok() ? "its end was never reported" : stopped.message()));
      }
    }
    // A shard that may still run keeps its record, so the next agent finds it.
    if (stopped.ok() && entry->record_written) {
      ::unlink(ShardRecordPath(options_.state_dir, entry->spec).c_str());
      entry->record_written = false;
    }
    entry->stopped = true;
    entry->cv.SignalAll();
  }
  Notify();
}

void SupervisorImpl::Forget(const std::shared_ptr<Entry>& entry) {
  absl::MutexLock lock(&mu_);
  entries_.erase(std::remove(entries_.begin(), entries_.end(), entry), entries_.end());
}

absl::StatusOr<std::vector<v1::ShardStatus>> SupervisorImpl::Stop(absl::string_view group,
                                                                  uint64_t up_to_generation) {
  std::vector<std::shared_ptr<Entry>> victims;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& e : entries_) {
      if (e->spec.group() == group &&
          (up_to_generation == 0 || e->spec.generation() <= up_to_generation)) {
        victims.push_back(e);
      }
    }
  }
  // Stopped side by side: a group's ranks each get their grace period at the same time.
  std::vector<std::thread> stoppers;
  for (const auto& e : victims) stoppers.emplace_back([this, e] { StopEntry(e); });
  for (std::thread& t : stoppers) t.join();
  std::vector<v1::ShardStatus> result;
  for (const auto& e : victims) {
    Forget(e);
    absl::MutexLock lock(&mu_);
    result.push_back(e->status);
  }
  return result;
}

std::vector<v1::ShardStatus> SupervisorImpl::List() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::ShardStatus> result;
  for (const auto& e : entries_) result.push_back(e->status);
  return result;
}

absl::StatusOr<LogChunk> SupervisorImpl::ReadLog(absl::string_view group, uint32_t rank,
                                                 std::optional<uint64_t> offset, int tail_lines,
                                                 size_t max_bytes) {
  std::shared_ptr<Entry> entry;
  ShardLog* log = nullptr;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& e : entries_) {
      if (e->spec.group() != group || e->spec.rank() != rank) continue;
      if (!entry || e->spec.generation() > entry->spec.generation()) entry = e;
    }
    if (!entry) {
      // A stopped shard (a failed group's ranks are stopped) leaves its output on disk until
      // the rank starts again: `fleet logs` still shows why it failed.
      v1::ShardSpec spec;
      spec.set_group(std::string(group));
      spec.set_rank(rank);
      ShardLogOptions log_options = LogOptions(spec);
      if (::access(log_options.path.c_str(), R_OK) == 0) {
        ShardLog stopped(std::move(log_options), 0);
        return offset ? stopped.Read(*offset, max_bytes) : stopped.Tail(tail_lines, max_bytes);
      }
      return absl::NotFoundError(
          absl::StrCat("no shard of group ", group, " rank ", rank, " on ", options_.node_name));
    }
    log = entry->log.get();
  }
  // Not started yet (waiting for the older generation or for wait_for_tcp): nothing written.
  if (log == nullptr) return LogChunk{};
  return offset ? log->Read(*offset, max_bytes) : log->Tail(tail_lines, max_bytes);
}

void SupervisorImpl::Monitor() {
  for (;;) {
    std::vector<std::shared_ptr<Entry>> watched;
    std::vector<struct pollfd> fds = {{.fd = wake_fd_, .events = POLLIN, .revents = 0}};
    std::vector<std::shared_ptr<Entry>> all;
    {
      absl::MutexLock lock(&mu_);
      if (monitor_shutdown_) return;
      all = entries_;
      for (const auto& e : entries_) {
        if (!e->running || e->ended) continue;
        watched.push_back(e);
        fds.push_back({.fd = e->running->exit_fd(), .events = POLLIN, .revents = 0});
      }
    }
    int ready = ::poll(fds.data(), fds.size(), absl::ToInt64Milliseconds(kMonitorPeriod));
    if (ready > 0 && (fds[0].revents & POLLIN)) {
      uint64_t count = 0;
      ssize_t ignored = ::read(wake_fd_, &count, sizeof count);
      (void)ignored;
    }
    bool changed = false;
    for (size_t i = 0; ready > 0 && i < watched.size(); ++i) {
      if (fds[i + 1].revents == 0) continue;
      std::optional<std::string> exit = watched[i]->running->OnExitReady();
      if (!exit) continue;
      Entry& e = *watched[i];
      absl::MutexLock lock(&mu_);
      e.ended = true;
      e.status.set_exit(*exit);
      if (e.stop_requested) {
        SetState(e, v1::SHARD_STATE_EXITED, "stopped");
      } else if (!e.failed_because.empty()) {
        SetState(e, v1::SHARD_STATE_FAILED, e.failed_because);
      } else {
        SetState(e, v1::SHARD_STATE_FAILED, *exit);
      }
      e.cv.SignalAll();
      changed = true;
    }
    for (const auto& e : all) {
      ShardLog* log;
      {
        absl::MutexLock lock(&mu_);
        log = e->log.get();
      }
      if (log == nullptr || !log->Poll()) continue;
      absl::MutexLock lock(&mu_);
      if (e->record_written) WriteRecord(*e);
    }
    if (changed) Notify();
  }
}

}  // namespace fleet::agent
