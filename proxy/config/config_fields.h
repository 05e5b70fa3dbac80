// Readers for the fields of YAML/JSON config files (the gateway's, the
// runner's): each checks one field's type and range and, when it is wrong,
// fills a ValidationError naming the field path ("pools[1].min") so the
// loader can point at the file and line.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <string>

#include "common/validation_error.h"

namespace spacegate {

// Refuses a key of `object` that is not in `known` (and a non-mapping).
bool checkKeys(const nlohmann::json& object, const std::string& path,
               const std::set<std::string>& known, ValidationError& error);

// A duration such as "500ms", "10s", "5m", "1h", when present.
bool readDuration(const nlohmann::json& object, const char* key, const std::string& path,
                  uint64_t& out, ValidationError& error);

// A non-empty string, when present.
bool readString(const nlohmann::json& object, const char* key, const std::string& path,
                std::string& out, ValidationError& error);

// true or false, when present.
bool readBool(const nlohmann::json& object, const char* key, const std::string& path, bool& out,
              ValidationError& error);

// A whole number from minimum to maximum, when present.
template <typename Integer>
bool readCount(const nlohmann::json& object, const char* key, const std::string& path, Integer& out,
               uint64_t minimum, uint64_t maximum, ValidationError& error) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  std::string field = path.empty() ? key : path + "." + key;
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      static_cast<uint64_t>(it->get<int64_t>()) < minimum ||
      static_cast<uint64_t>(it->get<int64_t>()) > maximum) {
    return rejectField(error, field,
                       "must be a whole number from " + std::to_string(minimum) + " to " +
                           std::to_string(maximum));
  }
  out = static_cast<Integer>(it->get<int64_t>());
  return true;
}

}  // namespace spacegate
