// InboundBuffer: where a connection's reads land. Bytes are parsed in place;
// body bytes leave as slices that reference the slab, so the buffer moves on
// to fresh space instead of overwriting them. Only the unparsed remainder
// (a partial head, or a pipelined next request) is ever copied, when a new
// slab is needed. An idle connection drops its slab (holds no buffer).
#pragma once

#include <uv.h>

#include <cstddef>

#include "net/buffer.h"

namespace spacegate {

class InboundBuffer {
 public:
  explicit InboundBuffer(BufferPool& pool) : pool_(pool) {}

  // Space for the next read. `keep_large` asks for the large size class when
  // the unparsed bytes (a growing head) fill the standard one.
  uv_buf_t prepareRead();
  void commit(size_t bytes) {
    // A read that filled all it was offered: a bulk stream, worth a large
    // buffer next time (fewer reads, fewer writes per MiB).
    streaming_ = bytes == offered_ && offered_ > 0;
    end_ += bytes;
  }

  const char* data() const { return slab_ ? slab_.data() + begin_ : nullptr; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  void consume(size_t bytes) { begin_ += bytes; }
  // A slice of the unparsed bytes [offset, offset+size) holding the slab.
  BufferSlice slice(const char* data, size_t size) const { return BufferSlice{slab_, data, size}; }
  const SlabRef& slab() const { return slab_; }
  // True when the unparsed bytes fill the largest buffer there is: nothing
  // more can be read for this head.
  bool full() const {
    return slab_ && begin_ == 0 && end_ == slab_.capacity() &&
           slab_.capacity() >= pool_.largeSize();
  }

  // Forgets everything, unparsed bytes included.
  void reset() {
    slab_.reset();
    begin_ = end_ = 0;
  }

  // Drops the slab if nothing unparsed is left in it (idle connections).
  void releaseIfEmpty() {
    if (empty()) {
      slab_.reset();
      begin_ = end_ = 0;
    }
  }

 private:
  BufferPool& pool_;
  SlabRef slab_;
  size_t begin_ = 0;        // first unparsed byte
  size_t end_ = 0;          // end of received bytes
  size_t offered_ = 0;      // space the last prepareRead() gave
  bool streaming_ = false;  // the last read filled it
};

}  // namespace spacegate
