#include "delegate/delegate_config.h"

#include <fstream>
#include <regex>
#include <set>

#include "config/config_fields.h"
#include "config/yaml_document.h"

namespace spacegate {

namespace {

constexpr size_t kMinTokenLength = 16;

bool validName(const std::string& name) {
  static const std::regex pattern("[A-Za-z0-9._-]{1,64}");
  return std::regex_match(name, pattern);
}

std::string joinPath(const std::string& path, const char* key) {
  return path.empty() ? key : path + "." + key;
}

bool readUrl(const nlohmann::json& object, const char* key, const std::string& path,
             std::string& out, ValidationError& error) {
  if (!readString(object, key, path, out, error)) return false;
  if (out.empty()) return true;
  std::string reason;
  if (!checkServiceUrl(out, reason)) return rejectField(error, joinPath(path, key), reason);
  if (out.back() == '/') out.pop_back();
  return true;
}

bool readMinimumDuration(const nlohmann::json& object, const char* key, const std::string& path,
                         uint64_t& out, uint64_t minimum_ms, ValidationError& error) {
  if (!readDuration(object, key, path, out, error)) return false;
  if (out < minimum_ms) {
    return rejectField(error, joinPath(path, key),
                       "must be at least " + std::to_string(minimum_ms) + "ms");
  }
  return true;
}

bool parseRunner(const nlohmann::json& object, ServiceEndpoint& runner, ValidationError& error) {
  if (!object.is_object()) {
    return rejectField(error, "runner", "must be a mapping with `url` or `socket`");
  }
  if (!checkKeys(object, "runner", {"url", "socket", "token_file"}, error) ||
      !readUrl(object, "url", "runner", runner.url, error) ||
      !readString(object, "socket", "runner", runner.socket, error) ||
      !readString(object, "token_file", "runner", runner.token_file, error)) {
    return false;
  }
  if (runner.url.empty() == runner.socket.empty()) {
    return rejectField(error, "runner", "give exactly one of `url` and `socket`");
  }
  return true;
}

bool parseGateway(const nlohmann::json& entry, const std::string& path, GatewayConfig& gateway,
                  ValidationError& error) {
  if (!checkKeys(entry, path,
                 {"name", "control_socket", "control_url", "control_token_file", "data_url"},
                 error) ||
      !readString(entry, "name", path, gateway.name, error) ||
      !readString(entry, "control_socket", path, gateway.control.socket, error) ||
      !readUrl(entry, "control_url", path, gateway.control.url, error) ||
      !readString(entry, "control_token_file", path, gateway.control.token_file, error) ||
      !readUrl(entry, "data_url", path, gateway.data_url, error)) {
    return false;
  }
  if (gateway.name.empty()) return rejectField(error, path + ".name", "required");
  if (!validName(gateway.name)) {
    return rejectField(error, path + ".name", "must be 1 to 64 of [A-Za-z0-9._-]");
  }
  if (gateway.control.socket.empty() == gateway.control.url.empty()) {
    return rejectField(error, path + ".control_socket",
                       "give exactly one of `control_socket` and `control_url`");
  }
  if (!gateway.control.url.empty() && gateway.control.token_file.empty()) {
    return rejectField(error, path + ".control_token_file",
                       "required with control_url (the gateway's TCP control API needs a token)");
  }
  if (gateway.data_url.empty()) {
    return rejectField(error, path + ".data_url",
                       "required: where the delegate reaches the gateway's traffic port "
                       "(agent calls go through it)");
  }
  return true;
}

bool parseLimits(const nlohmann::json& object, DelegateLimits& limits, ValidationError& error) {
  const std::string path = "limits";
  return checkKeys(object, path,
                   {"max_concurrent_tasks", "call_timeout", "agent_call_timeout",
                    "machine_ready_timeout", "gitspace_setup_timeout", "machine_stop_timeout",
                    "machine_delete_timeout", "shutdown_grace"},
                   error) &&
         readCount(object, "max_concurrent_tasks", path, limits.max_concurrent_tasks, 1, 256,
                   error) &&
         readMinimumDuration(object, "call_timeout", path, limits.call_timeout_ms, 100, error) &&
         readMinimumDuration(object, "agent_call_timeout", path, limits.agent_call_timeout_ms, 100,
                             error) &&
         readMinimumDuration(object, "machine_ready_timeout", path, limits.machine_ready_timeout_ms,
                             1000, error) &&
         readMinimumDuration(object, "gitspace_setup_timeout", path,
                             limits.gitspace_setup_timeout_ms, 1000, error) &&
         readMinimumDuration(object, "machine_stop_timeout", path, limits.machine_stop_timeout_ms,
                             1000, error) &&
         readMinimumDuration(object, "machine_delete_timeout", path,
                             limits.machine_delete_timeout_ms, 1000, error) &&
         readDuration(object, "shutdown_grace", path, limits.shutdown_grace_ms, error);
}

}  // namespace

bool checkServiceUrl(const std::string& url, std::string& reason) {
  if (url.starts_with("https://")) {
    reason = "https is not supported yet: give an http:// URL on a private network";
    return false;
  }
  if (!url.starts_with("http://")) {
    reason = "must be a URL such as http://127.0.0.1:7600";
    return false;
  }
  std::string rest = url.substr(7);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty()) {
    reason = "the URL has no host";
    return false;
  }
  if (rest.find_first_of("/?#@ ") != std::string::npos) {
    reason = "must be http://host:port only (no path, query or user)";
    return false;
  }
  return true;
}

