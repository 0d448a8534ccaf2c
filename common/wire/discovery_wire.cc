// Encoding and defensive decoding of discovery datagrams (see discovery_wire.h for the layout).
#include "common/wire/discovery_wire.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/pki.h"
#include "common/status_macros.h"

namespace fleet::discovery {
namespace {

constexpr absl::string_view kMagic = "FLDP";
constexpr absl::string_view kKeyLabel = "fleet discovery v1";

// Returns the offset of the first byte of `text` that is neither printable ASCII nor part of a
// printable, shortest-form UTF-8 sequence, or npos when all of it is valid.
size_t FirstInvalidTextByte(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    if (lead < 0x80) {
      if (lead < 0x20 || lead == 0x7f) return i;
      ++i;
      continue;
    }
    size_t length = 0;
    uint32_t code_point = 0;
    if ((lead & 0xe0) == 0xc0) {
      length = 2;
      code_point = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      length = 3;
      code_point = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      length = 4;
      code_point = lead & 0x07;
    } else {
      return i;
    }
    if (text.size() - i < length) return i;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<uint8_t>(text[i + k]);
      if ((next & 0xc0) != 0x80) return i;
      code_point = (code_point << 6) | (next & 0x3f);
    }
    static constexpr uint32_t kShortest[] = {0, 0, 0x80, 0x800, 0x10000};
    const bool overlong = code_point < kShortest[length];
    const bool surrogate = code_point >= 0xd800 && code_point <= 0xdfff;
    // U+0080..U+009F are the C1 control characters.
    if (overlong || surrogate || code_point > 0x10ffff || code_point < 0xa0) return i;
    i += length;
  }
  return absl::string_view::npos;
}

absl::string_view TypeName(MessageType type) {
  switch (type) {
    case MessageType::kProbe:
      return "PROBE";
    case MessageType::kAnswer:
      return "ANSWER";
    case MessageType::kAdopt:
      return "ADOPT";
  }
  return "?";
}

// Appends big-endian fields to a body; the first limit broken is kept in status().
class Writer {
 public:
  void U8(uint8_t value) { body_.push_back(static_cast<char>(value)); }
  void U16(uint16_t value) {
    U8(static_cast<uint8_t>(value >> 8));
    U8(static_cast<uint8_t>(value));
  }
  void U32(uint32_t value) {
    U16(static_cast<uint16_t>(value >> 16));
    U16(static_cast<uint16_t>(value));
  }
  void Bytes(const Nonce& nonce) { body_.append(nonce.begin(), nonce.end()); }

  void String(absl::string_view field, absl::string_view value) {
    if (value.size() > kMaxStringSize) {
      Fail(absl::StrCat(field, " is ", value.size(), " bytes long (limit ", kMaxStringSize, ")"));
    } else if (size_t bad = FirstInvalidTextByte(value); bad != absl::string_view::npos) {
      Fail(absl::StrCat(field, " has a control character or invalid UTF-8 at byte ", bad, " (\"",
                        absl::CHexEscape(value), "\")"));
    }
    U8(static_cast<uint8_t>(value.size()));
    body_.append(value.data(), std::min(value.size(), kMaxStringSize));
  }

  void Count(absl::string_view field, size_t count, size_t limit) {
    if (count > limit) {
      Fail(absl::StrCat(field, " has ", count, " entries (limit ", limit, ")"));
    }
    U8(static_cast<uint8_t>(std::min(count, limit)));
  }

  // The framed datagram, or the first problem met.
  absl::StatusOr<std::string> Finish(MessageType type, absl::string_view key) && {
    if (!status_.ok()) return status_;
    size_t size = kHeaderSize + body_.size() + kMacSize;
    if (size > kMaxDatagramSize) {
      return absl::ResourceExhaustedError(
          absl::StrCat("discovery ", TypeName(type), " would be ", size, " bytes, over the ",
                       kMaxDatagramSize, "-byte datagram limit; send fewer interfaces"));
    }
    return Frame(static_cast<uint8_t>(type), body_, key);
  }

