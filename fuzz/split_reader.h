// What the fuzz targets use in place of a socket. SplitReader hands out the
// input in reads whose sizes follow from one seed byte (whole, byte by byte,
// or cut at odd places), so the parsers' partial-read paths run on the same
// bytes as the one-read path. InboundBytes holds the unparsed bytes as a
// connection's InboundBuffer does, but gives every parse call a fresh heap
// copy of exactly those bytes: a view kept past its buffer, or a read one
// byte past the end, becomes an AddressSanitizer report instead of going
// unnoticed. FUZZ_CHECK aborts with a message when an invariant breaks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#define FUZZ_CHECK(condition, what)                                                             \
  do {                                                                                          \
    if (!(condition)) {                                                                         \
      std::fprintf(stderr, "invariant broken at %s:%d: %s\n  (%s)\n", __FILE__, __LINE__, what, \
                   #condition);                                                                 \
      std::abort();                                                                             \
    }                                                                                           \
  } while (false)

namespace spacegate::fuzz {

class SplitReader {
 public:
  // Seed 0 delivers everything in one read. Otherwise the low two bits pick
  // the largest read (1, 7, 61 or 1021 bytes) and the rest seed a small
  // generator for the size of each read.
  SplitReader(const uint8_t* data, size_t size, uint8_t seed)
      : data_(reinterpret_cast<const char*>(data)), size_(size), state_(seed | 1u) {
    static constexpr size_t kLargestRead[] = {1, 7, 61, 1021};
    largest_read_ = seed == 0 ? size : kLargestRead[seed & 3];
  }

  bool done() const { return offset_ >= size_; }

  // The next read (empty once done()).
  std::string_view next() {
    state_ = state_ * 1103515245u + 12345u;
    size_t length = largest_read_ <= 1 ? 1 : 1 + (state_ >> 16) % largest_read_;
    if (length > size_ - offset_) length = size_ - offset_;
    std::string_view read(data_ + offset_, length);
    offset_ += length;
    return read;
  }

 private:
  const char* data_;
  size_t size_;
  size_t offset_ = 0;
  size_t largest_read_;
  uint32_t state_;
};

class InboundBytes {
 public:
  using Window = std::shared_ptr<const std::vector<char>>;

  void append(std::string_view read) { pending_.append(read); }
  void consume(size_t bytes) { pending_.erase(0, bytes); }
  size_t size() const { return pending_.size(); }
  bool empty() const { return pending_.empty(); }

  // A fresh allocation of exactly the pending bytes. Views into it stay
  // valid while the returned pointer (like a head's `storage`) is held.
  Window window() const {
    return std::make_shared<const std::vector<char>>(pending_.begin(), pending_.end());
  }

 private:
  std::string pending_;
};

}  // namespace spacegate::fuzz
