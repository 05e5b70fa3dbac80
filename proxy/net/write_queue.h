// Outbound bytes for one stream. A write is assembled as a list of segments,
// each either a view into bytes kept alive by a slab reference (zero copy:
// header lines and body bytes straight from the buffer they were read into)
// or small generated text (a rewritten header, a chunk size line). The
// segments go out in one uv_write (writev). Write records are recycled
// through a per-loop free list, so steady-state forwarding allocates nothing.
#pragma once

#include <uv.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "net/buffer.h"

namespace spacegate {

class WriteQueue;

class OutboundWrite {
 public:
  // Bytes that stay valid while `hold` (or an earlier hold) keeps their slab.
  void appendView(const char* data, size_t size);
  void appendView(std::string_view view) { appendView(view.data(), view.size()); }
  void appendSlice(const BufferSlice& slice) {
    hold(slice.slab);
    appendView(slice.data, slice.size);
  }
  void appendGenerated(std::string_view text);
  void hold(const SlabRef& slab);
  size_t size() const { return bytes_; }
  bool empty() const { return segments_.empty(); }
  size_t segmentCount() const { return segments_.size(); }
  // The bytes as one string (tests and fuzzers; the data path never copies).
  std::string flatten() const;

 private:
  friend class WriteQueue;
  friend class WriteRecordPool;
  struct Segment {
    const char* data;  // nullptr: generated_[offset, offset+size)
    size_t offset;
    size_t size;
  };
  void clear();

  uv_write_t request_;
  WriteQueue* queue_ = nullptr;
  std::vector<Segment> segments_;
  std::vector<uv_buf_t> buffers_;
  std::vector<SlabRef> holds_;
  std::string generated_;
  size_t bytes_ = 0;
};

// Per-loop free list of write records.
class WriteRecordPool {
 public:
  ~WriteRecordPool();
  OutboundWrite* acquire();
  void release(OutboundWrite* write);

 private:
  std::vector<OutboundWrite*> free_;
};

// A layer that turns the plaintext a queue is given into the bytes that go
// on the wire (TLS: tls/tls_connection.h). The queue hands it every write's
// bytes in order and sends what it produces.
class WriteEncryptor {
 public:
  virtual ~WriteEncryptor() = default;
  virtual bool write(const char* data, size_t size) = 0;
  virtual size_t pendingOutput() const = 0;
  virtual size_t takeOutput(char* buffer, size_t size) = 0;
};

class WriteQueue {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    // A write finished (status 0) or failed; queuedBytes() is already updated.
    virtual void onWriteDone(WriteQueue& queue, int status) = 0;
  };

  WriteQueue(WriteRecordPool& pool, Listener& listener) : pool_(pool), listener_(listener) {}
  void attach(uv_stream_t* stream) { stream_ = stream; }
  // From now on every write is encrypted first; the ciphertext lives in
  // slabs from `buffers`.
  void encryptWith(WriteEncryptor* encryptor, BufferPool* buffers) {
    encryptor_ = encryptor;
    cipher_buffers_ = buffers;
  }
  // Sends what the encryptor produced on its own (handshake records, alerts).
  int flushEncryptorOutput() {
    prepare();
    return submit();
  }

  // Starts a write; fill it, then submit() it.
  OutboundWrite& prepare();
  // Sends the prepared write. Returns a libuv error code (0 on success).
  // What the socket takes at once is written synchronously and reports no
  // onWriteDone; only a rest that had to wait does.
  int submit();
  // Drops the prepared write without sending it.
  void discard();

  size_t queuedBytes() const { return queued_bytes_; }
  size_t pendingWrites() const { return pending_writes_; }
  uint64_t totalBytesWritten() const { return total_written_; }

 private:
  static void onWritten(uv_write_t* request, int status);
  // The prepared plaintext write encrypted into a new write (or null on a
  // TLS failure); releases `plain`.
  OutboundWrite* encrypt(OutboundWrite* plain);

  WriteRecordPool& pool_;
  Listener& listener_;
  uv_stream_t* stream_ = nullptr;
  WriteEncryptor* encryptor_ = nullptr;
  BufferPool* cipher_buffers_ = nullptr;
  OutboundWrite* prepared_ = nullptr;
  size_t queued_bytes_ = 0;
  size_t pending_writes_ = 0;
  uint64_t total_written_ = 0;
};

}  // namespace spacegate
