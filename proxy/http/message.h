// The internal request/response representation that the protocol codecs
// produce and everything after them (routing, header rewriting, logging)
// consumes. Names and values are views into the read buffer the head arrived
// in; `storage` keeps that buffer alive for as long as the head is used.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "net/buffer.h"

namespace spacegate {

struct HeaderField {
  std::string_view name;
  std::string_view value;  // without leading or trailing whitespace
  // The whole field line as received, "Name: value\r\n", for writing it on
  // unchanged without copying.
  std::string_view raw_line;
};

using HeaderList = std::vector<HeaderField>;

// Methods a client may repeat with the same effect (RFC 9110 9.2.2): the
// gateway retries them once on a pooled connection the upstream had closed.
bool isIdempotentMethod(uint8_t method);

// The text with ASCII letters in lower case (HTTP/2 field names).
std::string toLowerAscii(std::string_view text);

// Case-insensitive ASCII comparison for header names and tokens.
bool equalsIgnoringCase(std::string_view a, std::string_view b);
// The text without leading and trailing spaces and tabs (HTTP's OWS).
std::string_view trim(std::string_view text);
// Finds the first field with this (lower-case) name, or nullptr.
const HeaderField* findHeader(const HeaderList& headers, std::string_view name);
// Calls `visit(token)` for each comma-separated token of a list-valued field.
template <typename Visit>
void forEachListToken(std::string_view value, Visit visit) {
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view token = value.substr(start, comma - start);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
      token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (!token.empty()) visit(token);
    start = comma + 1;
  }
}

// How the body of a message is delimited on the wire.
enum class BodyFraming : uint8_t {
  kNone,           // no body (or a body the method/status rules out)
  kContentLength,  // exactly `content_length` bytes
  kChunked,        // chunked transfer coding
  kUntilClose,     // response read until the upstream closes (HTTP/1.0 style)
};

struct MessageHead {
  uint8_t version_major = 1;
  uint8_t version_minor = 1;
  HeaderList headers;
  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;
  bool keep_alive = true;           // the sender allows another message on this connection
  bool upgrade = false;             // Upgrade requested (request) or accepted with 101 (response)
  std::string_view raw_first_line;  // request or status line, with its CRLF
  SlabRef storage;                  // keeps the bytes the views point into alive
};

struct RequestHead : MessageHead {
  uint8_t method = 0;  // llhttp_method_t
  std::string_view method_name;
  std::string_view target;  // request-target as received
  std::string_view path;    // target's path and query (origin-form)
  std::string_view host;    // Host header, or absolute-form authority
  bool expect_continue = false;
  bool is_connect = false;
};

struct ResponseHead : MessageHead {
  uint16_t status = 0;
  std::string_view reason;
};

}  // namespace spacegate
