// HeaderBlockPrescan: finds the end of an HTTP/1 header block and rejects, on
// the raw bytes, the shapes that llhttp 8.1.0 lets through even in strict
// mode and that have led to request smuggling between proxies:
//   - obs-fold (a field line starting with SP or HT),
//   - a bare CR anywhere (e.g. "X: \rTransfer-Encoding: chunked",
//     CVE-2023-30589), a bare LF line ending, a NUL byte,
//   - HTTP/0.9 (a request line without an HTTP version).
// It also enforces the size and field-count limits. It scans incrementally:
// feeding a header one byte at a time costs O(n) in all, not O(n^2).
#pragma once

#include <cstddef>
#include <cstdint>

namespace spacegate {

class HeaderBlockPrescan {
 public:
  enum class Result {
    kIncomplete,     // need more bytes
    kComplete,       // `headBegin()`..`headEnd()` is a well-formed header block
    kMalformed,      // reject with 400; `reason()` says why
    kTooLarge,       // header block over the size limit: 431
    kTooManyFields,  // more header fields than allowed: 431
  };
  enum class Kind { kRequest, kResponse, kTrailers };

  HeaderBlockPrescan(Kind kind, size_t max_size, size_t max_fields)
      : kind_(kind), max_size_(max_size), max_fields_(max_fields) {}

  // Scans `data[0..size)`, the bytes received so far for this head (the same
  // prefix grows between calls). Returns kComplete once the empty line ending
  // the block has been seen.
  Result scan(const char* data, size_t size);

  // Offset of the first byte of the start line (after any empty lines that
  // precede it, which RFC 9112 says a server should ignore).
  size_t headBegin() const { return head_begin_; }
  // Offset just past the empty line that ends the block.
  size_t headEnd() const { return position_; }
  size_t fieldCount() const { return fields_; }
  const char* reason() const { return reason_; }

  void reset() { *this = HeaderBlockPrescan(kind_, max_size_, max_fields_); }

 private:
  Result fail(Result result, const char* reason) {
    reason_ = reason;
    failed_ = result;
    return result;
  }
  Result checkStartLine(const char* line, size_t length);

  Kind kind_;
  size_t max_size_;
  size_t max_fields_;
  size_t position_ = 0;    // bytes examined so far
  size_t head_begin_ = 0;  // where the start line begins
  size_t line_begin_ = 0;  // start of the line being scanned
  size_t fields_ = 0;
  bool in_leading_empty_lines_ = true;
  bool seen_start_line_ = false;
  bool line_has_colon_ = false;
  Result failed_ = Result::kIncomplete;
  const char* reason_ = "";
};

}  // namespace spacegate
