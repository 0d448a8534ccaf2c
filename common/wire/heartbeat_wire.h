// Heartbeat datagrams (agent -> controller, UDP) and their acks: framing, signing and decoding
// that trusts no byte of its input.
//
// Layout, at most kMaxDatagramSize bytes:
//
//   "FLHB" (4) | version u8 (=1) | type u8 (1 beat, 2 ack) | body | mac[32]
//
// body is a serialized v1::HeartbeatDatagram (beat) or v1::HeartbeatAck (ack), and mac =
// HMAC-SHA256(session key, every byte before the mac). The key is the 32 random bytes of
// RegisterResponse.heartbeat_key, so only the agent that registered over mutual TLS can prove a
// beat, and only the controller that answered can prove an ack. An ack with verdict REGISTER is
// signed with the empty key, because the controller has no key for a session it does not know.
//
// Example (agent):
//   std::string datagram = EncodeBeat(beat, key);
//   ... send, receive `reply` ...
//   ASSIGN_OR_RETURN(v1::HeartbeatAck ack, ParseAck(reply));
//   if (!Verify(reply, key) && ack.verdict() != v1::HEARTBEAT_VERDICT_REGISTER) ... drop ...
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::heartbeat {

inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kKeySize = 32;
inline constexpr size_t kMacSize = 32;  // HMAC-SHA256
inline constexpr size_t kMaxDatagramSize = 512;

// Frames and signs one beat or ack. Node ids are 32 characters, so a beat is about 90 bytes;
// InvalidArgument when a message would exceed kMaxDatagramSize.
absl::StatusOr<std::string> EncodeBeat(const v1::HeartbeatDatagram& beat, absl::string_view key);
absl::StatusOr<std::string> EncodeAck(const v1::HeartbeatAck& ack, absl::string_view key);

// Parse the frame and the body without checking the mac (the controller must read the node id
// and session before it knows the key). InvalidArgument names the problem: too short or too
// long, bad magic, unknown version, the other type, or a body that is not the message.
absl::StatusOr<v1::HeartbeatDatagram> ParseBeat(absl::string_view datagram);
absl::StatusOr<v1::HeartbeatAck> ParseAck(absl::string_view datagram);

// Whether the datagram's mac verifies under `key` (constant time). False for anything shorter
// than a mac.
bool Verify(absl::string_view datagram, absl::string_view key);

}  // namespace fleet::heartbeat
