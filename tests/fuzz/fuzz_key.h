// The fixed discovery key shared by the fuzz target and its seed writer, so that seeds carry
// valid macs and the fuzzer explores the proven paths too.
#pragma once

#include <string>

#include "common/wire/discovery_wire.h"

namespace fleet::discovery {

inline const std::string& FuzzKey() {
  static const std::string* const key = new std::string(DeriveKey("fleet fuzz token"));
  return *key;
}

}  // namespace fleet::discovery
