// HMAC-SHA256 and random bytes through OpenSSL.
#include "common/hmac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>

namespace fleet {

Mac HmacSha256(absl::string_view key, absl::string_view data) {
  // OpenSSL treats a null key as "reuse the previous one"; an empty key must still be a pointer.
  static const char kEmpty = 0;
  const void* key_data = key.empty() ? &kEmpty : key.data();
  Mac mac{};
  unsigned int mac_size = 0;
  if (HMAC(EVP_sha256(), key_data, static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(),
           &mac_size) == nullptr ||
      mac_size != kMacSize) {
    // Only a broken OpenSSL installation gets here; there is no sensible way to go on.
    std::fprintf(stderr, "fatal: OpenSSL HMAC-SHA256 failed\n");
    std::abort();
  }
  return mac;
}

bool MacEquals(const Mac& expected, absl::string_view mac) {
  return mac.size() == kMacSize && CRYPTO_memcmp(expected.data(), mac.data(), kMacSize) == 0;
}

absl::StatusOr<std::string> RandomBytes(size_t size) {
  std::string bytes(size, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(size)) != 1) {
    return absl::UnavailableError("OpenSSL's random generator failed");
  }
  return bytes;
}

}  // namespace fleet
