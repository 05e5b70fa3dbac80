// Random secrets and their stored form. API tokens (users, delegates) are 32
// random bytes in hex; only their SHA-256 is stored, so a copy of the
// database does not let anyone in.
#pragma once

#include <string>
#include <string_view>

namespace spacegate {

// `bytes` random bytes (BoringSSL's RAND_bytes) as lower-case hex.
std::string randomHex(size_t bytes);
// A new API token: 32 random bytes, hex.
inline std::string newSecretToken() {
  return randomHex(32);
}
// SHA-256 of `text`, lower-case hex.
std::string sha256Hex(std::string_view text);

}  // namespace spacegate
