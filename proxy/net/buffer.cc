#include "net/buffer.h"

#include <cstdlib>
#include <new>

namespace spacegate {

void SlabRef::reset() {
  if (slab_ && --slab_->references == 0) slab_->pool->release(slab_);
  slab_ = nullptr;
}

BufferPool::BufferPool(uint32_t large_size, size_t max_cached_standard, size_t max_cached_large)
    : standard_{kStandardSize, max_cached_standard, {}},
      large_{large_size > kStandardSize ? large_size : kStandardSize, max_cached_large, {}} {}

BufferPool::~BufferPool() {
  for (Slab* slab : standard_.free) std::free(slab);
  for (Slab* slab : large_.free) std::free(slab);
}

SlabRef BufferPool::acquire(SizeClass& size_class) {
  Slab* slab;
  if (!size_class.free.empty()) {
    slab = size_class.free.back();
    size_class.free.pop_back();
  } else {
    slab = static_cast<Slab*>(std::malloc(sizeof(Slab) + size_class.size));
    if (!slab) throw std::bad_alloc();
    slab->pool = this;
    slab->capacity = size_class.size;
  }
  slab->references = 0;
  ++in_use_;
  return SlabRef(slab);
}

void BufferPool::release(Slab* slab) {
  --in_use_;
  SizeClass& size_class = slab->capacity == standard_.size ? standard_ : large_;
  if (size_class.free.size() < size_class.max_cached) {
    size_class.free.push_back(slab);
  } else {
    std::free(slab);
  }
}

}  // namespace spacegate
