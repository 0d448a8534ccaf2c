// Deterministic incompressible test data (xorshift64): the same `seed` always gives the same
// bytes, so a copy can be checked against a fresh write or against `sha256sum` of the source.
// Used by stage_cluster_test and stage_bench.
#ifndef FLEET_TESTS_SUPPORT_RANDOM_FILE_H_
#define FLEET_TESTS_SUPPORT_RANDOM_FILE_H_

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fleet::testing {

// Writes `size` bytes to `path`, creating its parent directories.
inline void WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  std::vector<uint64_t> block(1 << 17);  // 1 MiB
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t done = 0; done < size;) {
    for (uint64_t& v : block) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v = x;
    }
    const uint64_t n = std::min<uint64_t>(size - done, block.size() * sizeof(uint64_t));
    out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(n));
    done += n;
  }
}

}  // namespace fleet::testing

#endif  // FLEET_TESTS_SUPPORT_RANDOM_FILE_H_
