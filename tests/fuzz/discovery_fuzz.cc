// libFuzzer target for discovery::Decode: no input may crash it or trip a sanitizer, anything
// it accepts must re-encode to the same bytes (the encoding is canonical), and `proven` must be
// exactly "the mac matches".
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/wire/discovery_wire.h"
#include "tests/fuzz/fuzz_key.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fleet::discovery;
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Decoded> decoded = Decode(input, FuzzKey());
  if (!decoded.ok()) {
    if (decoded.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    return 0;
  }
  absl::StatusOr<std::string> again =
      std::visit([](const auto& message) { return Encode(message, FuzzKey()); }, decoded->message);
  if (!again.ok() || again->size() != size) __builtin_trap();
  const size_t signed_size = size - kMacSize;
  if (again->substr(0, signed_size) != input.substr(0, signed_size)) __builtin_trap();
  if ((*again == input) != decoded->proven) __builtin_trap();
  return 0;
}
