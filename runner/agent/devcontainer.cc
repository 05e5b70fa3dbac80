// devcontainer.json in four steps: stripJsonComments() turns "JSON with
// comments" into plain JSON of the same length, so an offset means the same
// line in both; a bracket scan refuses deep nesting before nlohmann::json
// builds a value that its copy, comparison and dump() would recurse into;
// nlohmann::json parses; and the supported fields are read off the
// resulting object. Raw NUL bytes are refused first: nlohmann::json takes
// one for the end of the input. nlohmann::json keeps no positions, so the
// line of an error is found only when there is one to report: a syntax
// error by parsing again through SAX (the one interface that reports the
// position of every error, a number overflow included), a field error by
// walking the stripped text to the offending value (locateField).
#include "runner/agent/devcontainer.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include <nlohmann/json.hpp>

namespace spacegate {

namespace {

constexpr int kMaxNestingDepth = 64;
constexpr size_t kMaxForwardPorts = 256;
constexpr size_t kMaxContainerEnvEntries = 1024;
constexpr size_t kMaxLifecycleSteps = 64;
constexpr size_t kMaxRemoteUserLength = 32;
// Error texts quote object keys and nlohmann's last token, both taken from
// the file; a 1 MiB key must not become a 1 MiB log line.
constexpr size_t kMaxQuotedLength = 80;
constexpr size_t kMaxSyntaxMessageLength = 200;

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

int lineAt(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + offset, '\n'));
}

bool isJsonWhitespace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t skipWhitespace(std::string_view json, size_t i) {
  while (i < json.size() && isJsonWhitespace(json[i])) ++i;
  return i;
}

// The offset just past the string whose opening quote is at `quote`, or npos
// if it does not end on its line. An escaped character never ends it.
size_t stringEnd(std::string_view text, size_t quote) {
  for (size_t i = quote + 1; i < text.size() && text[i] != '\n'; ++i) {
    if (text[i] == '"') return i + 1;
    // Skip the escaped character, unless it is the newline that ends the line.
    if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] != '\n') ++i;
  }
  return std::string_view::npos;
}

bool fileError(DevcontainerError& error, int line, std::string message) {
  error = DevcontainerError{line, "", std::move(message)};
  return false;
}

// Bytes from the file in an error text: control characters become '?' and
// the text is cut at kMaxQuotedLength without splitting a UTF-8 sequence
// (nlohmann::json has already checked the encoding of keys), so the error
// still serialises as JSON.
std::string quotable(std::string_view text) {
  bool cut = false;
  if (text.size() > kMaxQuotedLength) {
    size_t end = kMaxQuotedLength;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
    text = text.substr(0, end);
    cut = true;
  }
  std::string out;
  for (char c : text) {
    unsigned char byte = static_cast<unsigned char>(c);
    out += (byte < 0x20 || byte == 0x7f) ? '?' : c;
  }
  if (cut) out += "...";
  return out;
}

// nlohmann's what(), e.g. "[json.exception.parse_error.101] parse error at
// line 3, column 7: syntax error while parsing object - unexpected '}';
// expected string literal", without the exception name and position (the
// error has its own line). Its last token may hold any bytes of the file,
// so only printable ASCII is kept.
std::string describeSyntaxError(std::string_view what) {
  if (what.starts_with("[json.exception.")) {
    size_t end = what.find("] ");
    if (end != std::string_view::npos) what.remove_prefix(end + 2);
  }
  if (what.starts_with("parse error")) {
    size_t colon = what.find(": ");
    if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
  }
  std::string out;
  for (char c : what.substr(0, kMaxSyntaxMessageLength)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (what.size() > kMaxSyntaxMessageLength) out += "...";
  return out.empty() ? "not valid JSON" : out;
}

// Accepts every value and keeps the position and reason of the first error.
class SyntaxErrorFinder : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::json::exception& ex) override {
    found = true;
    this->position = position;
    message = describeSyntaxError(ex.what());
    return false;
  }

  bool found = false;
  size_t position = 0;  // 1-based offset of the last byte read: the error is on its line
  std::string message;
};

