// JsonWriter: an append-only builder for one JSON object, used on hot paths
// (access log, structured error log) where building a DOM per line would cost
// an allocation per field. Parsing and everything else uses nlohmann::json.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace spacegate {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) { out_.push_back('{'); }

  JsonWriter& field(std::string_view key, std::string_view value);
  JsonWriter& field(std::string_view key, const char* value) {
    return field(key, std::string_view(value));
  }
  JsonWriter& field(std::string_view key, int64_t value);
  JsonWriter& field(std::string_view key, uint64_t value);
  JsonWriter& field(std::string_view key, int value) { return field(key, int64_t{value}); }
  JsonWriter& field(std::string_view key, unsigned value) { return field(key, uint64_t{value}); }
  JsonWriter& field(std::string_view key, double value);
  JsonWriter& field(std::string_view key, bool value);
  // Closes the object; the writer must not be used afterwards.
  void finish() { out_.push_back('}'); }

  // Appends `value` as a quoted JSON string, escaping what JSON requires and
  // any byte that is not printable ASCII (client-controlled bytes in logs).
  static void appendString(std::string& out, std::string_view value);

 private:
  void key(std::string_view name);
  std::string& out_;
  bool first_ = true;
};

}  // namespace spacegate