 private:
  void Fail(std::string message) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("cannot encode discovery message: ", std::move(message)));
    }
  }

  std::string body_;
  absl::Status status_;
};

// Reads big-endian fields from a body without trusting any length in it. Errors name the field
// and its offset within the whole datagram.
class Reader {
 public:
  Reader(absl::string_view body, size_t base_offset) : body_(body), base_offset_(base_offset) {}

  absl::Status U8(absl::string_view field, uint8_t& value) {
    absl::string_view bytes;
    RETURN_IF_ERROR(Take(field, 1, bytes));
    value = static_cast<uint8_t>(bytes[0]);
    return absl::OkStatus();
  }
  absl::Status U16(absl::string_view field, uint16_t& value) {
    absl::string_view bytes;
    RETURN_IF_ERROR(Take(field, 2, bytes));
    value =
        static_cast<uint16_t>(static_cast<uint8_t>(bytes[0]) << 8 | static_cast<uint8_t>(bytes[1]));
    return absl::OkStatus();
  }
  absl::Status U32(absl::string_view field, uint32_t& value) {
    absl::string_view bytes;
    RETURN_IF_ERROR(Take(field, 4, bytes));
    value = 0;
    for (char c : bytes) value = value << 8 | static_cast<uint8_t>(c);
    return absl::OkStatus();
  }
  absl::Status Bytes(absl::string_view field, Nonce& nonce) {
    absl::string_view bytes;
    RETURN_IF_ERROR(Take(field, nonce.size(), bytes));
    std::copy(bytes.begin(), bytes.end(), nonce.begin());
    return absl::OkStatus();
  }
  absl::Status Bool(absl::string_view field, bool& value) {
    size_t offset = Offset();
    uint8_t byte = 0;
    RETURN_IF_ERROR(U8(field, byte));
    if (byte > 1) return Malformed(offset, absl::StrCat(field, " is ", byte, " (expected 0 or 1)"));
    value = byte == 1;
    return absl::OkStatus();
  }
  absl::Status String(absl::string_view field, std::string& value) {
    uint8_t length = 0;
    RETURN_IF_ERROR(U8(field, length));
    size_t offset = Offset();
    absl::string_view bytes;
    RETURN_IF_ERROR(Take(field, length, bytes));
    if (size_t bad = FirstInvalidTextByte(bytes); bad != absl::string_view::npos) {
      return Malformed(offset + bad,
                       absl::StrCat(field, " has a control character or invalid UTF-8"));
    }
    value.assign(bytes.data(), bytes.size());
    return absl::OkStatus();
  }
  absl::Status Count(absl::string_view field, size_t limit, size_t& count) {
    size_t offset = Offset();
    uint8_t value = 0;
    RETURN_IF_ERROR(U8(field, value));
    if (value > limit) {
      return Malformed(offset, absl::StrCat(field, " count is ", value, " (limit ", limit, ")"));
    }
    count = value;
    return absl::OkStatus();
  }
  absl::Status ExpectEnd() const {
    if (pos_ == body_.size()) return absl::OkStatus();
    return Malformed(Offset(), absl::StrCat(body_.size() - pos_, " trailing bytes after the body"));
  }

 private:
  size_t Offset() const { return base_offset_ + pos_; }

  absl::Status Take(absl::string_view field, size_t size, absl::string_view& bytes) {
    if (body_.size() - pos_ < size) {
      return Malformed(Offset(), absl::StrCat(field, " needs ", size, " bytes, ",
                                              body_.size() - pos_, " remain in the body"));
    }
    bytes = body_.substr(pos_, size);
    pos_ += size;
    return absl::OkStatus();
  }

  static absl::Status Malformed(size_t offset, absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed discovery datagram at offset ", offset, ": ", what));
  }

  absl::string_view body_;
  size_t base_offset_;
  size_t pos_ = 0;
};

absl::StatusOr<Message> ReadProbe(Reader& reader) {
  Probe probe;
  RETURN_IF_ERROR(reader.Bytes("nonce", probe.nonce));
  RETURN_IF_ERROR(reader.U16("controller_port", probe.controller_port));
  RETURN_IF_ERROR(reader.String("controller_id", probe.controller_id));
  return probe;
}

