#include "http1/header_block_prescan.h"

#include <algorithm>
#include <cstring>

namespace spacegate {

namespace {
// Empty lines before a request line are ignored (RFC 9112 section 2.2); allow
// a few, not an unbounded stream of them.
constexpr size_t kMaxLeadingEmptyLines = 4;

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

// RFC 9110 tchar: what a field name is made of.
constexpr bool isTokenByte(unsigned char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 'A' && c <= 'Z') return true;
  if (c >= '0' && c <= '9') return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~': return true;
  }
  return false;
}

// Per-byte classes, so that the common bytes of a line are skipped in a
// tight loop and only the rare ones reach the decisions below.
struct ByteTables {
  bool token[256];       // field name bytes
  bool value[256];       // field value bytes that need no decision
  bool start_line[256];  // start line bytes that need no decision
  constexpr ByteTables() : token(), value(), start_line() {
    for (int c = 0; c < 256; ++c) {
      token[c] = isTokenByte(static_cast<unsigned char>(c));
      value[c] = !((c < 0x20 && c != '\t') || c == 0x7f);
      start_line[c] = c != 0 && c != '\r' && c != '\n';
    }
  }
};
constexpr ByteTables kTables;
}  // namespace

HeaderBlockPrescan::Result HeaderBlockPrescan::checkStartLine(const char* line, size_t length) {
  if (kind_ == Kind::kResponse) {
    // HTTP/x.y SP 3DIGIT [SP reason]
    if (length < 12 || std::memcmp(line, "HTTP/", 5) != 0 || !isDigit(line[5]) || line[6] != '.' ||
        !isDigit(line[7]) || line[8] != ' ') {
      return fail(Result::kMalformed, "malformed status line");
    }
    // llhttp takes any number of digits ("HTTP/1.1 2 0 OK" is status 2); a
    // code outside 100..599 has no class whose body rules could apply.
    if (line[9] < '1' || line[9] > '5' || !isDigit(line[10]) || !isDigit(line[11]) ||
        (length > 12 && line[12] != ' ')) {
      return fail(Result::kMalformed, "status code is not three digits from 100 to 599");
    }
    return Result::kIncomplete;
  }
  // method SP request-target SP HTTP/x.y : a line without the version is
  // HTTP/0.9, which the gateway never speaks.
  if (length < 14 || std::memcmp(line + length - 9, " HTTP/", 6) != 0 ||
      !isDigit(line[length - 3]) || line[length - 2] != '.' || !isDigit(line[length - 1])) {
    return fail(Result::kMalformed, "request line without HTTP version (HTTP/0.9)");
  }
  return Result::kIncomplete;
}

HeaderBlockPrescan::Result HeaderBlockPrescan::scan(const char* data, size_t size) {
  if (failed_ != Result::kIncomplete) return failed_;
  size_t leading_empty_lines = head_begin_ / 2;
  // Nothing past the size limit is ever looked at.
  size_t limit = std::min(size, head_begin_ + max_size_ + 1);
  while (position_ < size) {
    if (position_ > line_begin_) {
      // Fast path: the rest of a run of ordinary bytes in this line.
      const bool* ordinary = !seen_start_line_ && kind_ != Kind::kTrailers ? kTables.start_line
                             : line_has_colon_                             ? kTables.value
                                                                           : kTables.token;
      while (position_ < limit && ordinary[static_cast<unsigned char>(data[position_])]) {
        ++position_;
      }
      if (position_ - head_begin_ > max_size_) {
        return fail(Result::kTooLarge, "header block too large");
      }
      if (position_ >= size) break;
    }
    char c = data[position_];
    if (c == '\0') return fail(Result::kMalformed, "NUL byte in header block");
    if (c == '\n') return fail(Result::kMalformed, "bare LF in header block");
    if (c != '\r') {
      if (position_ == line_begin_ && (c == ' ' || c == '\t')) {
        if (seen_start_line_) return fail(Result::kMalformed, "obs-fold in header field");
        return fail(Result::kMalformed, "whitespace before start line");
      }
      if (seen_start_line_ || kind_ == Kind::kTrailers) {
        unsigned char byte = static_cast<unsigned char>(c);
        if (!line_has_colon_) {
          // Field name: tokens only, so "Bad Name:" or "Name :" never pass.
          if (c == ':') {
            if (position_ == line_begin_) return fail(Result::kMalformed, "empty header name");
            line_has_colon_ = true;
          } else if (!kTables.token[byte]) {
            return fail(Result::kMalformed, "invalid character in header name");
          }
        } else if ((byte < 0x20 && c != '\t') || byte == 0x7f) {
          return fail(Result::kMalformed, "control character in header value");
        }
      }
      in_leading_empty_lines_ = false;
      ++position_;
      if (position_ - head_begin_ > max_size_) {
        return fail(Result::kTooLarge, "header block too large");
      }
      continue;
    }
    // CR: must be followed by LF.
    if (position_ + 1 >= size) break;  // wait for the next byte
    if (data[position_ + 1] != '\n') return fail(Result::kMalformed, "bare CR in header block");
    size_t line_length = position_ - line_begin_;
    size_t next_line = position_ + 2;
    if (line_length == 0) {
      if (in_leading_empty_lines_ && !seen_start_line_ && kind_ != Kind::kTrailers) {
        if (++leading_empty_lines > kMaxLeadingEmptyLines) {
          return fail(Result::kMalformed, "too many empty lines before request");
        }
        head_begin_ = line_begin_ = position_ = next_line;
        continue;
      }
      position_ = next_line;
      if (position_ - head_begin_ > max_size_) {
        return fail(Result::kTooLarge, "header block too large");
      }
      return Result::kComplete;
    }
    if (!seen_start_line_ && kind_ != Kind::kTrailers) {
      seen_start_line_ = true;
      if (Result result = checkStartLine(data + line_begin_, line_length);
          result != Result::kIncomplete) {
        return result;
      }
    } else {
      if (!line_has_colon_) return fail(Result::kMalformed, "header line without ':'");
      if (++fields_ > max_fields_) return fail(Result::kTooManyFields, "too many header fields");
    }
    line_has_colon_ = false;
    position_ = line_begin_ = next_line;
    if (position_ - head_begin_ > max_size_) {
      return fail(Result::kTooLarge, "header block too large");
    }
  }
  return Result::kIncomplete;
}

}  // namespace spacegate
