#include "net/inbound_buffer.h"

#include <cstring>

namespace spacegate {

namespace {
// Below this much free space at the end of a slab, start a new slab rather
// than issuing small reads.
constexpr size_t kMinimumReadSpace = 2048;
}  // namespace

uv_buf_t InboundBuffer::prepareRead() {
  if (slab_ && empty() && slab_.unique()) {
    if (streaming_ && slab_.capacity() < pool_.largeSize()) {
      slab_.reset();  // a bulk stream: trade up to a large slab below
    } else {
      // Nobody else looks at these bytes any more: start over at the beginning.
      begin_ = end_ = 0;
    }
  }
  if (!slab_ || slab_.capacity() - end_ < kMinimumReadSpace) {
    size_t pending = size();
    bool need_large = pending > BufferPool::kStandardSize / 2 || streaming_;
    if (full()) {
      // The largest buffer is full of unparsed bytes: nothing more fits. The
      // parser's size limit fires before this for heads; give an empty read.
      offered_ = 0;
      return uv_buf_init(slab_.data() + end_, 0);
    }
    SlabRef next = need_large ? pool_.acquireLarge() : pool_.acquireStandard();
    if (pending > 0) std::memcpy(next.data(), slab_.data() + begin_, pending);
    slab_ = std::move(next);
    begin_ = 0;
    end_ = pending;
  }
  offered_ = slab_.capacity() - end_;
  return uv_buf_init(slab_.data() + end_, static_cast<unsigned>(offered_));
}

}  // namespace spacegate
