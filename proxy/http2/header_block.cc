#include "http2/header_block.h"

#include <algorithm>
#include <cstring>

namespace spacegate {

void HeaderBlock::add(std::string_view name, std::string_view value) {
  Span span;
  span.name_offset = text_.size();
  span.name_size = name.size();
  text_.append(name).append(": ");
  span.value_offset = text_.size();
  span.value_size = value.size();
  text_.append(value).append("\r\n");
  spans_.push_back(span);
}

void HeaderBlock::remove(std::string_view name) {
  std::erase_if(spans_, [&](const Span& span) {
    return std::string_view(text_).substr(span.name_offset, span.name_size) == name;
  });
}

bool HeaderBlock::contains(std::string_view name) const {
  return std::any_of(spans_.begin(), spans_.end(), [&](const Span& span) {
    return std::string_view(text_).substr(span.name_offset, span.name_size) == name;
  });
}

void HeaderBlock::layOut(char* destination, HeaderList& headers) const {
  std::memcpy(destination, text_.data(), text_.size());
  headers.reserve(headers.size() + spans_.size());
  for (const Span& span : spans_) {
    HeaderField field;
    field.name = std::string_view(destination + span.name_offset, span.name_size);
    field.value = trim(std::string_view(destination + span.value_offset, span.value_size));
    field.raw_line = std::string_view(destination + span.name_offset,
                                      span.value_offset + span.value_size + 2 - span.name_offset);
    headers.push_back(field);
  }
}

void HeaderBlock::clear() {
  text_ = std::string();
  spans_ = std::vector<Span>();
}

nghttp2_nv http2Field(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace spacegate
