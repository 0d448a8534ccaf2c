// The TCP bandwidth test: a poll()-driven receiver on one thread, one blocking sender thread per
// stream, every wait bounded.
#include "agent/fabric/tcp_bandwidth.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/data_socket.h"
#include "common/host_port.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

constexpr size_t kTokenSize = kDataTokenBytes;
constexpr size_t kReportSize = 24;
// How long after its duration a test may still take: connecting, draining, reporting.
constexpr absl::Duration kGrace = absl::Seconds(10);

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

struct StreamReport {
  uint64_t bytes = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
};

// One sending stream: connect, token, data until `end_ns`, then the receiver's report.
absl::StatusOr<StreamReport> SendStream(const std::string& source_ip, const sockaddr_in& target,
                                        const v1::FabricTcpSpec& spec, int64_t end_ns) {
  ASSIGN_OR_RETURN(UniqueFd fd,
                   ConnectWithToken(source_ip, target, spec.token(), absl::Seconds(2)));
  std::vector<char> buffer(spec.buffer_bytes(), '\x5a');
  while (NowNs() < end_ns) {
    ssize_t n = ::send(fd.get(), buffer.data(), buffer.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n < 0) {
      return absl::UnavailableError(
          absl::StrCat("the receiver closed a stream: ", std::strerror(errno),
                       " (a refused token, or the test's time ran out)"));
    }
  }
  RETURN_IF_ERRNO(::shutdown(fd.get(), SHUT_WR), "shutdown");
  RETURN_IF_ERROR(SetSocketTimeouts(fd.get(), kGrace));
  char report[kReportSize];
  size_t have = 0;
  while (have < kReportSize) {
    ssize_t n = ::recv(fd.get(), report + have, kReportSize - have, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat("the receiver sent no report for a stream (",
                                                 n == 0 ? "closed" : std::strerror(errno), ")"));
    }
    have += static_cast<size_t>(n);
  }
  return StreamReport{.bytes = GetU64(report),
                      .first_ns = static_cast<int64_t>(GetU64(report + 8)),
                      .last_ns = static_cast<int64_t>(GetU64(report + 16))};
}

}  // namespace