bool syntaxError(std::string_view json, DevcontainerError& error) {
  SyntaxErrorFinder finder;
  nlohmann::json::sax_parse(json, &finder);
  if (!finder.found) return fileError(error, 0, "not valid JSON");
  size_t offset = finder.position > 0 ? finder.position - 1 : 0;
  return fileError(error, lineAt(json, offset), std::move(finder.message));
}

// Refuses nesting deeper than kMaxNestingDepth, and an input with no JSON
// in it. `json` is stripJsonComments() output, so every string ends.
bool checkNesting(std::string_view json, DevcontainerError& error) {
  int depth = 0;
  bool any_value = false;
  for (size_t i = 0; i < json.size();) {
    char c = json[i];
    if (c == '"') {
      i = std::min(stringEnd(json, i), json.size());
      any_value = true;
      continue;
    }
    if (c == '[' || c == '{') {
      if (++depth > kMaxNestingDepth) {
        return fileError(error, lineAt(json, i),
                         "nesting deeper than " + std::to_string(kMaxNestingDepth) + " levels");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    if (!isJsonWhitespace(c)) any_value = true;
    ++i;
  }
  if (!any_value) return fileError(error, 0, "the file is empty");
  return true;
}

// Where a field error points: the path from the top-level object down to
// the offending value.
struct PathSegment {
  std::string key;  // an object member, unless is_index
  size_t index = 0;
  bool is_index = false;
};

class FieldPath {
 public:
  FieldPath() = default;

  FieldPath member(std::string key) const {
    FieldPath path = *this;
    path.segments_.push_back(PathSegment{std::move(key), 0, false});
    return path;
  }
  FieldPath element(size_t index) const {
    FieldPath path = *this;
    path.segments_.push_back(PathSegment{"", index, true});
    return path;
  }

  // "forwardPorts[2]", "postStartCommand.db"; an empty key shows as "".
  std::string text() const {
    std::string out;
    for (const PathSegment& segment : segments_) {
      if (segment.is_index) {
        out += "[" + std::to_string(segment.index) + "]";
        continue;
      }
      if (!out.empty()) out += '.';
      out += segment.key.empty() ? "\"\"" : quotable(segment.key);
    }
    return out;
  }

  const std::vector<PathSegment>& segments() const { return segments_; }

 private:
  std::vector<PathSegment> segments_;
};

// The offset just past the value starting at `i`, in text nlohmann::json
// accepted (so brackets balance and strings end).
size_t skipValue(std::string_view json, size_t i) {
  if (i >= json.size()) return i;
  if (json[i] == '"') return std::min(stringEnd(json, i), json.size());
  if (json[i] == '{' || json[i] == '[') {
    int depth = 0;
    while (i < json.size()) {
      char c = json[i];
      if (c == '"') {
        i = std::min(stringEnd(json, i), json.size());
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return i;
  }
  while (i < json.size() && !isJsonWhitespace(json[i]) && json[i] != ',' && json[i] != ']' &&
         json[i] != '}') {
    ++i;
  }
  return i;
}

// A key token (quotes included) as nlohmann::json decodes it.
std::string decodeKey(std::string_view token) {
  if (token.find('\\') == std::string_view::npos) {
    return std::string(token.substr(1, token.size() - 2));
  }
  try {
    return nlohmann::json::parse(token).get<std::string>();
  } catch (const nlohmann::json::exception&) {
    return {};
  }
}

// The offset of the value at `path` in text nlohmann::json accepted (of its
// key instead, for the last segment, if `at_key`); where the path cannot be
// followed, the offset of the deepest part found. Of duplicate keys the last
// counts, as in nlohmann::json.
size_t locateField(std::string_view json, const FieldPath& path, bool at_key) {
  size_t at = skipWhitespace(json, 0);
  const std::vector<PathSegment>& segments = path.segments();
  for (size_t s = 0; s < segments.size(); ++s) {
    const PathSegment& segment = segments[s];
    if (at >= json.size()) break;
    size_t found = std::string_view::npos;
    size_t found_key = std::string_view::npos;
    if (json[at] == '{' && !segment.is_index) {
      size_t i = skipWhitespace(json, at + 1);
      while (i < json.size() && json[i] == '"') {
        size_t key_end = stringEnd(json, i);
        if (key_end == std::string_view::npos) break;
        bool match = decodeKey(json.substr(i, key_end - i)) == segment.key;
        size_t key_start = i;
        i = skipWhitespace(json, key_end);
        if (i >= json.size() || json[i] != ':') break;
        i = skipWhitespace(json, i + 1);
        if (match) {
          found = i;
          found_key = key_start;
        }
        i = skipWhitespace(json, skipValue(json, i));
        if (i >= json.size() || json[i] != ',') break;
        i = skipWhitespace(json, i + 1);
      }
    } else if (json[at] == '[' && segment.is_index) {
      size_t i = skipWhitespace(json, at + 1);
      for (size_t index = 0; i < json.size() && json[i] != ']'; ++index) {
        if (index == segment.index) {
          found = i;
          break;
        }
        i = skipWhitespace(json, skipValue(json, i));
        if (i >= json.size() || json[i] != ',') break;
        i = skipWhitespace(json, i + 1);
      }
    }
    if (found == std::string_view::npos) break;
    if (at_key && s + 1 == segments.size() && found_key != std::string_view::npos) return found_key;
    at = found;
  }
  return at;
}

bool isEnvName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!letter && (i == 0 || c < '0' || c > '9')) return false;
  }
  return true;
}

// [a-z_][a-z0-9_-]*[$]?, the names useradd accepts by default (a trailing
// '$' is a Samba machine account).
bool isUserName(std::string_view name) {
  if (name.empty() || name.size() > kMaxRemoteUserLength) return false;
  if (name.back() == '$') name.remove_suffix(1);
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && ((c >= '0' && c <= '9') || c == '-'));
    if (!ok) return false;
  }
  return true;
}

