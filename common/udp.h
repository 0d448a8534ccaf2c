// IPv4 UDP for discovery: a move-only RAII socket that sends to unicast, broadcast and multicast
// addresses and receives with a timeout, and the list of interfaces that can be broadcast on.
//
// Example:
//   ASSIGN_OR_RETURN(UdpSocket socket, UdpSocket::Bind("0.0.0.0", 0));
//   RETURN_IF_ERROR(socket.SendTo("10.0.0.255", 7109, datagram));
//   ASSIGN_OR_RETURN(std::optional<Datagram> reply, socket.Receive(absl::Milliseconds(100)));
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace fleet {

struct Datagram {
  std::string bytes;
  std::string source_ip;  // dotted quad
  uint16_t source_port = 0;
};

class UdpSocket {
 public:
  // Binds an IPv4 UDP socket to `ip` ("0.0.0.0" for every interface) and `port` (0 picks a free
  // one; see port()), with SO_BROADCAST set, and SO_REUSEADDR when `port` is not 0.
  static absl::StatusOr<UdpSocket> Bind(absl::string_view ip, uint16_t port);

  UdpSocket(UdpSocket&& other) noexcept;
  UdpSocket& operator=(UdpSocket&& other) noexcept;
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;
  ~UdpSocket();

  // Receives datagrams sent to multicast `group` arriving on the interface that has address
  // `interface_ip` ("0.0.0.0": the kernel's choice).
  absl::Status JoinMulticast(absl::string_view group, absl::string_view interface_ip);

  // Makes datagrams sent to multicast groups leave through the interface with `interface_ip`.
  absl::Status SetMulticastInterface(absl::string_view interface_ip);

  absl::Status SendTo(absl::string_view ip, uint16_t port, absl::string_view bytes);

  // Waits up to `timeout` for one datagram; nullopt when none came (or a signal interrupted the
  // wait). A datagram larger than 64 KiB cannot exist over IPv4, so none is cut short.
  absl::StatusOr<std::optional<Datagram>> Receive(absl::Duration timeout);

  // The bound port (the kernel's pick when Bind was given 0).
  uint16_t port() const { return port_; }

 private:
  UdpSocket(int fd, uint16_t port) : fd_(fd), port_(port) {}

  int fd_ = -1;
  uint16_t port_ = 0;
};

// The first IPv4 address of `host` (a dotted quad, or a name the resolver knows), as a dotted
// quad. Unavailable, naming the host and the resolver's reason, when it has none.
absl::StatusOr<std::string> ResolveIpv4(absl::string_view host);

// An up, non-loopback IPv4 interface with a broadcast address.
struct BroadcastTarget {
  std::string interface;  // e.g. "enp1s0f0np0"
  std::string address;    // the interface's own address, e.g. "10.0.0.2"
  std::string broadcast;  // e.g. "10.0.0.255"
};

// Lists the up, non-loopback IPv4 interfaces that have a broadcast address, in getifaddrs order.
// A non-empty `interface_names` keeps only those interfaces.
absl::StatusOr<std::vector<BroadcastTarget>> ListBroadcastTargets(
    absl::Span<const std::string> interface_names = {});

}  // namespace fleet
