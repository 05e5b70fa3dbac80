// Refcounted read buffers ("slabs") from a per-loop pool.
//
// Bytes read from a socket stay in the slab they were read into: headers are
// parsed in place, and body bytes are forwarded to the other side as slices
// that hold a reference on the slab until the write completes. A slab goes
// back to its pool when its last reference drops. Everything here is used by
// one loop thread only, so the reference count is a plain integer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace spacegate {

class BufferPool;

struct Slab {
  BufferPool* pool;
  uint32_t references;
  uint32_t capacity;
  char* bytes() { return reinterpret_cast<char*>(this + 1); }
};

// Owning reference to a slab (intrusive, non-atomic).
class SlabRef {
 public:
  SlabRef() = default;
  explicit SlabRef(Slab* slab) : slab_(slab) {
    if (slab_) ++slab_->references;
  }
  SlabRef(const SlabRef& other) : SlabRef(other.slab_) {}
  SlabRef(SlabRef&& other) noexcept : slab_(std::exchange(other.slab_, nullptr)) {}
  SlabRef& operator=(SlabRef other) noexcept {
    std::swap(slab_, other.slab_);
    return *this;
  }
  ~SlabRef() { reset(); }

  void reset();
  explicit operator bool() const { return slab_ != nullptr; }
  char* data() const { return slab_->bytes(); }
  size_t capacity() const { return slab_->capacity; }
  // True when this is the only reference: the slab's bytes may be reused.
  bool unique() const { return slab_ && slab_->references == 1; }
  Slab* get() const { return slab_; }

 private:
  Slab* slab_ = nullptr;
};

// A span of bytes inside a slab, keeping the slab alive.
struct BufferSlice {
  SlabRef slab;
  const char* data = nullptr;
  size_t size = 0;
};

// Per-loop pool of fixed-size slabs in two size classes: the standard read
// buffer, and a large one for a header block that outgrows it and for bulk
// streams (a read that fills its buffer asks for a large one next).
class BufferPool {
 public:
  static constexpr uint32_t kStandardSize = 16 * 1024;

  // `large_size` is the biggest header block the gateway accepts plus slack.
  explicit BufferPool(uint32_t large_size, size_t max_cached_standard = 1024,
                      size_t max_cached_large = 128);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  SlabRef acquireStandard() { return acquire(standard_); }
  SlabRef acquireLarge() { return acquire(large_); }
  uint32_t largeSize() const { return large_.size; }

  // Statistics for /stats and the tests.
  size_t slabsInUse() const { return in_use_; }
  size_t slabsCached() const { return standard_.free.size() + large_.free.size(); }

 private:
  friend class SlabRef;
  struct SizeClass {
    uint32_t size;
    size_t max_cached;  // free slabs kept for reuse; beyond it they are freed
    std::vector<Slab*> free;
  };
  SlabRef acquire(SizeClass& size_class);
  void release(Slab* slab);

  SizeClass standard_;
  SizeClass large_;
  size_t in_use_ = 0;
};

}  // namespace spacegate