// Digits only, at least one, as a port number; 0 if not one or out of range.
int parsePortDigits(std::string_view digits) {
  if (digits.empty()) return 0;
  int port = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    port = port * 10 + (c - '0');
    if (port > 65535) return 0;
  }
  return port;
}

bool isMachineHost(std::string_view host) {
  return host == "localhost" || host == "127.0.0.1" || host == "0.0.0.0";
}

// Reads the supported fields off the parsed top-level object; an error gets
// the line of its value in `json`, the text that was parsed.
class DevcontainerReader {
 public:
  DevcontainerReader(std::string_view json, DevcontainerError& error)
      : json_(json), error_(error) {}

  bool read(const nlohmann::json& root, DevcontainerConfig& config) {
    // The object's keys come sorted (std::map), so ignored_fields are too.
    for (const auto& [key, value] : root.items()) {
      FieldPath path = FieldPath().member(key);
      bool ok = true;
      if (key == "name") {
        ok = readText(value, path, config.name);
      } else if (key == "image") {
        ok = readText(value, path, config.image);
      } else if (key == "containerEnv") {
        ok = readContainerEnv(value, path, config.container_env);
      } else if (key == "remoteUser") {
        ok = readRemoteUser(value, path, config.remote_user);
      } else if (key == "forwardPorts") {
        ok = readForwardPorts(value, path, config.forward_ports);
      } else if (key == "postCreateCommand") {
        ok = readLifecycleCommand(value, path, config.post_create_command);
      } else if (key == "postStartCommand") {
        ok = readLifecycleCommand(value, path, config.post_start_command);
      } else {
        config.ignored_fields.push_back(key);
      }
      if (!ok) return false;
    }
    return true;
  }

 private:
  bool fail(const FieldPath& path, std::string message, bool at_key = false) {
    error_.line = lineAt(json_, locateField(json_, path, at_key));
    error_.field = path.text();
    error_.message = std::move(message);
    return false;
  }

  // Every string the agent applies: a NUL would cut an environment value,
  // an argument or a user name short where the C library reads it.
  bool readText(const nlohmann::json& value, const FieldPath& path, std::string& out) {
    if (!value.is_string()) return fail(path, "must be a string");
    const std::string& text = value.get_ref<const std::string&>();
    if (text.find('\0') != std::string::npos) return fail(path, "must not contain a NUL character");
    out = text;
    return true;
  }

