// The discovery protocol's datagrams (PROBE, ANSWER, ADOPT): encoding, and decoding that trusts
// no field of its input, with each datagram proven by an HMAC-SHA256 under the cluster's key.
//
// Layout (integers big-endian), at most kMaxDatagramSize bytes:
//
//   "FLDP" (4) | version u8 (=1) | type u8 | reserved u16 (=0) | body_len u16 | body | mac[32]
//
// mac = HMAC-SHA256(key, every byte before the mac), key = DeriveKey(join token secret). Strings
// in a body are a u8 length and that many bytes of printable ASCII or UTF-8 (no NUL, no control
// characters). Bodies:
//
//   PROBE  (1) controller -> broadcast/multicast/unicast:
//              nonce[16] | controller_port u16 | controller_id
//   ANSWER (2) agent -> the probe's source address:
//              nonce[16] (the probe's) | node_id | hostname | agent_port u16 | joined u8 (0/1) |
//              interface count u8 (<= 32), each: name | mtu u32 | address count u8 (<= 16), each
//              "ADDR/PREFIX" | rdma device count u8 (<= 32), each: name
//   ADOPT  (3) controller -> one agent's answering address:
//              nonce[16] (of a probe the agent answered) | node_id | controller_address "HOST:PORT"
//
// Example:
//   std::string key = DeriveKey(token_secret);
//   ASSIGN_OR_RETURN(std::string datagram, Encode(Probe{nonce, 7100, "ctl-1"}, key));
//   ...
//   ASSIGN_OR_RETURN(Decoded decoded, Decode(received, key));
//   if (const Answer* answer = std::get_if<Answer>(&decoded.message); answer && decoded.proven) ...
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet::discovery {

inline constexpr uint16_t kDefaultPort = 7109;
// Administratively scoped (RFC 2365); 70.76 spells "FL".
inline constexpr char kMulticastGroup[] = "239.255.70.76";

inline constexpr uint8_t kVersion = 1;
// Fits one Ethernet frame with room for IP/UDP headers and tunnels.
inline constexpr size_t kMaxDatagramSize = 1400;
inline constexpr size_t kHeaderSize = 10;
inline constexpr size_t kMacSize = 32;
inline constexpr size_t kNonceSize = 16;
inline constexpr size_t kMaxStringSize = 255;
inline constexpr size_t kMaxInterfaces = 32;
inline constexpr size_t kMaxAddressesPerInterface = 16;
inline constexpr size_t kMaxRdmaDevices = 32;

enum class MessageType : uint8_t { kProbe = 1, kAnswer = 2, kAdopt = 3 };

using Nonce = std::array<uint8_t, kNonceSize>;

// A controller asking "who is there?"; answered only by agents holding the same key.
struct Probe {
  Nonce nonce{};
  uint16_t controller_port = 0;  // the controller's gRPC port
  std::string controller_id;

  bool operator==(const Probe&) const = default;
};

struct InterfaceInfo {
  std::string name;
  uint32_t mtu = 0;
  std::vector<std::string> addresses;  // "ADDR/PREFIX", e.g. "10.0.0.2/24" or "fe80::1/64"

  bool operator==(const InterfaceInfo&) const = default;
};

// An agent describing itself in reply to one probe.
struct Answer {
  Nonce nonce{};  // the probe's nonce, echoed
  std::string node_id;
  std::string hostname;
  uint16_t agent_port = 0;  // the agent's gRPC port
  bool joined = false;      // already a member of a cluster
  std::vector<InterfaceInfo> interfaces;
  std::vector<std::string> rdma_devices;

  bool operator==(const Answer&) const = default;
};

// A controller telling one agent to join it.
struct Adopt {
  Nonce nonce{};  // the nonce of a probe this agent answered
  std::string node_id;
  std::string controller_address;  // "HOST:PORT"

  bool operator==(const Adopt&) const = default;
};

using Message = std::variant<Probe, Answer, Adopt>;

// A well-formed datagram. `proven` is false when its mac does not verify under the key: the
// sender does not hold the cluster key (another cluster, a forgery, or a corrupted datagram).
// Such a message is still returned so an operator can be shown who answered (node id,
// hostname), but nothing in it may be acted on.
struct Decoded {
  Message message;
  bool proven = false;
};

// The discovery key: HMAC-SHA256(token_secret, "fleet discovery v1"), 32 bytes. Controllers
// store this derived key, never the join token's secret.
std::string DeriveKey(absl::string_view token_secret);

// A fresh random nonce from OpenSSL's CSPRNG (pki::RandomBytes, which aborts if it fails).
Nonce NewNonce();

// Encodes and signs a message. InvalidArgument names the field that breaks a limit (a string
// over 255 bytes or with control characters, too many interfaces/addresses/devices);
// ResourceExhausted says the datagram would exceed kMaxDatagramSize (callers with many
// interfaces drop some and retry). Encode returns a Status rather than a bare string because an
// ANSWER's content comes from the host and can break these limits.
absl::StatusOr<std::string> Encode(const Probe& probe, absl::string_view key);
absl::StatusOr<std::string> Encode(const Answer& answer, absl::string_view key);
absl::StatusOr<std::string> Encode(const Adopt& adopt, absl::string_view key);

// Parses a datagram and checks its mac. A malformed datagram (bad magic, unknown version or
// type, a length that overruns what remains, a count over its limit, an invalid string,
// trailing bytes) is InvalidArgument naming the problem and its byte offset. A well-formed one
// is returned with proven = whether its mac verifies under `key`.
absl::StatusOr<Decoded> Decode(absl::string_view datagram, absl::string_view key);

// Lower level, for tests and fuzz seeds: frames `body` with a header of `type` and a mac under
// `key`, without checking anything. Encode is the normal path.
std::string Frame(uint8_t type, absl::string_view body, absl::string_view key);

}  // namespace fleet::discovery
