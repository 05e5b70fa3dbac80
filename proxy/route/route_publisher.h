// RouteTablePublisher: hands the current RouteTable snapshot to the workers,
// RCU style. A writer builds a whole new table and publishes it; a worker
// compares one atomic version number per request and takes the (briefly
// locked) new snapshot only when it changed, so the data path never waits on
// a lock. An exchange keeps the snapshot it started with.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "route/route_table.h"

namespace spacegate {

class RouteTablePublisher {
 public:
  void publish(RouteTableSnapshot table) {
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = std::move(table);
    generation_.fetch_add(1, std::memory_order_release);
  }
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  RouteTableSnapshot current() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return current_;
  }

 private:
  mutable std::mutex mutex_;
  RouteTableSnapshot current_ = std::make_shared<const RouteTable>(std::vector<Route>{});
  std::atomic<uint64_t> generation_{1};
};

// A worker's view: refreshed when the publisher's generation moves.
class RouteTableReader {
 public:
  explicit RouteTableReader(const RouteTablePublisher& publisher) : publisher_(publisher) {}
  const RouteTableSnapshot& current() {
    uint64_t generation = publisher_.generation();
    if (generation != seen_generation_) {
      cached_ = publisher_.current();
      seen_generation_ = generation;
    }
    return cached_;
  }

 private:
  const RouteTablePublisher& publisher_;
  RouteTableSnapshot cached_;
  uint64_t seen_generation_ = 0;
};

}  // namespace spacegate
