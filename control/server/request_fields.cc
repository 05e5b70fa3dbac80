#include "control/server/request_fields.h"

#include "config/gateway_config.h"
#include "control/server/control_plane.h"
#include "control/server/desired_routes.h"
#include "net/socket_address.h"

namespace spacegate {

namespace {

const char* ruleText(TextRule rule) {
  switch (rule) {
    case TextRule::kName:
      return "lower-case letters, digits, '.', '_' and '-', starting with a "
             "letter or digit";
    case TextRule::kLabel:
      return "letters, digits, '.', '_' and '-', starting with a letter or "
             "digit";
    case TextRule::kPoolName: return "lower-case letters, digits and '-'";
    case TextRule::kEventType: return "lower-case letters, digits and '_'";
    case TextRule::kPrintable: return "printable ASCII without spaces";
    case TextRule::kText: return "text without control characters";
  }
  return "";
}

bool lowerOrDigit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool letterOrDigit(char c) {
  return lowerOrDigit(c) || (c >= 'A' && c <= 'Z');
}

}  // namespace

bool textFollowsRule(std::string_view text, TextRule rule) {
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    auto byte = static_cast<unsigned char>(c);
    bool ok = false;
    switch (rule) {
      case TextRule::kName:
        ok = lowerOrDigit(c) || (i > 0 && (c == '.' || c == '_' || c == '-'));
        break;
      case TextRule::kLabel:
        ok = letterOrDigit(c) || (i > 0 && (c == '.' || c == '_' || c == '-'));
        break;
      case TextRule::kPoolName: ok = lowerOrDigit(c) || c == '-'; break;
      case TextRule::kEventType: ok = lowerOrDigit(c) || c == '_'; break;
      case TextRule::kPrintable: ok = byte > 0x20 && byte < 0x7f; break;
      case TextRule::kText:
        ok = byte >= 0x20 || c == '\t';
        ok = ok && byte != 0x7f;
        break;
    }
    if (!ok) return false;
  }
  return true;
}

bool checkFields(const nlohmann::json& body, std::initializer_list<std::string_view> known,
                 ApiOutcome& error) {
  if (!body.is_object()) {
    error = ApiOutcome::fail(400, "the body must be a JSON object");
    return false;
  }
  for (const auto& [key, value] : body.items()) {
    bool found = false;
    for (std::string_view name : known) found = found || key == name;
    if (!found) {
      error = ApiOutcome::fail(400, "unknown field", key);
      return false;
    }
  }
  return true;
}

bool readText(const nlohmann::json& body, const char* key, bool required, size_t min_length,
              size_t max_length, TextRule rule, std::string& out, ApiOutcome& error) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) {
    if (!required) return true;
    error = ApiOutcome::fail(400, "required", key);
    return false;
  }
  if (!it->is_string()) {
    error = ApiOutcome::fail(400, "must be a string", key);
    return false;
  }
  const std::string& text = it->get_ref<const std::string&>();
  if (text.size() < min_length || text.size() > max_length) {
    error = ApiOutcome::fail(400,
                             min_length > 0
                                 ? "must be " + std::to_string(min_length) + " to " +
                                       std::to_string(max_length) + " characters"
                                 : "must be at most " + std::to_string(max_length) + " characters",
                             key);
    return false;
  }
  if (!textFollowsRule(text, rule)) {
    error = ApiOutcome::fail(400, std::string("may hold only ") + ruleText(rule), key);
    return false;
  }
  out = text;
  return true;
}

bool readNumber(const nlohmann::json& body, const char* key, bool required, int64_t minimum,
                int64_t maximum, int64_t& out, ApiOutcome& error) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) {
    if (!required) return true;
    error = ApiOutcome::fail(400, "required", key);
    return false;
  }
  if (!it->is_number_integer() || it->get<int64_t>() < minimum || it->get<int64_t>() > maximum ||
      (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(maximum))) {
    error = ApiOutcome::fail(
        400,
        "must be a whole number from " + std::to_string(minimum) + " to " + std::to_string(maximum),
        key);
    return false;
  }
  out = it->get<int64_t>();
  return true;
}

bool readDurationSeconds(const nlohmann::json& body, const char* key, int64_t maximum_s,
                         int64_t& out, ApiOutcome& error) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return true;
  uint64_t milliseconds = 0;
  if (!it->is_string() || it->get_ref<const std::string&>().size() > 32 ||
      !parseDuration(it->get<std::string>(), milliseconds) ||
      milliseconds > static_cast<uint64_t>(maximum_s) * 1000 ||
      (milliseconds > 0 && milliseconds < 1000)) {
    error = ApiOutcome::fail(400,
                             "must be a duration such as \"30m\" or \"2h\" (\"0s\": never), "
                             "from 1s to " +
                                 std::to_string(maximum_s / 3600) + "h",
                             key);
    return false;
  }
  out = static_cast<int64_t>(milliseconds / 1000);
  return true;
}

bool validGatewayDomain(std::string_view domain) {
  if (domain.empty() || domain.size() > 200 || !isValidHostname(domain)) return false;
  // Stricter than DNS allows: the names become hosts and TLS wildcards.
  for (char c : domain) {
    if (!lowerOrDigit(c) && c != '-' && c != '.') return false;
  }
  return domain.back() != '.';
}

bool validMachineAddress(const std::string& address) {
  if (address.empty() || address.size() > 253) return false;
  SocketAddress parsed;
  std::string reason;
  return parseSocketAddress(upstreamAddress(address, 1), parsed, reason, true, false);
}

}  // namespace spacegate
