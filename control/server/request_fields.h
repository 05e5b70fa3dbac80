// Readers for the fields of API request bodies (users' and delegates'):
// each checks one field's type, length and characters and, when it is wrong,
// returns false with a 400 naming the field. Everything a client sends is
// bounded here.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace spacegate {

struct ApiOutcome;

// Character rules for names and identifiers.
enum class TextRule {
  kName,       // [a-z0-9][a-z0-9._-]*           user, infra names, selectors
  kLabel,      // [A-Za-z0-9][A-Za-z0-9._-]*     Gitspace, delegate, gateway names
  kPoolName,   // [a-z0-9-]                      runner pool
  kEventType,  // [a-z0-9_]                      event types
  kPrintable,  // printable ASCII, no spaces      repository, branch, versions
  kText,       // anything but control characters (tabs allowed)   messages
};

// Refuses keys of `body` not in `known` (and a body that is not an object).
bool checkFields(const nlohmann::json& body, std::initializer_list<std::string_view> known,
                 ApiOutcome& error);
// A string field. Absent: true (out unchanged) unless required. Empty
// strings are refused unless min_length is 0.
bool readText(const nlohmann::json& body, const char* key, bool required, size_t min_length,
              size_t max_length, TextRule rule, std::string& out, ApiOutcome& error);
// A whole number field within [minimum, maximum].
bool readNumber(const nlohmann::json& body, const char* key, bool required, int64_t minimum,
                int64_t maximum, int64_t& out, ApiOutcome& error);
// A duration ("30m", "90s", "0s") as whole seconds, at most maximum_s.
bool readDurationSeconds(const nlohmann::json& body, const char* key, int64_t maximum_s,
                         int64_t& out, ApiOutcome& error);

bool textFollowsRule(std::string_view text, TextRule rule);
// A lower-case DNS name (no trailing dot), at most 200 bytes so every
// Gitspace host under it stays a valid name.
bool validGatewayDomain(std::string_view domain);
// An IPv4 or IPv6 address or a DNS name.
bool validMachineAddress(const std::string& address);

}  // namespace spacegate
