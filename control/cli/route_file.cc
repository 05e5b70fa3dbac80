#include "route_file.h"

#include <vector>

#include "route/route.h"
#include "route/route_json.h"

namespace spacegate {

std::string RouteFile::locate(const std::string& list_field) const {
  std::string field = routes_path + list_field;
  return path + ":" + std::to_string(document.lineOf(field)) + ": " + field;
}

bool loadRouteFile(const std::string& path, RouteFile& file, std::string& error) {
  file.path = path;
  if (!loadYamlFile(path, file.document, error)) return false;
  const nlohmann::json& root = file.document.root;
  if (root.is_array()) {
    file.routes = root;
    file.routes_path = "";
  } else if (root.is_object() && root.contains("routes")) {
    for (const auto& [key, value] : root.items()) {
      if (key != "routes" && key != "version") {
        error = path + ":" + std::to_string(file.document.lineOf(key)) + ": " + key +
                ": unknown field (expected routes and, optionally, version)";
        return false;
      }
    }
    file.routes = root["routes"];
    file.routes_path = "routes";
    if (root.contains("version")) {
      const nlohmann::json& version = root["version"];
      if (!version.is_number_integer() ||
          (version.is_number_unsigned() ? version.get<uint64_t>() == 0
                                        : version.get<int64_t>() <= 0)) {
        error = path + ":" + std::to_string(file.document.lineOf("version")) +
                ": version: must be a whole number above 0";
        return false;
      }
      file.has_version = true;
      file.version = root["version"].get<uint64_t>();
    }
  } else {
    error = path + ":1: expected a list of routes, or an object with \"routes\"";
    return false;
  }
  std::vector<Route> routes;
  ValidationError validation;
  // Validate with the list's own path so errors name the file's fields.
  std::string list_path = file.routes_path.empty() ? "" : file.routes_path;
  if (!parseRouteList(file.routes, list_path, routes, validation)) {
    error = path + ":" + std::to_string(file.document.lineOf(validation.field)) + ": " +
            validation.field + ": " + validation.message;
    return false;
  }
  return true;
}

}  // namespace spacegate
