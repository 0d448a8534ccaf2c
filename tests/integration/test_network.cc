// Builds and tears down a TestNetwork's namespaces, bridge and veths by running iproute2's `ip`.

#include "tests/integration/test_network.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace fleet::testing {
namespace {

// Every namespace this harness makes is "flt-<suffix>-<role>"; the stale sweep deletes only
// names of exactly that shape, so namespaces of anything else on the machine are never touched.
constexpr absl::string_view kNamePrefix = "flt-";
// Hex digits: 16M values, so concurrent networks rarely pick the same one, and the marker's
// link() settles it when they do.
constexpr int kSuffixLength = 6;
constexpr char kMarkerDir[] = "/run/fleet-test-netns";
// `ip` answers in milliseconds; the bound only keeps a wedged kernel or mount from hanging a test.
constexpr std::chrono::milliseconds kIpTimeout{10000};
// A veth gets carrier and an STP-less bridge port forwards as soon as both ends are up; the
// bound is for a loaded CI machine.
constexpr std::chrono::milliseconds kLinkUpTimeout{5000};
constexpr std::chrono::milliseconds kLinkPollInterval{5};
// Isolated hosts use .1 to .254 of a /24, fallback hosts 127.0.0.2 to 127.0.0.254.
constexpr int kMaxHosts = 253;
// Link names only need to be unique inside their own namespace, so they carry no suffix.
constexpr char kBridge[] = "br0";
constexpr char kHostDevice[] = "eth0";

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Owns the posix_spawn attribute and file-action objects, which must be destroyed on every path.
class SpawnConfig {
 public:
  SpawnConfig() {
    posix_spawnattr_init(&attr_);
    posix_spawn_file_actions_init(&actions_);
  }
  SpawnConfig(const SpawnConfig&) = delete;
  SpawnConfig& operator=(const SpawnConfig&) = delete;
  ~SpawnConfig() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }

  posix_spawnattr_t* attr() { return &attr_; }
  posix_spawn_file_actions_t* actions() { return &actions_; }

 private:
  posix_spawnattr_t attr_;
  posix_spawn_file_actions_t actions_;
};

std::string FormatArgv(const std::vector<std::string>& argv) { return absl::StrJoin(argv, " "); }

absl::Status ErrnoError(int err, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// Reads whatever `fd` (non-blocking) holds into `sink`. Returns false once the writer has closed
// it, true while more may come.
bool DrainPipe(int fd, std::string& sink) {
  char buffer[4096];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      sink.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      return false;
    } else if (errno == EINTR) {
      continue;
    } else {
      // EAGAIN means "nothing yet"; any other error ends the stream, and the exit status still
      // says how the command went.
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
  }
}

int ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// Runs `ip args...`; a non-zero exit becomes an error naming the command and its stderr.
absl::StatusOr<std::string> RunIp(std::vector<std::string> args) {
  args.insert(args.begin(), "ip");
  absl::StatusOr<CommandResult> result = RunCommand(args, kIpTimeout);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(
        absl::StrFormat("`%s` exited with status %d: %s", FormatArgv(args), result->exit_code,
                        absl::StripTrailingAsciiWhitespace(result->stderr_text)));
  }
  return std::move(result->stdout_text);
}

absl::Status RunIpStatus(std::vector<std::string> args) { return RunIp(std::move(args)).status(); }

// The start time of a live process, in clock ticks since boot (field 22 of /proc/<pid>/stat).
// With the pid it names one process even after the pid is reused. nullopt when the process is
// gone or a zombie: a killed test whose parent has not reaped it yet is just as dead.
std::optional<uint64_t> LiveProcessStartTime(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
  size_t name_end = stat.rfind(')');
  if (name_end == std::string::npos || name_end + 2 > stat.size()) return std::nullopt;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(name_end + 2), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (the state), so field 22 is fields[19].
  if (fields.size() < 20 || fields[0] == "Z" || fields[0] == "X") return std::nullopt;
  uint64_t start_time = 0;
  if (!absl::SimpleAtoi(fields[19], &start_time)) return std::nullopt;
  return start_time;
}

