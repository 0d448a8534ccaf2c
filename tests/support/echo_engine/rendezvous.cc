// The echo engine's rendezvous over the rank-0 master port (see rendezvous.h).
#include "tests/support/echo_engine/rendezvous.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace fleet::echo {
namespace {

constexpr char kComponent[] = "rendezvous";
constexpr std::array<absl::string_view, 7> kFabricVariables = {
    "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "NCCL_IB_HCA",
    "VLLM_HOST_IP",       "MASTER_ADDR",        "MASTER_PORT"};
// A connection that has not said hello by then is not a worker (a port scan, a stuck client);
// dropping it keeps the set of pending connections small.
constexpr absl::Duration kHelloTimeout = absl::Seconds(10);
// Bounds the accepted-but-silent connections rank 0 tracks at once.
constexpr size_t kMaxPending = 64;
// Between connection attempts of a worker whose head is not listening yet.
constexpr absl::Duration kRetryPause = absl::Milliseconds(200);

// Every rank line is prefixed so a log shared by many ranks stays readable.
std::string RankPrefix(int rank) { return absl::StrCat("rank ", rank); }

}  // namespace

nlohmann::json HelloToJson(const Hello& hello) {
  return {{"group", hello.group},
          {"rank", hello.rank},
          {"generation", hello.generation},
          {"hostname", hello.hostname},
          {"env", hello.env}};
}

absl::StatusOr<Hello> ParseHello(absl::string_view line) {
  nlohmann::json json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("malformed hello (", why, ")"));
  };
  if (json.is_discarded() || !json.is_object()) return bad("not a JSON object");
  if (!json.contains("group") || !json["group"].is_string()) return bad("no string group");
  if (!json.contains("rank") || !json["rank"].is_number_integer() ||
      json["rank"].get<int64_t>() < 0 ||
      json["rank"].get<int64_t>() > std::numeric_limits<int>::max()) {
    return bad("no rank in [0, INT_MAX]");
  }
  if (!json.contains("generation") || !json["generation"].is_number_unsigned()) {
    return bad("no unsigned generation");
  }
  if (!json.contains("hostname") || !json["hostname"].is_string()) return bad("no hostname");
  if (!json.contains("env") || !json["env"].is_object()) return bad("no env object");
  Hello hello{.group = json["group"].get<std::string>(),
              .rank = json["rank"].get<int>(),
              .generation = json["generation"].get<uint64_t>(),
              .hostname = json["hostname"].get<std::string>()};
  for (const auto& [name, value] : json["env"].items()) {
    if (!value.is_string()) return bad(absl::StrCat("env ", name, " is not a string"));
    hello.env[name] = value.get<std::string>();
  }
  return hello;
}

std::map<std::string, std::string> RendezvousEnv(const char* const* environ) {
  std::map<std::string, std::string> env;
  for (const char* const* entry = environ; *entry != nullptr; ++entry) {
    absl::string_view item = *entry;
    size_t eq = item.find('=');
    if (eq == absl::string_view::npos) continue;
    absl::string_view name = item.substr(0, eq);
    bool wanted = absl::StartsWith(name, "FLEET_");
    for (absl::string_view fabric : kFabricVariables) wanted = wanted || name == fabric;
    if (wanted) env[std::string(name)] = std::string(item.substr(eq + 1));
  }
  return env;
}

std::string FormatEnv(const std::map<std::string, std::string>& env) {
  return absl::StrJoin(env, " ", absl::PairFormatter("="));
}

Head::Head(UniqueFd listener, Hello self, int world_size)
    : listener_(std::move(listener)), self_(std::move(self)), world_size_(world_size) {}

void Head::Refuse(int fd, absl::string_view why) {
  Log(LogLevel::kWarning, kComponent, "hello refused", {{"why", why}});
  // Best effort: the peer may be gone already, and it is dropped either way.
  (void)SendAll(fd, absl::StrCat("refused: ", why, "\n"));
}

