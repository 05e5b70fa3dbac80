#include "common/json_writer.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace spacegate {

void JsonWriter::appendString(std::string& out, std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : value) {
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          // Non-ASCII bytes are escaped one by one: log lines stay valid JSON
          // whatever a client sends.
          out.append("\\u00");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void JsonWriter::key(std::string_view name) {
  if (!first_) out_.push_back(',');
  first_ = false;
  appendString(out_, name);
  out_.push_back(':');
}

JsonWriter& JsonWriter::field(std::string_view name, std::string_view value) {
  key(name);
  appendString(out_, value);
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view name, int64_t value) {
  key(name);
  char text[24];
  auto result = std::to_chars(text, text + sizeof text, value);
  out_.append(text, result.ptr);
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view name, uint64_t value) {
  key(name);
  char text[24];
  auto result = std::to_chars(text, text + sizeof text, value);
  out_.append(text, result.ptr);
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view name, double value) {
  key(name);
  if (!std::isfinite(value)) {
    out_.append("null");
    return *this;
  }
  char text[32];
  int length = std::snprintf(text, sizeof text, "%.6f", value);
  out_.append(text, static_cast<size_t>(length));
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view name, bool value) {
  key(name);
  out_.append(value ? "true" : "false");
  return *this;
}

}  // namespace spacegate