std::string MarkerPath(absl::string_view suffix) {
  return absl::StrCat(kMarkerDir, "/", suffix, ".pid");
}

// A marker holds "<pid> <start time>" of the process that created the network.
bool MarkerOwnerAlive(const std::string& marker_path) {
  std::ifstream in(marker_path);
  pid_t pid = 0;
  uint64_t start_time = 0;
  if (!(in >> pid >> start_time)) return false;
  std::optional<uint64_t> actual = LiveProcessStartTime(pid);
  return actual.has_value() && *actual == start_time;
}

// The suffix of a name this harness made ("flt-<6 lowercase hex>-sw" or "-h<digits>"), or
// nullopt for any other name.
std::optional<std::string> SuffixOfNetns(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kNamePrefix)) return std::nullopt;
  if (name.size() < kSuffixLength + 2 || name[kSuffixLength] != '-') return std::nullopt;
  absl::string_view suffix = name.substr(0, kSuffixLength);
  absl::string_view role = name.substr(kSuffixLength + 1);
  for (char c : suffix) {
    if (!absl::ascii_isdigit(c) && (c < 'a' || c > 'f')) return std::nullopt;
  }
  bool host_role = role.size() > 1 && role[0] == 'h' &&
                   std::all_of(role.begin() + 1, role.end(), absl::ascii_isdigit);
  if (role != "sw" && !host_role) return std::nullopt;
  return std::string(suffix);
}

absl::StatusOr<std::vector<std::string>> ListNetns() {
  absl::StatusOr<std::string> out = RunIp({"netns", "list"});
  if (!out.ok()) return out.status();
  // Lines are "name" or "name (id: N)".
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(*out, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    names.emplace_back(words.front());
  }
  return names;
}

// Kills what still runs in `netns` (a daemon a failed test left behind would otherwise live on
// in an unreachable namespace), then deletes the namespace. Deleting it also destroys its links,
// and with them the peer ends of its veths in other namespaces.
absl::Status DeleteNetns(const std::string& netns) {
  absl::StatusOr<std::string> pids = RunIp({"netns", "pids", netns});
  if (pids.ok()) {
    for (absl::string_view word :
         absl::StrSplit(*pids, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
      pid_t pid = 0;
      if (absl::SimpleAtoi(word, &pid) && pid > 0 && pid != getpid()) kill(pid, SIGKILL);
    }
  }
  return RunIpStatus({"netns", "del", netns});
}

// Deletes the namespaces and markers of networks whose creating process has died, such as those
// of a test killed by its timeout. Best effort: a failure here must not fail a test that could
// otherwise run, so it is only reported on stderr.
void CleanUpStaleNetworks() {
  absl::StatusOr<std::vector<std::string>> names = ListNetns();
  if (!names.ok()) {
    std::fprintf(stderr, "TestNetwork: skipping the stale namespace sweep: %s\n",
                 names.status().ToString().c_str());
    return;
  }
  std::map<std::string, std::vector<std::string>> netns_by_suffix;
  for (const std::string& name : *names) {
    if (std::optional<std::string> suffix = SuffixOfNetns(name)) {
      netns_by_suffix[*suffix].push_back(name);
    }
  }
  // Markers whose networks are already gone are swept too, so /run does not fill up.
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(kMarkerDir, error)) {
    std::string file = entry.path().filename().string();
    absl::string_view suffix = file;
    if (absl::ConsumeSuffix(&suffix, ".pid") &&
        SuffixOfNetns(absl::StrCat(kNamePrefix, suffix, "-sw")).has_value()) {
      netns_by_suffix.try_emplace(std::string(suffix));
    }
  }
  for (const auto& [suffix, netns_list] : netns_by_suffix) {
    // The marker is written before the first namespace and removed after the last one, so a
    // namespace without a live owner's marker belongs to nobody.
    std::string marker = MarkerPath(suffix);
    if (MarkerOwnerAlive(marker)) continue;
    for (const std::string& netns : netns_list) {
      absl::Status status = DeleteNetns(netns);
      if (status.ok()) {
        std::fprintf(stderr, "TestNetwork: removed stale namespace %s (its creator is gone)\n",
                     netns.c_str());
      } else {
        std::fprintf(stderr, "TestNetwork: could not remove stale namespace %s: %s\n",
                     netns.c_str(), status.ToString().c_str());
      }
    }
    unlink(marker.c_str());
  }
}

