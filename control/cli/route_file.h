// Route files for `spacegatectl routes apply -f FILE`: YAML or JSON holding
// either a list of route objects, {"routes": [...]}, or a whole table
// {"version": N, "routes": [...]}. Validation uses the gateway's own route
// validator, so the CLI refuses locally, with the file and line, exactly
// what the gateway would refuse.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "config/yaml_document.h"

namespace spacegate {

struct RouteFile {
  std::string path;
  YamlDocument document;
  nlohmann::json routes;  // the list of route objects
  bool has_version = false;
  uint64_t version = 0;
  std::string routes_path;  // field path of the list in the file ("" or "routes")

  // "FILE:LINE: field" for a field path of the list ("[3].upstream").
  std::string locate(const std::string& list_field) const;
};

// Loads and validates. On failure `error` is "FILE:LINE: field: reason".
bool loadRouteFile(const std::string& path, RouteFile& file, std::string& error);

}  // namespace spacegate
