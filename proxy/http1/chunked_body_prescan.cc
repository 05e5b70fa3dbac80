#include "http1/chunked_body_prescan.h"

#include <algorithm>

namespace spacegate {

namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A byte that may not appear inside a framing line (HTAB may: extensions
// and trailer values allow it).
bool isControlByte(char c) {
  unsigned char byte = static_cast<unsigned char>(c);
  return (byte < 0x20 && c != '\t') || byte == 0x7f;
}

}  // namespace

ChunkedBodyPrescan::Result ChunkedBodyPrescan::scan(const char* data, size_t size,
                                                    size_t& consumed) {
  consumed = 0;
  if (state_ == State::kFailed) return Result::kMalformed;
  size_t position = 0;
  while (position < size && state_ != State::kDone) {
    if (state_ == State::kData) {
      uint64_t skip = std::min<uint64_t>(remaining_, size - position);
      position += static_cast<size_t>(skip);
      remaining_ -= skip;
      if (remaining_ == 0) state_ = State::kDataCr;
      continue;
    }
    char c = data[position++];
    switch (state_) {
      case State::kSizeFirstDigit:
      case State::kSize: {
        int digit = hexValue(c);
        if (digit >= 0) {
          if (++size_digits_ > kMaxSizeDigits) return fail("chunk size too long");
          chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(digit);
          state_ = State::kSize;
        } else if (state_ == State::kSizeFirstDigit) {
          return fail("chunk size is not hexadecimal");
        } else if (c == ';') {
          state_ = State::kExtension;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else {
          return fail("invalid byte after chunk size");
        }
        break;
      }
      case State::kExtension:
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (isControlByte(c)) {
          return fail("control byte in chunk extension");
        }
        break;
      case State::kSizeLf:
        if (c != '\n') return fail("chunk size line not ended by CRLF");
        if (chunk_size_ == 0) {
          state_ = State::kTrailerStart;
        } else {
          remaining_ = chunk_size_;
          state_ = State::kData;
        }
        break;
      case State::kDataCr:
        if (c != '\r') return fail("chunk data not followed by CRLF");
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return fail("chunk data not followed by CRLF");
        size_digits_ = 0;
        chunk_size_ = 0;
        state_ = State::kSizeFirstDigit;
        break;
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kLastLf;
        } else if (c == ' ' || c == '\t') {
          return fail("obs-fold in trailer section");
        } else if (isControlByte(c)) {
          return fail("control byte in trailer section");
        } else {
          state_ = State::kTrailer;
        }
        break;
      case State::kTrailer:
        if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (isControlByte(c)) {
          return fail("control byte in trailer section");
        }
        break;
      case State::kTrailerLf:
        if (c != '\n') return fail("trailer line not ended by CRLF");
        state_ = State::kTrailerStart;
        break;
      case State::kLastLf:
        if (c != '\n') return fail("chunked body not ended by CRLF");
        state_ = State::kDone;
        break;
      case State::kData:
      case State::kDone:
      case State::kFailed: break;
    }
  }
  consumed = position;
  return state_ == State::kDone ? Result::kComplete : Result::kIncomplete;
}

}  // namespace spacegate
