// HeaderBlock: the regular fields of an HTTP/2 header block laid out as the
// HTTP/1.1 codec lays out a head ("name: value\r\n" lines), so that a
// request or response that arrived over HTTP/2 becomes the same
// RequestHead/ResponseHead, with views into one buffer, that routing,
// header rewriting and the HTTP/1.1 writers take. Both directions use it:
// the server's streams (client requests) and h2c upstream streams
// (responses).
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.h"

namespace spacegate {

class HeaderBlock {
 public:
  void add(std::string_view name, std::string_view value);
  // Drops every field called `name` (lower case, as HTTP/2 sends names).
  void remove(std::string_view name);
  bool contains(std::string_view name) const;
  // Bytes of the lines, and how many fields.
  size_t size() const { return text_.size(); }
  size_t count() const { return spans_.size(); }
  // Copies the lines to `destination` (size() bytes) and appends a
  // HeaderField per line, pointing there, to `headers`.
  void layOut(char* destination, HeaderList& headers) const;
  // Forgets the fields and frees their memory.
  void clear();

 private:
  struct Span {
    size_t name_offset;
    size_t name_size;
    size_t value_offset;
    size_t value_size;
  };
  std::string text_;
  std::vector<Span> spans_;
};

// An nghttp2 name/value pair over existing bytes (nghttp2 copies them).
nghttp2_nv http2Field(std::string_view name, std::string_view value);

}  // namespace spacegate
