// Fuzz target: a devcontainer.json from a repository, into
// stripJsonComments() and parseDevcontainer(). The comment stripper must
// keep the input's length and newlines, change bytes only to spaces, and
// find nothing left to strip in its own output. A refusal must give a line
// inside the file (0 only for a file too large or with no JSON in it), a
// line for every field error, and a reason; its text must serialise as JSON
// for the setup log. An accepted file must hold only values the agent can
// apply (ports 1..65535 on the machine, valid variable and user names, no
// NUL, commands of the documented shapes, the documented limits) and read
// back the same from its own JSON form.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "runner/agent/devcontainer.h"
#include "split_reader.h"

namespace {

using spacegate::DevcontainerConfig;
using spacegate::DevcontainerError;
using spacegate::LifecycleCommand;

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

bool isBlank(std::string_view json) {
  return json.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

void checkStripped(std::string_view text) {
  std::string json;
  DevcontainerError error;
  int lines = 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  if (!spacegate::stripJsonComments(text, json, error)) {
    FUZZ_CHECK(error.line >= 1 && error.line <= lines, "a strip error outside the file");
    FUZZ_CHECK(error.field.empty() && !error.message.empty(), "a strip error without a reason");
    return;
  }
  FUZZ_CHECK(json.size() == text.size(), "stripping changed the length");
  for (size_t i = 0; i < text.size(); ++i) {
    FUZZ_CHECK(json[i] == text[i] || json[i] == ' ', "stripping wrote something but a space");
    FUZZ_CHECK((text[i] == '\n') == (json[i] == '\n'), "stripping moved a newline");
  }
  std::string again;
  FUZZ_CHECK(spacegate::stripJsonComments(json, again, error), "stripped text does not strip");
  FUZZ_CHECK(again == json, "stripped text strips further");
}

void checkRefusal(std::string_view text, const DevcontainerError& error) {
  int lines = 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  FUZZ_CHECK(!error.message.empty(), "a refusal without a reason");
  FUZZ_CHECK(error.line >= 0 && error.line <= lines, "an error line outside the file");
  if (error.line == 0) {
    FUZZ_CHECK(error.field.empty(), "a field error without a line");
    std::string_view body = text.starts_with(kUtf8Bom) ? text.substr(kUtf8Bom.size()) : text;
    std::string json;
    DevcontainerError strip_error;
    bool blank = spacegate::stripJsonComments(body, json, strip_error) && isBlank(json);
    FUZZ_CHECK(text.size() > spacegate::kMaxDevcontainerSize || blank,
               "an error without a line in a file that has JSON in it");
  }
  // The setup log writes it as JSON; strict UTF-8 handling throws on bad bytes.
  try {
    nlohmann::json log = {{"error", error.text()}, {"field", error.field}};
    (void)log.dump();
  } catch (const nlohmann::json::exception&) {
    FUZZ_CHECK(false, "an error text that is not UTF-8");
  }
}

bool hasNul(const std::string& text) {
  return text.find('\0') != std::string::npos;
}

bool isEnvName(const std::string& name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

void checkCommand(const LifecycleCommand& command) {
  FUZZ_CHECK(command.steps.size() <= 64, "more lifecycle steps than the limit");
  FUZZ_CHECK(command.parallel || command.steps.size() <= 1, "several steps, not in parallel");
  for (const LifecycleCommand::Step& step : command.steps) {
    FUZZ_CHECK(command.parallel == !step.name.empty(), "a step's name does not match its form");
    FUZZ_CHECK(step.shell_line.empty() != step.argv.empty(), "a step with no command or two");
    FUZZ_CHECK(!hasNul(step.shell_line) && !hasNul(step.name), "a NUL in a shell command");
    if (!step.argv.empty()) FUZZ_CHECK(!step.argv[0].empty(), "an empty program");
    for (const std::string& arg : step.argv) FUZZ_CHECK(!hasNul(arg), "a NUL in an argument");
  }
}

void checkConfig(const DevcontainerConfig& config) {
  FUZZ_CHECK(!hasNul(config.name) && !hasNul(config.image), "a NUL in name or image");
  FUZZ_CHECK(config.container_env.size() <= 1024, "more containerEnv than the limit");
  for (const auto& [name, value] : config.container_env) {
    FUZZ_CHECK(isEnvName(name), "an invalid environment variable name");
    FUZZ_CHECK(!hasNul(value), "a NUL in an environment value");
  }
  const std::string& user = config.remote_user;
  FUZZ_CHECK(user.size() <= 32 && !hasNul(user), "an invalid remote user");
  if (!user.empty()) FUZZ_CHECK(user[0] != '-' && (user[0] < '0' || user[0] > '9'), "user name");
  FUZZ_CHECK(config.forward_ports.size() <= 256, "more forwardPorts than the limit");
  for (const spacegate::ForwardPort& port : config.forward_ports) {
    FUZZ_CHECK(port.port >= 1 && port.port <= 65535, "a port out of range");
    FUZZ_CHECK(port.host.empty() || port.host == "localhost" || port.host == "127.0.0.1" ||
                   port.host == "0.0.0.0",
               "a port on another host");
  }
  checkCommand(config.post_create_command);
  checkCommand(config.post_start_command);
  FUZZ_CHECK(std::is_sorted(config.ignored_fields.begin(), config.ignored_fields.end()),
             "ignored_fields out of order");
}

nlohmann::json commandToJson(const LifecycleCommand& command) {
  auto stepJson = [](const LifecycleCommand::Step& step) {
    return step.usesShell() ? nlohmann::json(step.shell_line) : nlohmann::json(step.argv);
  };
  if (!command.parallel) return stepJson(command.steps.front());
  nlohmann::json object = nlohmann::json::object();
  for (const LifecycleCommand::Step& step : command.steps) object[step.name] = stepJson(step);
  return object;
}

// The config as a devcontainer.json, in the shapes the parser documents.
std::string configToJson(const DevcontainerConfig& config) {
  nlohmann::json json = {{"name", config.name},
                         {"image", config.image},
                         {"containerEnv", config.container_env},
                         {"forwardPorts", nlohmann::json::array()}};
  if (!config.remote_user.empty()) json["remoteUser"] = config.remote_user;
  for (const spacegate::ForwardPort& port : config.forward_ports) {
    if (port.host.empty()) {
      json["forwardPorts"].push_back(port.port);
    } else {
      json["forwardPorts"].push_back(port.host + ":" + std::to_string(port.port));
    }
  }
  if (!config.post_create_command.empty()) {
    json["postCreateCommand"] = commandToJson(config.post_create_command);
  }
  if (!config.post_start_command.empty()) {
    json["postStartCommand"] = commandToJson(config.post_start_command);
  }
  for (const std::string& field : config.ignored_fields) json[field] = nullptr;
  return json.dump(2);
}

bool sameCommand(const LifecycleCommand& a, const LifecycleCommand& b) {
  if (a.parallel != b.parallel || a.steps.size() != b.steps.size()) return false;
  for (size_t i = 0; i < a.steps.size(); ++i) {
    const LifecycleCommand::Step& x = a.steps[i];
    const LifecycleCommand::Step& y = b.steps[i];
    if (x.name != y.name || x.shell_line != y.shell_line || x.argv != y.argv) return false;
  }
  return true;
}

void checkRoundTrip(const DevcontainerConfig& config) {
  std::string json = configToJson(config);
  DevcontainerConfig again;
  DevcontainerError error;
  bool ok = spacegate::parseDevcontainer(json, again, error);
  if (!ok) std::fprintf(stderr, "re-parsing %s\nrefused: %s\n", json.c_str(), error.text().c_str());
  FUZZ_CHECK(ok, "an accepted config does not re-parse from its JSON form");
  bool same = again.name == config.name && again.image == config.image &&
              again.container_env == config.container_env &&
              again.remote_user == config.remote_user &&
              again.forward_ports.size() == config.forward_ports.size() &&
              sameCommand(again.post_create_command, config.post_create_command) &&
              sameCommand(again.post_start_command, config.post_start_command) &&
              again.ignored_fields == config.ignored_fields;
  for (size_t i = 0; same && i < config.forward_ports.size(); ++i) {
    same = again.forward_ports[i].host == config.forward_ports[i].host &&
           again.forward_ports[i].port == config.forward_ports[i].port;
  }
  FUZZ_CHECK(same, "an accepted config reads back differently from its JSON form");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  checkStripped(text);
  DevcontainerConfig config;
  DevcontainerError error;
  if (!spacegate::parseDevcontainer(text, config, error)) {
    checkRefusal(text, error);
    return 0;
  }
  checkConfig(config);
  checkRoundTrip(config);
  return 0;
}
