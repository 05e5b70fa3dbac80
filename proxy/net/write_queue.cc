#include "net/write_queue.h"

#include <algorithm>
#include <cstring>

namespace spacegate {

void OutboundWrite::appendView(const char* data, size_t size) {
  if (size == 0) return;
  if (!segments_.empty()) {
    Segment& last = segments_.back();
    // Adjacent views (consecutive header lines kept as received) coalesce
    // into one iovec.
    if (last.data && last.data + last.size == data) {
      last.size += size;
      bytes_ += size;
      return;
    }
  }
  segments_.push_back(Segment{data, 0, size});
  bytes_ += size;
}

void OutboundWrite::appendGenerated(std::string_view text) {
  if (text.empty()) return;
  if (!segments_.empty() && !segments_.back().data &&
      segments_.back().offset + segments_.back().size == generated_.size()) {
    segments_.back().size += text.size();
  } else {
    segments_.push_back(Segment{nullptr, generated_.size(), text.size()});
  }
  generated_.append(text);
  bytes_ += text.size();
}

void OutboundWrite::hold(const SlabRef& slab) {
  if (!slab) return;
  for (const SlabRef& held : holds_) {
    if (held.get() == slab.get()) return;
  }
  holds_.push_back(slab);
}

std::string OutboundWrite::flatten() const {
  std::string bytes;
  bytes.reserve(bytes_);
  for (const Segment& segment : segments_) {
    bytes.append(segment.data ? segment.data : generated_.data() + segment.offset, segment.size);
  }
  return bytes;
}

void OutboundWrite::clear() {
  segments_.clear();
  buffers_.clear();
  holds_.clear();
  generated_.clear();
  bytes_ = 0;
  queue_ = nullptr;
}

WriteRecordPool::~WriteRecordPool() {
  for (OutboundWrite* write : free_) delete write;
}

OutboundWrite* WriteRecordPool::acquire() {
  if (free_.empty()) return new OutboundWrite();
  OutboundWrite* write = free_.back();
  free_.pop_back();
  return write;
}

void WriteRecordPool::release(OutboundWrite* write) {
  write->clear();
  // Records that grew large (a big generated part) are not kept.
  if (free_.size() >= 1024 || write->generated_.capacity() > 64 * 1024) {
    delete write;
    return;
  }
  free_.push_back(write);
}

OutboundWrite& WriteQueue::prepare() {
  if (!prepared_) prepared_ = pool_.acquire();
  return *prepared_;
}

void WriteQueue::discard() {
  if (prepared_) pool_.release(prepared_);
  prepared_ = nullptr;
}

int WriteQueue::submit() {
  OutboundWrite* write = prepared_;
  prepared_ = nullptr;
  if (!write) return 0;
  if (encryptor_) {
    write = encrypt(write);
    if (!write) return UV_EPROTO;
  }
  if (write->empty()) {
    pool_.release(write);
    return 0;
  }
  write->buffers_.reserve(write->segments_.size());
  for (const OutboundWrite::Segment& segment : write->segments_) {
    const char* base = segment.data ? segment.data : write->generated_.data() + segment.offset;
    write->buffers_.push_back(
        uv_buf_init(const_cast<char*>(base), static_cast<unsigned>(segment.size)));
  }
  write->queue_ = this;
  write->request_.data = write;
  uv_buf_t* buffers = write->buffers_.data();
  unsigned count = static_cast<unsigned>(write->buffers_.size());
  if (pending_writes_ == 0) {
    // Nothing queued: write now, in this call. What the socket takes needs no
    // write request and no epoll change (uv_write would arm and disarm
    // POLLOUT around it); only a rest goes to uv_write.
    int written = uv_try_write(stream_, buffers, count);
    if (written == static_cast<int>(write->bytes_)) {
      total_written_ += write->bytes_;
      pool_.release(write);
      return 0;
    }
    if (written < 0 && written != UV_EAGAIN) {
      pool_.release(write);
      return written;
    }
    if (written > 0) {
      size_t skip = static_cast<size_t>(written);
      total_written_ += skip;
      write->bytes_ -= skip;
      while (skip > 0 && skip >= buffers->len) {
        skip -= buffers->len;
        ++buffers;
        --count;
      }
      buffers->base += skip;
      buffers->len -= static_cast<unsigned>(skip);
    }
  }
  size_t bytes = write->bytes_;
  int result = uv_write(&write->request_, stream_, buffers, count, &WriteQueue::onWritten);
  if (result != 0) {
    pool_.release(write);
    return result;
  }
  queued_bytes_ += bytes;
  ++pending_writes_;
  return 0;
}

OutboundWrite* WriteQueue::encrypt(OutboundWrite* plain) {
  // Small segments (header lines, chunk sizes) are gathered into records of
  // up to 16 KiB, the TLS record size, instead of a record each.
  constexpr size_t kRecordSize = 16 * 1024;
  static thread_local char staging[kRecordSize];
  size_t staged = 0;
  bool ok = true;
  for (const OutboundWrite::Segment& segment : plain->segments_) {
    const char* data = segment.data ? segment.data : plain->generated_.data() + segment.offset;
    size_t size = segment.size;
    if (size >= kRecordSize && staged == 0) {
      ok = ok && encryptor_->write(data, size);
      continue;
    }
    while (size > 0) {
      size_t take = std::min(size, kRecordSize - staged);
      std::memcpy(staging + staged, data, take);
      staged += take;
      data += take;
      size -= take;
      if (staged == kRecordSize) {
        ok = ok && encryptor_->write(staging, staged);
        staged = 0;
      }
    }
  }
  if (staged > 0) ok = ok && encryptor_->write(staging, staged);
  pool_.release(plain);
  if (!ok) return nullptr;
  OutboundWrite* cipher = pool_.acquire();
  while (size_t pending = encryptor_->pendingOutput()) {
    SlabRef slab = pending > BufferPool::kStandardSize ? cipher_buffers_->acquireLarge()
                                                       : cipher_buffers_->acquireStandard();
    size_t taken = encryptor_->takeOutput(slab.data(), slab.capacity());
    if (taken == 0) break;
    cipher->hold(slab);
    cipher->appendView(slab.data(), taken);
  }
  return cipher;
}

void WriteQueue::onWritten(uv_write_t* request, int status) {
  auto* write = static_cast<OutboundWrite*>(request->data);
  WriteQueue* queue = write->queue_;
  queue->queued_bytes_ -= write->bytes_;
  --queue->pending_writes_;
  if (status == 0) queue->total_written_ += write->bytes_;
  queue->pool_.release(write);
  queue->listener_.onWriteDone(*queue, status);
}

}  // namespace spacegate