  bool readContainerEnv(const nlohmann::json& value, const FieldPath& path,
                        std::map<std::string, std::string>& env) {
    if (!value.is_object()) return fail(path, "must be an object of names to strings");
    if (value.size() > kMaxContainerEnvEntries) {
      return fail(path, "has more than " + std::to_string(kMaxContainerEnvEntries) + " entries");
    }
    for (const auto& [name, entry] : value.items()) {
      FieldPath entry_path = path.member(name);
      if (!isEnvName(name)) {
        return fail(entry_path, "is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    true);
      }
      if (!readText(entry, entry_path, env[name])) return false;
    }
    return true;
  }

  bool readRemoteUser(const nlohmann::json& value, const FieldPath& path, std::string& user) {
    if (!readText(value, path, user)) return false;
    if (!isUserName(user)) {
      return fail(path, "must be a user name ([a-z_][a-z0-9_-]*, at most " +
                            std::to_string(kMaxRemoteUserLength) + " characters)");
    }
    return true;
  }

  bool readForwardPorts(const nlohmann::json& value, const FieldPath& path,
                        std::vector<ForwardPort>& ports) {
    if (!value.is_array()) return fail(path, "must be an array");
    if (value.size() > kMaxForwardPorts) {
      return fail(path, "has more than " + std::to_string(kMaxForwardPorts) + " entries");
    }
    for (size_t i = 0; i < value.size(); ++i) {
      ForwardPort port;
      if (!readForwardPort(value[i], path.element(i), port)) return false;
      ports.push_back(std::move(port));
    }
    return true;
  }

  bool readForwardPort(const nlohmann::json& value, const FieldPath& path, ForwardPort& port) {
    static const char* kRange = "must be a port number from 1 to 65535";
    if (value.is_number_unsigned()) {
      uint64_t number = value.get<uint64_t>();
      if (number < 1 || number > 65535) return fail(path, kRange);
      port.port = static_cast<int>(number);
      return true;
    }
    if (value.is_number()) return fail(path, kRange);  // negative or fractional
    if (!value.is_string()) return fail(path, "must be a port number or a \"host:port\" string");
    std::string_view text = value.get_ref<const std::string&>();
    size_t colon = text.rfind(':');
    std::string_view digits = colon == std::string_view::npos ? text : text.substr(colon + 1);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos) {
      return fail(path, "must be a port number or a \"host:port\" string");
    }
    port.port = parsePortDigits(digits);
    if (port.port == 0) return fail(path, kRange);
    if (colon != std::string_view::npos) {
      std::string_view host = text.substr(0, colon);
      if (!isMachineHost(host)) {
        return fail(path,
                    "the host must be localhost, 127.0.0.1 or 0.0.0.0 (only the machine's own "
                    "ports are forwarded)");
      }
      port.host = std::string(host);
    }
    return true;
  }

  // The array form: the program and its arguments, without a shell.
  bool readArgv(const nlohmann::json& value, const FieldPath& path,
                std::vector<std::string>& argv) {
    if (value.empty()) return fail(path, "must name a program (an empty array runs nothing)");
    for (size_t i = 0; i < value.size(); ++i) {
      std::string arg;
      if (!readText(value[i], path.element(i), arg)) return false;
      if (i == 0 && arg.empty()) return fail(path.element(0), "the program must not be empty");
      argv.push_back(std::move(arg));
    }
    return true;
  }

  // A string or an array: one step, or none for "".
  bool readStep(const nlohmann::json& value, const FieldPath& path, std::string name,
                std::vector<LifecycleCommand::Step>& steps) {
    LifecycleCommand::Step step;
    step.name = std::move(name);
    if (value.is_array()) {
      if (!readArgv(value, path, step.argv)) return false;
    } else {
      if (!readText(value, path, step.shell_line)) return false;
      if (step.shell_line.empty()) return true;
    }
    steps.push_back(std::move(step));
    return true;
  }

