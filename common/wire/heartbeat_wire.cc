// Framing and signing of heartbeat datagrams (see heartbeat_wire.h for the layout).
#include "common/wire/heartbeat_wire.h"

#include "absl/strings/str_cat.h"
#include "common/pki.h"

namespace fleet::heartbeat {
namespace {

constexpr absl::string_view kMagic = "FLHB";
constexpr size_t kHeaderSize = 6;
constexpr uint8_t kBeat = 1;
constexpr uint8_t kAck = 2;

absl::StatusOr<std::string> Frame(uint8_t type, const google::protobuf::MessageLite& body,
                                  absl::string_view key) {
  std::string datagram(kMagic);
  datagram.push_back(static_cast<char>(kVersion));
  datagram.push_back(static_cast<char>(type));
  if (!body.AppendToString(&datagram)) {
    return absl::InvalidArgumentError("cannot serialize the heartbeat message");
  }
  if (datagram.size() + kMacSize > kMaxDatagramSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a heartbeat datagram would be ", datagram.size() + kMacSize, " bytes, over the limit of ",
        kMaxDatagramSize, "; node ids are 32 characters"));
  }
  datagram += pki::HmacSha256(key, datagram);
  return datagram;
}

absl::Status Unframe(absl::string_view datagram, uint8_t type,
                     google::protobuf::MessageLite& body) {
  const char* what = type == kBeat ? "heartbeat" : "heartbeat ack";
  if (datagram.size() < kHeaderSize + kMacSize || datagram.size() > kMaxDatagramSize) {
    return absl::InvalidArgumentError(absl::StrCat("a ", what, " datagram is ",
                                                   kHeaderSize + kMacSize, " to ", kMaxDatagramSize,
                                                   " bytes; got ", datagram.size()));
  }
  if (datagram.substr(0, kMagic.size()) != kMagic) {
    return absl::InvalidArgumentError(absl::StrCat("not a ", what, " datagram (bad magic)"));
  }
  const uint8_t version = static_cast<uint8_t>(datagram[4]);
  if (version != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " datagram of version ", static_cast<int>(version), "; this build speaks version ",
        static_cast<int>(kVersion), ": run the same SparkFleet version everywhere"));
  }
  const uint8_t got = static_cast<uint8_t>(datagram[5]);
  if (got != type) {
    return absl::InvalidArgumentError(absl::StrCat("expected a ", what, " datagram (type ",
                                                   static_cast<int>(type), "), got type ",
                                                   static_cast<int>(got)));
  }
  absl::string_view payload =
      datagram.substr(kHeaderSize, datagram.size() - kHeaderSize - kMacSize);
  if (!body.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body of a ", what, " datagram does not parse"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> EncodeBeat(const v1::HeartbeatDatagram& beat, absl::string_view key) {
  return Frame(kBeat, beat, key);
}

absl::StatusOr<std::string> EncodeAck(const v1::HeartbeatAck& ack, absl::string_view key) {
  return Frame(kAck, ack, key);
}

absl::StatusOr<v1::HeartbeatDatagram> ParseBeat(absl::string_view datagram) {
  v1::HeartbeatDatagram beat;
  if (absl::Status st = Unframe(datagram, kBeat, beat); !st.ok()) return st;
  return beat;
}

absl::StatusOr<v1::HeartbeatAck> ParseAck(absl::string_view datagram) {
  v1::HeartbeatAck ack;
  if (absl::Status st = Unframe(datagram, kAck, ack); !st.ok()) return st;
  return ack;
}

bool Verify(absl::string_view datagram, absl::string_view key) {
  if (datagram.size() < kMacSize) return false;
  const size_t signed_size = datagram.size() - kMacSize;
  return pki::ConstantTimeEquals(pki::HmacSha256(key, datagram.substr(0, signed_size)),
                                 datagram.substr(signed_size));
}

}  // namespace fleet::heartbeat
