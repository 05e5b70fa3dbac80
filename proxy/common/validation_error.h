// A rejected input: which field (a path like "routes[3].upstream") and why.
// The control API turns it into a 400 JSON body; the config loader into
// "file:line: field: reason".
#pragma once

#include <string>

namespace spacegate {

struct ValidationError {
  std::string field;
  std::string message;
};

}  // namespace spacegate