// Picks an unused suffix and claims it with a marker naming this process. The marker is written
// under a private name and then hard-linked into place, so a concurrent sweep never sees a
// half-written marker and link()'s EEXIST settles two processes picking the same suffix.
absl::StatusOr<std::string> ReserveSuffix(absl::BitGen& gen) {
  if (mkdir(kMarkerDir, 0755) != 0 && errno != EEXIST) {
    return ErrnoError(errno, absl::StrCat("cannot create the marker directory ", kMarkerDir));
  }
  std::optional<uint64_t> start_time = LiveProcessStartTime(getpid());
  if (!start_time.has_value()) {
    return absl::InternalError("cannot read this process's start time from /proc/self/stat");
  }
  std::string content = absl::StrCat(getpid(), " ", *start_time, "\n");
  std::string temp_path =
      absl::StrFormat("%s/.tmp-%d-%08x", kMarkerDir, getpid(), absl::Uniform<uint32_t>(gen));
  {
    Fd fd(open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) return ErrnoError(errno, absl::StrCat("cannot create ", temp_path));
    if (write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
      int err = errno;
      unlink(temp_path.c_str());
      return ErrnoError(err, absl::StrCat("cannot write ", temp_path));
    }
  }
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string suffix = absl::StrFormat(
        "%06x", absl::Uniform<uint32_t>(gen, 0, uint32_t{1} << (4 * kSuffixLength)));
    std::string marker = MarkerPath(suffix);
    if (link(temp_path.c_str(), marker.c_str()) == 0) {
      unlink(temp_path.c_str());
      return suffix;
    }
    if (errno != EEXIST) {
      int err = errno;
      unlink(temp_path.c_str());
      return ErrnoError(err, absl::StrCat("cannot create the marker ", marker));
    }
  }
  unlink(temp_path.c_str());
  return absl::ResourceExhaustedError(
      absl::StrCat("16 random network suffixes were all taken; clear out ", kMarkerDir));
}

std::string BridgePort(int i) { return absl::StrCat("h", i); }

