// TokenCache: per-worker memory of verified tokens, so a keep-alive
// connection or a page with fifty assets costs one Ed25519 verification, not
// fifty. Bounded; an entry never outlives its token's expiry; the whole cache
// is dropped when the key ring changes (rotation). Failed checks are cached
// too, so a flood of one forged token costs one verification.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "auth/access_token.h"

namespace spacegate {

class TokenCache {
 public:
  explicit TokenCache(size_t capacity = 8192) : capacity_(capacity) {}

  // Verifies `text` or answers from the cache.
  TokenCheck check(std::string_view text, const KeyRingSnapshot& keys, int64_t now_unix,
                   const AccessToken*& token);

  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    TokenCheck result;
    AccessToken token;
    int64_t valid_until;  // token expiry (valid entries), or a short retry time
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>()(text); }
  };

  size_t capacity_;
  const KeyRing* keys_ = nullptr;  // the ring the entries were checked against
  KeyRingSnapshot keys_holder_;
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>> entries_;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace spacegate