absl::StatusOr<Message> ReadAnswer(Reader& reader) {
  Answer answer;
  RETURN_IF_ERROR(reader.Bytes("nonce", answer.nonce));
  RETURN_IF_ERROR(reader.String("node_id", answer.node_id));
  RETURN_IF_ERROR(reader.String("hostname", answer.hostname));
  RETURN_IF_ERROR(reader.U16("agent_port", answer.agent_port));
  RETURN_IF_ERROR(reader.Bool("joined", answer.joined));
  size_t interface_count = 0;
  RETURN_IF_ERROR(reader.Count("interfaces", kMaxInterfaces, interface_count));
  answer.interfaces.resize(interface_count);
  for (InterfaceInfo& interface : answer.interfaces) {
    RETURN_IF_ERROR(reader.String("interface name", interface.name));
    RETURN_IF_ERROR(reader.U32("interface mtu", interface.mtu));
    size_t address_count = 0;
    RETURN_IF_ERROR(reader.Count("interface addresses", kMaxAddressesPerInterface, address_count));
    interface.addresses.resize(address_count);
    for (std::string& address : interface.addresses) {
      RETURN_IF_ERROR(reader.String("interface address", address));
    }
  }
  size_t device_count = 0;
  RETURN_IF_ERROR(reader.Count("rdma_devices", kMaxRdmaDevices, device_count));
  answer.rdma_devices.resize(device_count);
  for (std::string& device : answer.rdma_devices) {
    RETURN_IF_ERROR(reader.String("rdma device", device));
  }
  return answer;
}

absl::StatusOr<Message> ReadAdopt(Reader& reader) {
  Adopt adopt;
  RETURN_IF_ERROR(reader.Bytes("nonce", adopt.nonce));
  RETURN_IF_ERROR(reader.String("node_id", adopt.node_id));
  RETURN_IF_ERROR(reader.String("controller_address", adopt.controller_address));
  return adopt;
}

absl::Status MalformedHeader(size_t offset, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed discovery datagram at offset ", offset, ": ", what));
}

}  // namespace

std::string DeriveKey(absl::string_view token_secret) {
  return pki::HmacSha256(token_secret, kKeyLabel);
}

Nonce NewNonce() {
  const std::string bytes = pki::RandomBytes(kNonceSize);
  Nonce nonce{};
  std::copy(bytes.begin(), bytes.end(), nonce.begin());
  return nonce;
}

std::string Frame(uint8_t type, absl::string_view body, absl::string_view key) {
  std::string datagram(kMagic);
  datagram.push_back(static_cast<char>(kVersion));
  datagram.push_back(static_cast<char>(type));
  datagram.append(2, '\0');  // reserved
  datagram.push_back(static_cast<char>((body.size() >> 8) & 0xff));
  datagram.push_back(static_cast<char>(body.size() & 0xff));
  datagram.append(body.data(), body.size());
  datagram += pki::HmacSha256(key, datagram);
  return datagram;
}

absl::StatusOr<std::string> Encode(const Probe& probe, absl::string_view key) {
  Writer writer;
  writer.Bytes(probe.nonce);
  writer.U16(probe.controller_port);
  writer.String("controller_id", probe.controller_id);
  return std::move(writer).Finish(MessageType::kProbe, key);
}

