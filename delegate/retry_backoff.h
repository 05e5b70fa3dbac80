// RetryBackoff: the pauses between tries of an idempotent call (doubling
// from `initial` to `max`, with up to a quarter of jitter so that twenty
// tasks refused at once do not come back at once), and ShutdownSignal: what
// the delegate's long-lived loops wait on, so SIGTERM ends a pause at once.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <random>

namespace spacegate {

class RetryBackoff {
 public:
  RetryBackoff(uint64_t initial_ms, uint64_t max_ms) : initial_ms_(initial_ms), max_ms_(max_ms) {}

  // The next pause: initial, 2 × initial, ... up to max (plus jitter).
  uint64_t nextDelayMs() {
    uint64_t base = next_ms_ == 0 ? initial_ms_ : next_ms_;
    next_ms_ = std::min(max_ms_, base * 2);
    thread_local std::minstd_rand random(std::random_device{}());
    uint64_t jitter = base / 4 == 0 ? 0 : random() % (base / 4 + 1);
    return std::min(max_ms_, base + jitter);
  }
  void reset() { next_ms_ = 0; }

 private:
  uint64_t initial_ms_;
  uint64_t max_ms_;
  uint64_t next_ms_ = 0;
};

class ShutdownSignal {
 public:
  void request() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requested_ = true;
    }
    changed_.notify_all();
  }
  bool requested() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requested_;
  }
  // Sleeps up to `ms`; false when shutdown was requested (before or during).
  bool sleepFor(uint64_t ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    return !changed_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return requested_; });
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool requested_ = false;
};

}  // namespace spacegate
