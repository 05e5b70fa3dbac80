// ChunkedBodyPrescan: checks the framing of a chunked body on the raw bytes,
// beside llhttp, with the rules llhttp 8.1 skips outside its compile-time
// strict mode and that are known request-smuggling vectors between proxies
// ("chunk spill" and "bare LF" desyncs):
//   - the two bytes after each chunk's data must be CRLF (llhttp skips any
//     two bytes there),
//   - every line of the body (chunk sizes, the trailer section and the empty
//     line that ends it) must end in CRLF, never in a bare LF or CR,
//   - a chunk size is 1 to 16 hex digits, followed by ';' (an extension,
//     whose syntax llhttp checks) or CRLF; no NUL or control byte anywhere
//     in the framing lines.
// Http1MessageParser scans each input with it before llhttp sees it and
// refuses the body when either finds it malformed, or when the two disagree
// on where it ends. Chunk data is skipped, not examined: the cost is in the
// few framing bytes only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spacegate {

class ChunkedBodyPrescan {
 public:
  enum class Result {
    kIncomplete,  // every byte given belongs to the body; feed more
    kComplete,    // the body ended; `consumed` bytes of the input were its last
    kMalformed,   // `reason()` says why
  };

  // Scans the next `size` bytes of the body. On kComplete, `consumed` says
  // how many of them belong to the body (the rest is the next message).
  Result scan(const char* data, size_t size, size_t& consumed);
  const char* reason() const { return reason_; }
  void reset() { *this = ChunkedBodyPrescan(); }

 private:
  // Where in the chunked grammar the next byte falls.
  enum class State : uint8_t {
    kSizeFirstDigit,  // first hex digit of a chunk size
    kSize,            // more hex digits, ';' or CR
    kExtension,       // after ';' up to CR (llhttp checks the syntax)
    kSizeLf,          // LF ending a chunk size line
    kData,            // `remaining_` bytes of chunk data
    kDataCr,          // CR after the data
    kDataLf,          // LF after the data
    kTrailerStart,    // first byte of a trailer line, or CR of the last line
    kTrailer,         // inside a trailer line, up to CR
    kTrailerLf,       // LF ending a trailer line
    kLastLf,          // LF of the empty line that ends the body
    kDone,            // the body ended
    kFailed,          // malformed
  };
  static constexpr int kMaxSizeDigits = 16;  // a chunk size fits in 64 bits

  Result fail(const char* reason) {
    state_ = State::kFailed;
    reason_ = reason;
    return Result::kMalformed;
  }

  State state_ = State::kSizeFirstDigit;
  int size_digits_ = 0;
  uint64_t chunk_size_ = 0;
  uint64_t remaining_ = 0;
  const char* reason_ = "";
};

}  // namespace spacegate