bool parseDelegateConfig(const nlohmann::json& root, DelegateConfig& config,
                         ValidationError& error) {
  if (root.is_null()) return rejectField(error, "", "the file is empty");
  if (!checkKeys(root, "",
                 {"name", "control_url", "token_file", "selectors", "state_file", "runner",
                  "gateways", "route_sync_interval", "report_interval", "limits"},
                 error) ||
      !readString(root, "name", "", config.name, error) ||
      !readUrl(root, "control_url", "", config.control_plane.url, error) ||
      !readString(root, "token_file", "", config.control_plane.token_file, error) ||
      !readString(root, "state_file", "", config.state_file, error) ||
      !readMinimumDuration(root, "route_sync_interval", "", config.route_sync_interval_ms, 1000,
                           error) ||
      !readMinimumDuration(root, "report_interval", "", config.report_interval_ms, 1000, error)) {
    return false;
  }
  if (config.name.empty()) return rejectField(error, "name", "required");
  if (!validName(config.name))
    return rejectField(error, "name", "must be 1 to 64 of [A-Za-z0-9._-]");
  if (config.control_plane.url.empty()) {
    return rejectField(error, "control_url", "required: the control plane's URL");
  }
  if (config.control_plane.token_file.empty()) {
    return rejectField(error, "token_file",
                       "required: the delegate token (the control plane writes delegate.token)");
  }
  if (config.state_file.front() != '/') {
    return rejectField(error, "state_file", "must be an absolute path");
  }
  if (auto selectors = root.find("selectors"); selectors != root.end()) {
    if (!selectors->is_array() || selectors->empty()) {
      return rejectField(error, "selectors", "must be a list of at least one name");
    }
    config.selectors.clear();
    for (size_t index = 0; index < selectors->size(); ++index) {
      const nlohmann::json& entry = (*selectors)[index];
      if (!entry.is_string() || !validName(entry.get<std::string>())) {
        return rejectField(error, "selectors[" + std::to_string(index) + "]",
                           "must be 1 to 64 of [A-Za-z0-9._-]");
      }
      config.selectors.push_back(entry.get<std::string>());
    }
  }
  auto runner = root.find("runner");
  if (runner == root.end()) {
    return rejectField(error, "runner", "required: {url: http://host:port} or {socket: PATH}");
  }
  if (!parseRunner(*runner, config.runner, error)) return false;
  auto gateways = root.find("gateways");
  if (gateways == root.end() || !gateways->is_array() || gateways->empty()) {
    return rejectField(error, "gateways", "must be a list of at least one gateway");
  }
  std::set<std::string> names;
  config.gateways.clear();
  for (size_t index = 0; index < gateways->size(); ++index) {
    std::string path = "gateways[" + std::to_string(index) + "]";
    GatewayConfig gateway;
    if (!parseGateway((*gateways)[index], path, gateway, error)) return false;
    if (!names.insert(gateway.name).second) {
      return rejectField(error, path + ".name", "another gateway has this name");
    }
    config.gateways.push_back(std::move(gateway));
  }
  if (auto limits = root.find("limits"); limits != root.end()) {
    if (!parseLimits(*limits, config.limits, error)) return false;
  }
  return true;
}

namespace {

// The token file's first line; "" with a reason when unreadable or short.
bool readTokenFile(const std::string& path, std::string& token, std::string& reason) {
  std::ifstream stream(path);
  if (!stream) {
    reason = "cannot read " + path;
    return false;
  }
  std::getline(stream, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
    token.pop_back();
  }
  if (token.size() < kMinTokenLength) {
    reason =
        path + ": the token must be at least " + std::to_string(kMinTokenLength) + " characters";
    return false;
  }
  return true;
}

bool finishLoad(const std::string& file, const YamlDocument& document, DelegateConfig& config,
                std::string& message) {
  ValidationError error;
  if (!parseDelegateConfig(document.root, config, error)) {
    message = file + ":" + std::to_string(document.lineOf(error.field)) + ": " +
              (error.field.empty() ? "" : error.field + ": ") + error.message;
    return false;
  }
  auto read = [&](ServiceEndpoint& endpoint, const std::string& field) {
    if (endpoint.token_file.empty()) return true;
    std::string reason;
    if (readTokenFile(endpoint.token_file, endpoint.token, reason)) return true;
    message = file + ":" + std::to_string(document.lineOf(field)) + ": " + field + ": " + reason;
    return false;
  };
  if (!read(config.control_plane, "token_file") || !read(config.runner, "runner.token_file")) {
    return false;
  }
  for (size_t index = 0; index < config.gateways.size(); ++index) {
    if (!read(config.gateways[index].control,
              "gateways[" + std::to_string(index) + "].control_token_file")) {
      return false;
    }
  }
  return true;
}

}  // namespace

bool loadDelegateConfigFile(const std::string& file, DelegateConfig& config, std::string& message) {
  YamlDocument document;
  if (!loadYamlFile(file, document, message)) return false;
  return finishLoad(file, document, config, message);
}

bool loadDelegateConfigText(const std::string& text, DelegateConfig& config, std::string& message) {
  YamlDocument document;
  if (!loadYamlText(text, document, message)) return false;
  return finishLoad("<text>", document, config, message);
}

}  // namespace spacegate