void Head::AcceptOne(std::vector<Pending>& pending) {
  int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;  // the peer left before we got to it, or EINTR: nothing to do
  if (pending.size() >= kMaxPending) {
    UniqueFd closing(fd);
    Refuse(fd, "too many connections waiting to say hello");
    return;
  }
  pending.push_back({.fd = UniqueFd(fd), .accepted_at = absl::Now()});
}

bool Head::ReadHello(Pending& conn) {
  char buffer[4096];
  ssize_t n = ::recv(conn.fd.get(), buffer, sizeof buffer, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) return false;  // closed without a hello: a TCP probe of the master port
  conn.buffer.append(buffer, n);
  size_t newline = conn.buffer.find('\n');
  if (newline == std::string::npos) {
    if (conn.buffer.size() <= kMaxLineBytes) return true;
    Refuse(conn.fd.get(), absl::StrCat("hello longer than ", kMaxLineBytes, " bytes"));
    return false;
  }
  absl::StatusOr<Hello> hello = ParseHello(absl::string_view(conn.buffer).substr(0, newline));
  if (!hello.ok()) {
    Refuse(conn.fd.get(), hello.status().message());
    return false;
  }
  if (hello->group != self_.group) {
    Refuse(conn.fd.get(),
           absl::StrCat("group \"", hello->group, "\", this is group \"", self_.group, "\""));
    return false;
  }
  if (hello->generation != self_.generation) {
    Refuse(conn.fd.get(),
           absl::StrCat("rank ", hello->rank, " is of generation ", hello->generation,
                        ", this group is at generation ", self_.generation));
    return false;
  }
  if (hello->rank < 1 || hello->rank >= world_size_) {
    Refuse(conn.fd.get(),
           absl::StrCat("rank ", hello->rank, " is not a worker rank of world size ", world_size_));
    return false;
  }
  if (auto it = hellos_.find(hello->rank); it != hellos_.end()) {
    Refuse(conn.fd.get(),
           absl::StrCat("rank ", hello->rank, " already joined from host ", it->second.hostname));
    return false;
  }
  if (!SendAll(conn.fd.get(), "welcome\n").ok()) return false;
  std::printf("%s hello from rank %d generation %llu host %s env %s\n", RankPrefix(0).c_str(),
              hello->rank, static_cast<unsigned long long>(hello->generation),
              hello->hostname.c_str(), FormatEnv(hello->env).c_str());
  std::fflush(stdout);
  workers_[hello->rank] = std::move(conn.fd);
  hellos_[hello->rank] = *std::move(hello);
  return false;
}

absl::StatusOr<std::vector<Hello>> Head::AwaitWorkers(absl::Time deadline) {
  std::vector<Pending> pending;
  while (static_cast<int>(hellos_.size()) < world_size_ - 1) {
    absl::Time now = absl::Now();
    if (now >= deadline) {
      std::vector<int> missing;
      for (int rank = 1; rank < world_size_; ++rank) {
        if (!hellos_.contains(rank)) missing.push_back(rank);
      }
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous timed out: rank(s) ", absl::StrJoin(missing, ", "),
                       " never said hello; are they running, with FLEET_MASTER_ADDR reachable?"));
    }
    // Silent connections are dropped, so they wake the loop when they expire.
    absl::Time wake = deadline;
    for (const Pending& conn : pending) wake = std::min(wake, conn.accepted_at + kHelloTimeout);
    std::vector<pollfd> fds = {{.fd = listener_.get(), .events = POLLIN}};
    for (const Pending& conn : pending) fds.push_back({.fd = conn.fd.get(), .events = POLLIN});
    std::vector<int> joined;
    for (const auto& [rank, fd] : workers_) {
      joined.push_back(rank);
      fds.push_back({.fd = fd.get(), .events = POLLIN});
    }
    if (::poll(fds.data(), fds.size(), PollTimeoutMs(wake)) < 0 && errno != EINTR) {
      return ErrnoStatus("poll on the master port");
    }
    // A welcomed worker sends nothing more, so any event is its connection ending. Forgetting
    // it lets the same rank, restarted, join again before the group is complete.
    for (size_t i = 0; i < joined.size(); ++i) {
      if (fds[1 + pending.size() + i].revents == 0) continue;
      Log(LogLevel::kWarning, kComponent, "worker left before the group was complete",
          {{"rank", absl::StrCat(joined[i])}});
      workers_.erase(joined[i]);
      hellos_.erase(joined[i]);
    }
    std::vector<Pending> kept;
    for (size_t i = 0; i < pending.size(); ++i) {
      bool keep = fds[i + 1].revents == 0 ? absl::Now() < pending[i].accepted_at + kHelloTimeout
                                          : ReadHello(pending[i]);
      if (keep) kept.push_back(std::move(pending[i]));
    }
    pending = std::move(kept);
    if (fds[0].revents & POLLIN) AcceptOne(pending);
  }
  std::vector<Hello> all = {self_};
  for (auto& [rank, hello] : hellos_) all.push_back(hello);
  return all;
}