absl::Status ValidateTcpSpec(const v1::FabricTcpSpec& spec) {
  if (spec.token().size() != kTokenSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("a fabric test token is ", kTokenSize, " bytes; got ", spec.token().size()));
  }
  if (spec.streams() < 1 || spec.streams() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("streams must be 1 to 64; got ", spec.streams(), ": pass --streams 1..64"));
  }
  if (spec.duration_ms() < 100 || spec.duration_ms() > 60'000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "duration must be 100ms to 60s; got ", spec.duration_ms(), " ms: pass e.g. --duration 5s"));
  }
  if (spec.buffer_bytes() < 4096 || spec.buffer_bytes() > (16u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("buffer must be 4 KiB to 16 MiB; got ",
                                                   spec.buffer_bytes(),
                                                   " bytes: pass e.g. --buffer 128KiB"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TcpReceiver>> TcpReceiver::Open(const std::string& bind_ip,
                                                               const std::string& peer_ip,
                                                               const v1::FabricTcpSpec& spec) {
  RETURN_IF_ERROR(ValidateTcpSpec(spec));
  RETURN_IF_ERROR(Ipv4Address(peer_ip, 0, "peer address").status());
  ASSIGN_OR_RETURN(DataListener listener, ListenForData(bind_ip));
  return std::unique_ptr<TcpReceiver>(
      new TcpReceiver(std::move(listener.fd), listener.port, peer_ip, spec));
}

TcpReceiver::TcpReceiver(UniqueFd listener, uint16_t port, std::string peer_ip,
                         v1::FabricTcpSpec spec)
    : listener_(std::move(listener)),
      port_(port),
      peer_ip_(std::move(peer_ip)),
      spec_(std::move(spec)) {
  thread_ = std::thread([this] { Serve(); });
}

TcpReceiver::~TcpReceiver() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void TcpReceiver::Serve() {
  enum class Phase { kToken, kData, kReport, kDone };
  struct Conn {
    UniqueFd fd;
    Phase phase = Phase::kToken;
    std::string token;
    uint64_t bytes = 0;
    int64_t first_ns = 0;
    int64_t last_ns = 0;
    std::string report;
    size_t sent = 0;
  };
  const int64_t deadline =
      NowNs() + absl::ToInt64Nanoseconds(absl::Milliseconds(spec_.duration_ms()) + kGrace);
  const uint32_t streams = spec_.streams();
  std::vector<Conn> conns;
  std::vector<char> buffer(std::max<size_t>(spec_.buffer_bytes(), 1 << 20));
  uint32_t admitted = 0;
  // Counted before the close, which the peer sees at once.
  auto reject = [&](Conn& c) {
    rejected_.fetch_add(1);
    c.fd.reset();
    c.phase = Phase::kDone;
  };
  while (!stop_.load() && NowNs() < deadline) {
    // Every admitted stream has reported: the port closes.
    if (admitted == streams &&
        std::all_of(conns.begin(), conns.end(), [](const Conn& c) { return !c.fd.valid(); })) {
      break;
    }
    std::vector<pollfd> fds;
    if (admitted < streams) fds.push_back({listener_.get(), POLLIN, 0});
    std::vector<size_t> index;
    for (size_t i = 0; i < conns.size(); ++i) {
      if (!conns[i].fd.valid()) continue;
      fds.push_back({conns[i].fd.get(),
                     static_cast<short>(conns[i].phase == Phase::kReport ? POLLOUT : POLLIN), 0});
      index.push_back(i);
    }
    if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
    size_t first_conn = 0;
    if (admitted < streams) {
      first_conn = 1;
      if (fds[0].revents & POLLIN) {
        sockaddr_in from{};
        socklen_t len = sizeof from;
        UniqueFd fd(::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&from), &len,
                              SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (fd.valid()) {
          char ip[INET_ADDRSTRLEN] = {};
          ::inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
          // At most a few connections wait for their token at once: a stranger cannot fill
          // the receiver with idle ones.
          size_t waiting = std::count_if(conns.begin(), conns.end(), [](const Conn& c) {
            return c.fd.valid() && c.phase == Phase::kToken;
          });
          if (peer_ip_ != ip || waiting >= streams + 4) {
            rejected_.fetch_add(1);
          } else {
            conns.push_back({.fd = std::move(fd)});
          }
        }
      }
    }
    for (size_t k = first_conn; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Conn& c = conns[index[k - first_conn]];
      if (c.phase == Phase::kToken) {
        char token[kTokenSize];
        ssize_t n = ::recv(c.fd.get(), token, kTokenSize - c.token.size(), 0);
        if (n <= 0) {
          if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
          reject(c);
          continue;
        }
        c.token.append(token, static_cast<size_t>(n));
        if (c.token.size() < kTokenSize) continue;
        if (!SameToken(c.token, spec_.token()) || admitted == streams) {
          reject(c);
          continue;
        }
        ++admitted;
        c.phase = Phase::kData;
      } else if (c.phase == Phase::kData) {
        while (true) {
          ssize_t n = ::recv(c.fd.get(), buffer.data(), buffer.size(), 0);
          if (n > 0) {
            int64_t now = NowNs();
            if (c.bytes == 0) c.first_ns = now;
            c.last_ns = now;
            c.bytes += static_cast<uint64_t>(n);
            continue;
          }
          if (n < 0 && errno == EINTR) continue;
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          if (n < 0) {
            c.fd.reset();
            c.phase = Phase::kDone;
            break;
          }
          // The sender's end of data: report what arrived.
          PutU64(c.report, c.bytes);
          PutU64(c.report, static_cast<uint64_t>(c.first_ns));
          PutU64(c.report, static_cast<uint64_t>(c.last_ns));
          c.phase = Phase::kReport;
          break;
        }
      } else if (c.phase == Phase::kReport) {
        ssize_t n =
            ::send(c.fd.get(), c.report.data() + c.sent, c.report.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) c.sent += static_cast<size_t>(n);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n < 0 || c.sent == c.report.size()) {
          c.fd.reset();
          c.phase = Phase::kDone;
        }
      }
    }
  }
  listener_.reset();
  done_.store(true);
}

absl::StatusOr<v1::FabricSendResponse> RunTcpSender(const std::string& source_ip,
                                                    const std::string& target,
                                                    const v1::FabricTcpSpec& spec) {
  RETURN_IF_ERROR(ValidateTcpSpec(spec));
  ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(target));
  ASSIGN_OR_RETURN(sockaddr_in addr, Ipv4Address(hp.host, hp.port, "receiver address"));
  const int64_t end_ns = NowNs() + absl::ToInt64Nanoseconds(absl::Milliseconds(spec.duration_ms()));
  std::vector<absl::StatusOr<StreamReport>> reports(spec.streams(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < spec.streams(); ++i) {
    threads.emplace_back([&, i] { reports[i] = SendStream(source_ip, addr, spec, end_ns); });
  }
  for (std::thread& t : threads) t.join();
  v1::FabricSendResponse response;
  int64_t first = std::numeric_limits<int64_t>::max();
  int64_t last = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < spec.streams(); ++i) {
    if (!reports[i].ok()) {
      return absl::Status(reports[i].status().code(),
                          absl::StrCat("stream ", i + 1, " of ", spec.streams(), " to ", target,
                                       ": ", reports[i].status().message()));
    }
    if (reports[i]->bytes == 0) continue;
    bytes += reports[i]->bytes;
    first = std::min(first, reports[i]->first_ns);
    last = std::max(last, reports[i]->last_ns);
  }
  response.set_bytes(bytes);
  response.set_streams(spec.streams());
  if (bytes == 0 || last <= first) {
    return absl::UnavailableError(absl::StrCat("no data reached the receiver at ", target, " in ",
                                               spec.duration_ms(),
                                               " ms; check the fabric link and its MTU"));
  }
  double seconds = static_cast<double>(last - first) / 1e9;
  response.set_seconds(seconds);
  // Gb/s as link rates are stated: 10^9 bits per second.
  response.set_bandwidth_gbps(static_cast<double>(bytes) * 8 / seconds / 1e9);
  return response;
}

}  // namespace fleet::agent
