// IPv4 UDP sockets and broadcast interface listing over the POSIX socket API.
#include "common/udp.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fleet {
namespace {

absl::StatusOr<in_addr> ParseIpv4(absl::string_view ip) {
  std::string text(ip);
  in_addr address{};
  if (inet_pton(AF_INET, text.c_str(), &address) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", ip, "\" is not an IPv4 address (expected a dotted quad like 10.0.0.2)"));
  }
  return address;
}

std::string FormatIpv4(const in_addr& address) {
  std::array<char, INET_ADDRSTRLEN> text{};
  inet_ntop(AF_INET, &address, text.data(), text.size());
  return std::string(text.data());
}

}  // namespace

absl::StatusOr<std::string> ResolveIpv4(absl::string_view host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  std::string name(host);
  if (int err = getaddrinfo(name.c_str(), nullptr, &hints, &found); err != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, " to an IPv4 address: ", gai_strerror(err)));
  }
  std::string ip = FormatIpv4(reinterpret_cast<const sockaddr_in*>(found->ai_addr)->sin_addr);
  freeaddrinfo(found);
  return ip;
}

absl::StatusOr<UdpSocket> UdpSocket::Bind(absl::string_view ip, uint16_t port) {
  ASSIGN_OR_RETURN(in_addr address, ParseIpv4(ip));
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  RETURN_IF_ERRNO(fd, "socket(AF_INET, SOCK_DGRAM)");
  // Owned from here on, so every early return closes it.
  UdpSocket owned(fd, port);
  int on = 1;
  // Only for a fixed port (a restarted agent, several listeners of one multicast group): when
  // choosing a port for 0, Linux treats ports held by SO_REUSEADDR sockets as free, so two
  // ephemeral sockets could share one and receive each other's datagrams.
  if (port != 0) {
    RETURN_IF_ERRNO(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)),
                    "setsockopt(SO_REUSEADDR)");
  }
  RETURN_IF_ERRNO(setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof(on)),
                  "setsockopt(SO_BROADCAST)");
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr = address;
  local.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof(local)) == -1) {
    int err = errno;
    absl::Status status = ErrnoStatus(absl::StrCat("bind UDP ", ip, ":", port), err);
    if (err == EADDRINUSE) {
      return absl::UnavailableError(
          absl::StrCat(status.message(), "; stop whatever holds the port or choose another"));
    }
    if (err == EADDRNOTAVAIL) {
      return absl::FailedPreconditionError(
          absl::StrCat(status.message(), "; no interface has this address"));
    }
    return status;
  }
  socklen_t size = sizeof(local);
  RETURN_IF_ERRNO(getsockname(fd, reinterpret_cast<sockaddr*>(&local), &size), "getsockname");
  owned.port_ = ntohs(local.sin_port);
  return owned;
}

UdpSocket::UdpSocket(UdpSocket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(other.port_) {}

UdpSocket& UdpSocket::operator=(UdpSocket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    port_ = other.port_;
  }
  return *this;
}

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) close(fd_);
}

absl::Status UdpSocket::JoinMulticast(absl::string_view group, absl::string_view interface_ip) {
  ASSIGN_OR_RETURN(in_addr group_address, ParseIpv4(group));
  ASSIGN_OR_RETURN(in_addr interface_address, ParseIpv4(interface_ip));
  ip_mreq request{};
  request.imr_multiaddr = group_address;
  request.imr_interface = interface_address;
  RETURN_IF_ERRNO(setsockopt(fd_, IPPROTO_IP, IP_ADD_MEMBERSHIP, &request, sizeof(request)),
                  absl::StrCat("join multicast group ", group, " on ", interface_ip));
  return absl::OkStatus();
}

absl::Status UdpSocket::SetMulticastInterface(absl::string_view interface_ip) {
  ASSIGN_OR_RETURN(in_addr interface_address, ParseIpv4(interface_ip));
  RETURN_IF_ERRNO(
      setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_IF, &interface_address, sizeof(interface_address)),
      absl::StrCat("send multicast through ", interface_ip));
  return absl::OkStatus();
}

absl::Status UdpSocket::SendTo(absl::string_view ip, uint16_t port, absl::string_view bytes) {
  ASSIGN_OR_RETURN(in_addr address, ParseIpv4(ip));
  sockaddr_in destination{};
  destination.sin_family = AF_INET;
  destination.sin_addr = address;
  destination.sin_port = htons(port);
  ssize_t sent;
  do {
    sent = sendto(fd_, bytes.data(), bytes.size(), 0,
                  reinterpret_cast<const sockaddr*>(&destination), sizeof(destination));
  } while (sent == -1 && errno == EINTR);
  if (sent == -1) {
    int err = errno;
    absl::Status status = ErrnoStatus(absl::StrCat("send UDP to ", ip, ":", port), err);
    // No route, a down interface, or a refused earlier datagram (ICMP port unreachable): the
    // peer may be back later.
    if (err == ENETUNREACH || err == EHOSTUNREACH || err == ENETDOWN || err == ECONNREFUSED) {
      return absl::UnavailableError(status.message());
    }
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Datagram>> UdpSocket::Receive(absl::Duration timeout) {
  pollfd waiter{.fd = fd_, .events = POLLIN, .revents = 0};
  int64_t millis =
      std::max<int64_t>(0, absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1))));
  int ready = poll(&waiter, 1, static_cast<int>(std::min<int64_t>(millis, 1 << 30)));
  if (ready == -1 && errno == EINTR) return std::nullopt;
  RETURN_IF_ERRNO(ready, "poll UDP socket");
  if (ready == 0) return std::nullopt;

  // The largest IPv4 UDP payload is 65507 bytes.
  std::string buffer(65536, '\0');
  sockaddr_in source{};
  socklen_t source_size = sizeof(source);
  ssize_t received = recvfrom(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT,
                              reinterpret_cast<sockaddr*>(&source), &source_size);
  if (received == -1) {
    // EAGAIN: another reader took it. ECONNREFUSED: an ICMP error for an earlier send.
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED) {
      return std::nullopt;
    }
    return ErrnoStatus("receive UDP datagram");
  }
  buffer.resize(static_cast<size_t>(received));
  return Datagram{.bytes = std::move(buffer),
                  .source_ip = FormatIpv4(source.sin_addr),
                  .source_port = ntohs(source.sin_port)};
}

absl::StatusOr<std::vector<BroadcastTarget>> ListBroadcastTargets(
    absl::Span<const std::string> interface_names) {
  ifaddrs* raw_list = nullptr;
  RETURN_IF_ERRNO(getifaddrs(&raw_list), "getifaddrs");
  std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> list(raw_list, &freeifaddrs);
  std::vector<BroadcastTarget> targets;
  for (const ifaddrs* entry = list.get(); entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) continue;
    const unsigned flags = entry->ifa_flags;
    if (!(flags & IFF_UP) || (flags & IFF_LOOPBACK) || !(flags & IFF_BROADCAST)) continue;
    if (entry->ifa_broadaddr == nullptr) continue;
    if (!interface_names.empty() && std::find(interface_names.begin(), interface_names.end(),
                                              entry->ifa_name) == interface_names.end()) {
      continue;
    }
    targets.push_back(BroadcastTarget{
        .interface = entry->ifa_name,
        .address = FormatIpv4(reinterpret_cast<const sockaddr_in*>(entry->ifa_addr)->sin_addr),
        .broadcast =
            FormatIpv4(reinterpret_cast<const sockaddr_in*>(entry->ifa_broadaddr)->sin_addr)});
  }
  return targets;
}

}  // namespace fleet