absl::Status Head::WatchWorkers() {
  for (auto& [rank, fd] : workers_) {
    if (!SendAll(fd.get(), "ready\n").ok()) {
      return absl::UnavailableError(absl::StrCat("worker rank ", rank, " disconnected"));
    }
  }
  std::vector<int> ranks;
  std::vector<pollfd> fds = {{.fd = listener_.get(), .events = POLLIN}};
  for (auto& [rank, fd] : workers_) {
    ranks.push_back(rank);
    fds.push_back({.fd = fd.get(), .events = POLLIN});
  }
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("poll on worker connections");
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      // Workers send nothing after their hello: any event is the connection ending.
      if (fds[i].revents != 0) {
        return absl::UnavailableError(absl::StrCat("worker rank ", ranks[i - 1], " disconnected"));
      }
    }
    if (fds[0].revents & POLLIN) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        UniqueFd late(fd);
        // Quietly: agents check that the master port accepts TCP before starting a worker.
        (void)SendAll(fd, absl::StrCat("refused: rendezvous of generation ", self_.generation,
                                       " is complete\n"));
      }
    }
  }
}

absl::StatusOr<UniqueFd> JoinHead(const std::string& master_addr, int master_port,
                                  const Hello& hello, absl::Time deadline) {
  const std::string line = HelloToJson(hello).dump() + "\n";
  std::string last_error;
  while (absl::Now() < deadline) {
    absl::StatusOr<UniqueFd> fd = ConnectTcp(master_addr, master_port, deadline);
    if (fd.ok()) {
      absl::Status sent = SendAll(fd->get(), line);
      absl::StatusOr<std::string> answer =
          sent.ok() ? ReadLine(fd->get(), deadline, kMaxLineBytes) : sent;
      if (answer.ok() && absl::StartsWith(*answer, "refused: ")) {
        return absl::AbortedError(absl::StrCat("rendezvous refused by ", master_addr, ":",
                                               master_port, ": ", answer->substr(9)));
      }
      if (answer.ok() && *answer == "welcome") {
        Log(LogLevel::kInfo, kComponent, "welcomed by the head; waiting for the other ranks");
        absl::StatusOr<std::string> ready = ReadLine(fd->get(), deadline, kMaxLineBytes);
        if (ready.ok() && *ready == "ready") return *std::move(fd);
        if (absl::IsOutOfRange(ready.status())) {
          return absl::UnavailableError("head connection lost before every rank arrived");
        }
        last_error = ready.ok() ? absl::StrCat("unexpected answer \"", *ready, "\"")
                                : std::string(ready.status().message());
        break;
      }
      last_error = answer.ok() ? absl::StrCat("unexpected answer \"", *answer, "\"")
                               : std::string(answer.status().message());
    } else {
      last_error = std::string(fd.status().message());
    }
    absl::SleepFor(std::min(kRetryPause, std::max(deadline - absl::Now(), absl::ZeroDuration())));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("rendezvous with rank 0 at ", master_addr, ":", master_port,
                   " did not complete in time (last: ", last_error,
                   "); is rank 0 running and FLEET_MASTER_ADDR reachable from here?"));
}

void AwaitClose(int head_connection) {
  pollfd p = {.fd = head_connection, .events = POLLIN};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

}  // namespace fleet::echo
