// Loads a YAML file (JSON is valid YAML) into nlohmann::json, the project's
// one JSON layer, remembering the line of every value so that validation
// errors, which name a field path ("routes[2].upstream"), can point at the
// line in the file.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>

namespace spacegate {

struct YamlDocument {
  nlohmann::json root;
  std::map<std::string, int> lines;  // field path -> 1-based line

  // The line of `path`, or of its nearest parent that has one; 0 if none.
  int lineOf(const std::string& path) const;
};

// Returns false with "file:line: reason" in `error` when the file cannot be
// read or is not valid YAML. Plain scalars become numbers, booleans or null
// where YAML 1.2's core schema says so; quoted scalars stay strings.
bool loadYamlFile(const std::string& file, YamlDocument& document, std::string& error);
bool loadYamlText(const std::string& text, YamlDocument& document, std::string& error);

}  // namespace spacegate
