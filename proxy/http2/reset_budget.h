// ResetBudget: the HTTP/2 abuse limit on stream resets, in its own class.
// Rapid Reset (CVE-2023-44487) makes a server start and abandon work for
// every HEADERS+RST_STREAM pair; MadeYouReset (CVE-2025-8671) gets the same
// from the server's own resets of invalid streams. Both draw from one token
// bucket per connection: `burst` resets at once, refilled at `rate` per
// second. nghttp2 polices the client's RST_STREAMs the same way
// (nghttp2_option_set_stream_reset_rate_limit); this class counts the ones
// the gateway sends.
#pragma once

#include <algorithm>
#include <cstdint>

namespace spacegate {

class ResetBudget {
 public:
  ResetBudget(uint32_t burst, uint32_t rate_per_second)
      : burst_(burst), rate_(rate_per_second), tokens_(burst) {}
  // One reset at `now_ms`; false once the budget is spent (cut the client off).
  bool spend(uint64_t now_ms) {
    if (last_ms_ != 0 && now_ms > last_ms_) {
      uint64_t refill = (now_ms - last_ms_) * rate_ / 1000;
      if (refill > 0) {
        tokens_ = static_cast<uint32_t>(std::min<uint64_t>(burst_, tokens_ + refill));
        last_ms_ = now_ms;
      }
    } else if (last_ms_ == 0) {
      last_ms_ = now_ms;
    }
    if (tokens_ == 0) return false;
    --tokens_;
    return true;
  }
  uint32_t tokens() const { return tokens_; }

 private:
  uint32_t burst_;
  uint32_t rate_;
  uint32_t tokens_;
  uint64_t last_ms_ = 0;
};

}  // namespace spacegate