// absl's default seed pool is copied by fork(), so a forked child and its parent would draw the
// same suffixes and subnets; fresh entropy and the pid keep them apart.
absl::BitGen MakeBitGen() {
  std::random_device device;
  std::seed_seq seed{device(), device(), device(), static_cast<uint32_t>(getpid())};
  return absl::BitGen(seed);
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         std::chrono::milliseconds timeout) {
  if (argv.empty()) return absl::InvalidArgumentError("RunCommand needs a program; argv is empty");
  const std::string command = FormatArgv(argv);

  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe2 for stdout");
  Fd out_read(out_pipe[0]);
  Fd out_write(out_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe2 for stderr");
  Fd err_read(err_pipe[0]);
  Fd err_write(err_pipe[1]);

  SpawnConfig config;
  // A process group of its own lets a timeout kill everything the command started.
  posix_spawnattr_setpgroup(config.attr(), 0);
  // The child must not inherit a blocked signal mask or an ignored SIGPIPE from the test.
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  posix_spawnattr_setsigmask(config.attr(), &empty_mask);
  sigset_t default_signals;
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  posix_spawnattr_setsigdefault(config.attr(), &default_signals);
  posix_spawnattr_setflags(config.attr(),
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_addopen(config.actions(), STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(config.actions(), out_write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(config.actions(), err_write.get(), STDERR_FILENO);

  std::vector<char*> c_argv;
  c_argv.reserve(argv.size() + 1);
  for (const std::string& arg : argv) c_argv.push_back(const_cast<char*>(arg.c_str()));
  c_argv.push_back(nullptr);

  pid_t pid = 0;
  int spawn_error =
      posix_spawnp(&pid, argv[0].c_str(), config.actions(), config.attr(), c_argv.data(), environ);
  if (spawn_error != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start `", command, "`: ", std::strerror(spawn_error),
                     spawn_error == ENOENT ? "; is it installed and on PATH?" : ""));
  }
  // Only the child may hold the write ends, or the pipes would never report end of file.
  out_write.Reset();
  err_write.Reset();
  fcntl(out_read.get(), F_SETFL, O_NONBLOCK);
  fcntl(err_read.get(), F_SETFL, O_NONBLOCK);

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  CommandResult result;
  bool out_open = true;
  bool err_open = true;
  int wait_status = 0;
  while (true) {
    pid_t waited = waitpid(pid, &wait_status, WNOHANG);
    if (waited == pid) {
      // What the command wrote before exiting is in the pipes. Do not wait for end of file: a
      // daemon it started may hold them open for good.
      if (out_open) DrainPipe(out_read.get(), result.stdout_text);
      if (err_open) DrainPipe(err_read.get(), result.stderr_text);
      result.exit_code = ExitCode(wait_status);
      return result;
    }
    if (waited < 0 && errno != EINTR) {
      int err = errno;
      kill(-pid, SIGKILL);
      return ErrnoError(err, absl::StrCat("waitpid for `", command, "`"));
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      kill(-pid, SIGKILL);
      while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
      }
      return absl::DeadlineExceededError(absl::StrFormat(
          "`%s` did not finish within %d ms and was killed; its stderr so far: %s", command,
          timeout.count(), absl::StripTrailingAsciiWhitespace(result.stderr_text)));
    }
    // With both pipes closed the child is exiting; poll on nothing then just waits briefly.
    auto slice = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    slice = std::min(
        slice, out_open || err_open ? std::chrono::milliseconds(50) : std::chrono::milliseconds(1));
    pollfd fds[2];
    nfds_t count = 0;
    if (out_open) fds[count++] = {out_read.get(), POLLIN, 0};
    if (err_open) fds[count++] = {err_read.get(), POLLIN, 0};
    if (poll(fds, count, static_cast<int>(std::max<int64_t>(slice.count(), 1))) < 0 &&
        errno != EINTR) {
      int err = errno;
      kill(-pid, SIGKILL);
      while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
      }
      return ErrnoError(err, absl::StrCat("poll on the output of `", command, "`"));
    }
    if (out_open) out_open = DrainPipe(out_read.get(), result.stdout_text);
    if (err_open) err_open = DrainPipe(err_read.get(), result.stderr_text);
  }
}

absl::StatusOr<std::unique_ptr<TestNetwork>> TestNetwork::Create(int hosts) {
  return Create(hosts, TestNetworkOptions());
}

absl::StatusOr<std::unique_ptr<TestNetwork>> TestNetwork::Create(
    int hosts, const TestNetworkOptions& options) {
  if (hosts < 1 || hosts > kMaxHosts) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TestNetwork takes 1 to %d hosts (they share one /24), got %d", kMaxHosts, hosts));
  }
  std::string reason;
  if (!options.use_namespaces) {
    reason = "namespaces turned off by TestNetworkOptions::use_namespaces";
  } else if (geteuid() != 0) {
    reason = absl::StrFormat("not running as root (euid %d); network namespaces need CAP_SYS_ADMIN",
                             geteuid());
  } else {
    std::unique_ptr<TestNetwork> network(new TestNetwork());
    absl::Status status = network->SetUpIsolated(hosts);
    if (status.ok()) return network;
    network.reset();  // Deletes whatever part of the topology was built.
    reason = absl::StrCat("isolated setup failed: ", status.ToString());
  }
  if (options.require_isolation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "TestNetwork needs network namespaces (require_isolation is set) but cannot have them: ",
        reason, ". Run as root on a kernel with veth and bridge support, with iproute2 installed"));
  }
  std::unique_ptr<TestNetwork> network(new TestNetwork());
  network->SetUpFallback(hosts, std::move(reason));
  return network;
}

