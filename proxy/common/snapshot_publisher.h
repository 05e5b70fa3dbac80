// SnapshotPublisher: hands an immutable snapshot (the route table, the key
// ring) to the workers, RCU style. A writer builds a whole new object and
// publishes it; a reader compares one atomic generation number per use and
// takes the (briefly locked) new snapshot only when it changed, so the data
// path never waits on a lock. A user keeps the snapshot it started with.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

namespace spacegate {

template <typename T>
class SnapshotPublisher {
 public:
  using Snapshot = std::shared_ptr<const T>;

  void publish(Snapshot snapshot) {
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = std::move(snapshot);
    generation_.fetch_add(1, std::memory_order_release);
  }
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  Snapshot current() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return current_;
  }

 private:
  mutable std::mutex mutex_;
  Snapshot current_ = std::make_shared<const T>();
  std::atomic<uint64_t> generation_{1};
};

// One thread's view: refreshed when the publisher's generation moves.
template <typename T>
class SnapshotReader {
 public:
  using Snapshot = std::shared_ptr<const T>;

  explicit SnapshotReader(const SnapshotPublisher<T>& publisher) : publisher_(publisher) {}
  const Snapshot& current() {
    uint64_t generation = publisher_.generation();
    if (generation != seen_generation_) {
      cached_ = publisher_.current();
      seen_generation_ = generation;
    }
    return cached_;
  }

 private:
  const SnapshotPublisher<T>& publisher_;
  Snapshot cached_;
  uint64_t seen_generation_ = 0;
};

}  // namespace spacegate