  bool readLifecycleCommand(const nlohmann::json& value, const FieldPath& path,
                            LifecycleCommand& command) {
    static const char* kShapes =
        "must be a string (a shell command), an array (a program and its arguments) or an object "
        "of named commands";
    if (value.is_string() || value.is_array()) {
      return readStep(value, path, "", command.steps);
    }
    if (!value.is_object()) return fail(path, kShapes);
    if (value.size() > kMaxLifecycleSteps) {
      return fail(path, "has more than " + std::to_string(kMaxLifecycleSteps) + " commands");
    }
    for (const auto& [name, step] : value.items()) {
      FieldPath step_path = path.member(name);
      if (name.empty()) return fail(step_path, "a command's name must not be empty", true);
      if (name.find('\0') != std::string::npos) {
        return fail(step_path, "a command's name must not contain a NUL character", true);
      }
      if (!step.is_string() && !step.is_array()) {
        return fail(step_path,
                    "must be a string (a shell command) or an array (a program and "
                    "its arguments)");
      }
      if (!readStep(step, step_path, name, command.steps)) return false;
    }
    command.parallel = !command.steps.empty();
    return true;
  }

  std::string_view json_;
  DevcontainerError& error_;
};

}  // namespace

std::string DevcontainerError::text() const {
  std::string out;
  if (line > 0) out = "line " + std::to_string(line);
  for (const std::string* part : {&field, &message}) {
    if (part->empty()) continue;
    if (!out.empty()) out += ": ";
    out += *part;
  }
  return out;
}

bool stripJsonComments(std::string_view text, std::string& json, DevcontainerError& error) {
  json.assign(text);
  // A comma with only whitespace and comments after it so far, which a
  // closing bracket makes trailing. Only a comma after a value counts: in
  // "[,]" or "[1,,]" it stays, for the parser to refuse.
  size_t pending_comma = std::string::npos;
  char last_token = 0;  // the last character outside comments, strings and whitespace
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '"') {
      size_t end = stringEnd(text, i);
      if (end == std::string_view::npos) {
        return fileError(error, lineAt(text, i), "unterminated string (it must end on its line)");
      }
      i = end;
      last_token = '"';
      pending_comma = std::string::npos;
      continue;
    }
    if (c == '/' && i + 1 < text.size() && text[i + 1] == '/') {
      // To the end of the line; a lone '\r' ends it too, as in VS Code.
      while (i < text.size() && text[i] != '\n' && text[i] != '\r') json[i++] = ' ';
      continue;
    }
    if (c == '/' && i + 1 < text.size() && text[i + 1] == '*') {
      size_t close = text.find("*/", i + 2);
      if (close == std::string_view::npos) {
        return fileError(error, lineAt(text, i), "unterminated block comment");
      }
      for (; i < close + 2; ++i) {
        if (json[i] != '\n' && json[i] != '\r') json[i] = ' ';
      }
      continue;
    }
    if (isJsonWhitespace(c)) {
      ++i;
      continue;
    }
    if ((c == ']' || c == '}') && pending_comma != std::string::npos) json[pending_comma] = ' ';
    bool after_value = last_token != 0 && last_token != '[' && last_token != '{' &&
                       last_token != ',' && last_token != ':';
    pending_comma = (c == ',' && after_value) ? i : std::string::npos;
    last_token = c;
    ++i;
  }
  return true;
}

bool parseDevcontainer(std::string_view text, DevcontainerConfig& config,
                       DevcontainerError& error) {
  if (text.size() > kMaxDevcontainerSize) {
    return fileError(error, 0,
                     "the file is larger than " + std::to_string(kMaxDevcontainerSize) + " bytes");
  }
  // Three bytes on line 1: skipping them moves no line.
  if (text.starts_with(kUtf8Bom)) text.remove_prefix(kUtf8Bom.size());
  // nlohmann::json takes a NUL byte for the end of the input and would
  // ignore whatever follows a complete object; in a string it is refused as
  // a control character anyway.
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return fileError(error, lineAt(text, nul), "contains a NUL byte: not a text file");
  }
  std::string json;
  if (!stripJsonComments(text, json, error)) return false;
  if (!checkNesting(json, error)) return false;
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception&) {
    return syntaxError(json, error);
  }
  if (!root.is_object()) {
    return fileError(error, lineAt(json, skipWhitespace(json, 0)),
                     "the top level must be an object");
  }
  DevcontainerConfig parsed;
  if (!DevcontainerReader(json, error).read(root, parsed)) return false;
  config = std::move(parsed);
  return true;
}

}  // namespace spacegate
