#include "config/config_fields.h"

#include "config/gateway_config.h"

namespace spacegate {

bool checkKeys(const nlohmann::json& object, const std::string& path,
               const std::set<std::string>& known, ValidationError& error) {
  if (!object.is_object()) return rejectField(error, path, "must be a mapping");
  for (const auto& [key, value] : object.items()) {
    if (!known.count(key)) {
      return rejectField(error, path.empty() ? key : path + "." + key, "unknown key");
    }
  }
  return true;
}

bool readDuration(const nlohmann::json& object, const char* key, const std::string& path,
                  uint64_t& out, ValidationError& error) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  std::string field = path.empty() ? key : path + "." + key;
  if (!it->is_string() || !parseDuration(it->get<std::string>(), out)) {
    return rejectField(error, field,
                       "must be a duration such as \"500ms\", \"10s\", \"5m\", \"1h\"");
  }
  return true;
}

bool readString(const nlohmann::json& object, const char* key, const std::string& path,
                std::string& out, ValidationError& error) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  std::string field = path.empty() ? key : path + "." + key;
  if (!it->is_string() || it->get<std::string>().empty()) {
    return rejectField(error, field, "must be a non-empty string");
  }
  out = it->get<std::string>();
  return true;
}

bool readBool(const nlohmann::json& object, const char* key, const std::string& path, bool& out,
              ValidationError& error) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_boolean()) {
    return rejectField(error, path.empty() ? key : path + "." + key, "must be true or false");
  }
  out = it->get<bool>();
  return true;
}

}  // namespace spacegate