absl::StatusOr<std::string> Encode(const Answer& answer, absl::string_view key) {
  Writer writer;
  writer.Bytes(answer.nonce);
  writer.String("node_id", answer.node_id);
  writer.String("hostname", answer.hostname);
  writer.U16(answer.agent_port);
  writer.U8(answer.joined ? 1 : 0);
  writer.Count("interfaces", answer.interfaces.size(), kMaxInterfaces);
  for (size_t i = 0; i < answer.interfaces.size() && i < kMaxInterfaces; ++i) {
    const InterfaceInfo& interface = answer.interfaces[i];
    std::string field = absl::StrCat("interfaces[", i, "]");
    writer.String(absl::StrCat(field, ".name"), interface.name);
    writer.U32(interface.mtu);
    writer.Count(absl::StrCat(field, ".addresses"), interface.addresses.size(),
                 kMaxAddressesPerInterface);
    for (size_t j = 0; j < interface.addresses.size() && j < kMaxAddressesPerInterface; ++j) {
      writer.String(absl::StrCat(field, ".addresses[", j, "]"), interface.addresses[j]);
    }
  }
  writer.Count("rdma_devices", answer.rdma_devices.size(), kMaxRdmaDevices);
  for (size_t i = 0; i < answer.rdma_devices.size() && i < kMaxRdmaDevices; ++i) {
    writer.String(absl::StrCat("rdma_devices[", i, "]"), answer.rdma_devices[i]);
  }
  return std::move(writer).Finish(MessageType::kAnswer, key);
}

absl::StatusOr<std::string> Encode(const Adopt& adopt, absl::string_view key) {
  Writer writer;
  writer.Bytes(adopt.nonce);
  writer.String("node_id", adopt.node_id);
  writer.String("controller_address", adopt.controller_address);
  return std::move(writer).Finish(MessageType::kAdopt, key);
}

absl::StatusOr<Decoded> Decode(absl::string_view datagram, absl::string_view key) {
  if (datagram.size() > kMaxDatagramSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed discovery datagram: ", datagram.size(), " bytes, over the ",
                     kMaxDatagramSize, "-byte limit"));
  }
  if (datagram.size() < kHeaderSize + kMacSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed discovery datagram: ", datagram.size(), " bytes, shorter than the ",
                     kHeaderSize + kMacSize, "-byte header and mac"));
  }
  if (datagram.substr(0, kMagic.size()) != kMagic) {
    return MalformedHeader(
        0, absl::StrCat("magic is \"", absl::CHexEscape(datagram.substr(0, kMagic.size())),
                        "\" (expected \"", kMagic, "\")"));
  }
  const auto version = static_cast<uint8_t>(datagram[4]);
  if (version != kVersion) {
    return MalformedHeader(4, absl::StrCat("unsupported protocol version ", version,
                                           " (this build speaks version ", kVersion, ")"));
  }
  const auto type = static_cast<uint8_t>(datagram[5]);
  if (type < static_cast<uint8_t>(MessageType::kProbe) ||
      type > static_cast<uint8_t>(MessageType::kAdopt)) {
    return MalformedHeader(
        5, absl::StrCat("unknown message type ", type, " (expected 1 PROBE, 2 ANSWER or 3 ADOPT)"));
  }
  if (datagram[6] != 0 || datagram[7] != 0) {
    return MalformedHeader(6, "reserved field is not zero");
  }
  const size_t body_size = static_cast<size_t>(static_cast<uint8_t>(datagram[8])) << 8 |
                           static_cast<uint8_t>(datagram[9]);
  if (kHeaderSize + body_size + kMacSize != datagram.size()) {
    return MalformedHeader(
        8, absl::StrCat("body length ", body_size, " needs a datagram of ",
                        kHeaderSize + body_size + kMacSize, " bytes, found ", datagram.size()));
  }

  Reader reader(datagram.substr(kHeaderSize, body_size), kHeaderSize);
  absl::StatusOr<Message> message;
  switch (static_cast<MessageType>(type)) {
    case MessageType::kProbe:
      message = ReadProbe(reader);
      break;
    case MessageType::kAnswer:
      message = ReadAnswer(reader);
      break;
    case MessageType::kAdopt:
      message = ReadAdopt(reader);
      break;
  }
  if (!message.ok()) return message.status();
  if (absl::Status status = reader.ExpectEnd(); !status.ok()) return status;

  const size_t signed_size = kHeaderSize + body_size;
  const bool proven = pki::ConstantTimeEquals(pki::HmacSha256(key, datagram.substr(0, signed_size)),
                                              datagram.substr(signed_size));
  return Decoded{*std::move(message), proven};
}

}  // namespace fleet::discovery
