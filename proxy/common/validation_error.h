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

// Records why `field` is refused; returns false so a validator can
// `return rejectField(error, "routes[0].id", "...")`.
inline bool rejectField(ValidationError& error, std::string field, std::string message) {
  error.field = std::move(field);
  error.message = std::move(message);
  return false;
}

}  // namespace spacegate