absl::Status TestNetwork::SetUpIsolated(int hosts) {
  CleanUpStaleNetworks();
  absl::BitGen gen = MakeBitGen();
  absl::StatusOr<std::string> suffix = ReserveSuffix(gen);
  if (!suffix.ok()) return suffix.status();
  suffix_ = *std::move(suffix);
  marker_path_ = MarkerPath(suffix_);
  isolated_ = true;

  // Networks never share a bridge, so equal subnets would not clash; a random /24 still keeps
  // the addresses of concurrent tests apart in their logs and packet captures.
  std::string subnet =
      absl::StrFormat("10.%d.%d", absl::Uniform<int>(gen, 1, 255), absl::Uniform<int>(gen, 0, 256));

  // Each namespace is recorded before anything else can fail, so the destructor deletes it.
  switch_netns_ = absl::StrCat(kNamePrefix, suffix_, "-sw");
  if (absl::Status s = RunIpStatus({"netns", "add", switch_netns_}); !s.ok()) return s;
  created_netns_.push_back(switch_netns_);
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"-n", switch_netns_, "link", "set", "lo", "up"},
           {"-n", switch_netns_, "link", "add", kBridge, "type", "bridge"},
           {"-n", switch_netns_, "link", "set", kBridge, "up"},
       }) {
    if (absl::Status s = RunIpStatus(std::move(args)); !s.ok()) return s;
  }

  for (int i = 0; i < hosts; ++i) {
    TestHost host;
    host.name = absl::StrCat("h", i);
    host.netns = absl::StrCat(kNamePrefix, suffix_, "-", host.name);
    host.ip = absl::StrCat(subnet, ".", i + 1);
    if (absl::Status s = RunIpStatus({"netns", "add", host.netns}); !s.ok()) return s;
    created_netns_.push_back(host.netns);
    // The veth is created in the switch namespace with its peer placed straight into the host's,
    // so neither end ever appears in the root namespace.
    for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
             {"-n", host.netns, "link", "set", "lo", "up"},
             {"-n", switch_netns_, "link", "add", BridgePort(i), "type", "veth", "peer", "name",
              kHostDevice, "netns", host.netns},
             {"-n", switch_netns_, "link", "set", BridgePort(i), "master", kBridge},
             {"-n", switch_netns_, "link", "set", BridgePort(i), "up"},
             {"-n", host.netns, "addr", "add", absl::StrCat(host.ip, "/24"), "dev", kHostDevice},
             {"-n", host.netns, "link", "set", kHostDevice, "up"},
         }) {
      if (absl::Status s = RunIpStatus(std::move(args)); !s.ok()) return s;
    }
    hosts_.push_back(std::move(host));
  }
  for (int i = 0; i < hosts; ++i) {
    if (absl::Status s = WaitForLinkUp(i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void TestNetwork::SetUpFallback(int hosts, std::string reason) {
  isolated_ = false;
  fallback_reason_ = std::move(reason);
  for (int i = 0; i < hosts; ++i) {
    // Linux routes all of 127.0.0.0/8 to lo; 127.0.0.1 is left to whatever else runs there.
    hosts_.push_back(TestHost{absl::StrCat("h", i), "", absl::StrCat("127.0.0.", i + 2)});
  }
}

TestNetwork::~TestNetwork() {
  // Hosts first, then the switch: the reverse of creation.
  for (auto it = created_netns_.rbegin(); it != created_netns_.rend(); ++it) {
    absl::Status status = DeleteNetns(*it);
    if (!status.ok()) {
      std::fprintf(stderr, "TestNetwork: could not delete namespace %s: %s\n", it->c_str(),
                   status.ToString().c_str());
    }
  }
  // Removed even when a deletion failed: without a marker the next Create() sweeps the leftover.
  if (!marker_path_.empty() && unlink(marker_path_.c_str()) != 0 && errno != ENOENT) {
    std::fprintf(stderr, "TestNetwork: could not remove %s: %s\n", marker_path_.c_str(),
                 std::strerror(errno));
  }
}

const TestHost& TestNetwork::host(int i) const {
  if (i < 0 || i >= size()) {
    std::fprintf(stderr, "TestNetwork::host(%d): index out of range; the network has %d hosts\n", i,
                 size());
    std::abort();
  }
  return hosts_[static_cast<size_t>(i)];
}

std::vector<std::string> TestNetwork::Wrap(int i, std::vector<std::string> argv) const {
  const TestHost& target = host(i);
  if (!isolated_) return argv;
  std::vector<std::string> wrapped = {"ip", "netns", "exec", target.netns};
  wrapped.insert(wrapped.end(), std::make_move_iterator(argv.begin()),
                 std::make_move_iterator(argv.end()));
  return wrapped;
}

absl::Status TestNetwork::CheckLinkIndex(int i, const char* operation) const {
  if (!isolated_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "TestNetwork::%s(%d) needs network namespaces; this network fell back to loopback "
        "addresses because %s",
        operation, i, fallback_reason_));
  }
  if (i < 0 || i >= size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TestNetwork::%s(%d): no such host; the network has %d hosts", operation, i, size()));
  }
  return absl::OkStatus();
}

absl::Status TestNetwork::CutLink(int i) {
  if (absl::Status s = CheckLinkIndex(i, "CutLink"); !s.ok()) return s;
  // A veth whose peer is down loses carrier at once, so the host sees the cut immediately.
  return RunIpStatus({"-n", switch_netns_, "link", "set", BridgePort(i), "down"});
}

absl::Status TestNetwork::RestoreLink(int i) {
  if (absl::Status s = CheckLinkIndex(i, "RestoreLink"); !s.ok()) return s;
  if (absl::Status s = RunIpStatus({"-n", switch_netns_, "link", "set", BridgePort(i), "up"});
      !s.ok()) {
    return s;
  }
  return WaitForLinkUp(i);
}

absl::Status TestNetwork::WaitForLinkUp(int i) const {
  const TestHost& target = host(i);
  const auto deadline = std::chrono::steady_clock::now() + kLinkUpTimeout;
  std::string host_link;
  std::string port_link;
  while (true) {
    absl::StatusOr<std::string> host_out =
        RunIp({"-n", target.netns, "-o", "link", "show", "dev", kHostDevice});
    if (!host_out.ok()) return host_out.status();
    absl::StatusOr<std::string> port_out =
        RunIp({"-n", switch_netns_, "-d", "-o", "link", "show", "dev", BridgePort(i)});
    if (!port_out.ok()) return port_out.status();
    host_link = *std::move(host_out);
    port_link = *std::move(port_out);
    if (absl::StrContains(host_link, "LOWER_UP") &&
        absl::StrContains(port_link, "state forwarding")) {
      return absl::OkStatus();
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kLinkPollInterval);
  }
  return absl::DeadlineExceededError(absl::StrFormat(
      "host %s's link did not come up within %d ms; host side: %s; bridge port: %s", target.name,
      kLinkUpTimeout.count(), absl::StripTrailingAsciiWhitespace(host_link),
      absl::StripTrailingAsciiWhitespace(port_link)));
}

}  // namespace fleet::testing
