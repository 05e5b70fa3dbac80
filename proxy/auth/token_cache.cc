#include "auth/token_cache.h"

namespace spacegate {

namespace {
// A failed check is retried after this long (a token that was not yet valid
// may become valid; a key may be added).
constexpr int64_t kNegativeCacheSeconds = 5;
}  // namespace

TokenCheck TokenCache::check(std::string_view text, const KeyRingSnapshot& keys, int64_t now_unix,
                             const AccessToken*& token) {
  if (keys.get() != keys_) {
    // New key ring: nothing checked against the old one stands.
    entries_.clear();
    keys_ = keys.get();
    keys_holder_ = keys;
  }
  auto found = entries_.find(text);
  if (found != entries_.end()) {
    Entry& entry = found->second;
    if (now_unix < entry.valid_until) {
      ++hits_;
      token = &entry.token;
      return entry.result;
    }
    if (entry.result == TokenCheck::kValid) {
      // Expired since it was cached.
      entry.result = TokenCheck::kExpired;
      entry.valid_until = INT64_MAX;
      token = &entry.token;
      ++hits_;
      return entry.result;
    }
    entries_.erase(found);
  }
  ++misses_;
  if (entries_.size() >= capacity_) entries_.clear();  // bounded; rebuilt by traffic
  Entry entry;
  entry.result = verifyAccessToken(text, *keys, now_unix, entry.token);
  switch (entry.result) {
    case TokenCheck::kValid: entry.valid_until = entry.token.exp; break;
    case TokenCheck::kExpired:
    case TokenCheck::kMalformed:
    case TokenCheck::kBadSignature: entry.valid_until = INT64_MAX; break;  // never changes
    default: entry.valid_until = now_unix + kNegativeCacheSeconds; break;
  }
  auto [inserted, ok] = entries_.emplace(std::string(text), std::move(entry));
  token = &inserted->second.token;
  return inserted->second.result;
}

}  // namespace spacegate
