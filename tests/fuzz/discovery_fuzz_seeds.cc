// Writes a fresh seed corpus for discovery_fuzz: one valid datagram of each type under the fuzz
// key, one under another key, and a few malformed ones. Usage: discovery_fuzz_seeds DIR
// (DIR is emptied first, so every fuzz run starts from the same corpus).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "common/wire/discovery_wire.h"
#include "tests/fuzz/fuzz_key.h"

namespace fleet::discovery {
namespace {

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  if (!std::filesystem::create_directories(dir, error)) {
    std::fprintf(stderr, "cannot create %s: %s\n", dir.c_str(), error.message().c_str());
    return 1;
  }

  const Nonce nonce = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  const Answer answer{.nonce = nonce,
                      .node_id = "spark-1",
                      .hostname = "spark-1.lab",
                      .agent_port = 7101,
                      .joined = false,
                      .interfaces = {{.name = "enp1s0f0np0",
                                      .mtu = 9000,
                                      .addresses = {"10.0.0.2/24", "fe80::1/64"}},
                                     {.name = "wlan0", .mtu = 1500, .addresses = {}}},
                      .rdma_devices = {"rocep1s0f0", "roceP2p1s0f1"}};
  std::vector<std::pair<std::string, absl::StatusOr<std::string>>> seeds = {
      {"probe",
       Encode(Probe{.nonce = nonce, .controller_port = 7100, .controller_id = "ctl-1"}, FuzzKey())},
      {"answer", Encode(answer, FuzzKey())},
      {"adopt",
       Encode(Adopt{.nonce = nonce, .node_id = "spark-1", .controller_address = "10.0.0.1:7100"},
              FuzzKey())},
      {"answer_other_key", Encode(answer, DeriveKey("another cluster"))},
      {"answer_utf8",
       Encode(Answer{.nonce = nonce, .node_id = "n\xc3\xa9ud", .hostname = "h"}, FuzzKey())},
      {"short", std::string("FLDP\x01\x02", 6)},
      {"bad_count",
       Frame(2, std::string(16, '\0') + std::string("\x01n\x01h\x00\x01\x00\x21", 8), FuzzKey())},
  };
  for (const auto& [name, bytes] : seeds) {
    if (!bytes.ok()) {
      std::fprintf(stderr, "seed %s: %s\n", name.c_str(), bytes.status().ToString().c_str());
      return 1;
    }
    std::ofstream out(dir / name, std::ios::binary);
    out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      return 1;
    }
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
  return 0;
}

}  // namespace
}  // namespace fleet::discovery

int main(int argc, char** argv) { return fleet::discovery::Main(argc, argv); }
