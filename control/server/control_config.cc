#include "control/server/control_config.h"

#include "common/log.h"
#include "config/config_fields.h"
#include "config/yaml_document.h"
#include "net/socket_address.h"

namespace spacegate {

namespace {

bool readPositiveDuration(const nlohmann::json& object, const char* key, const std::string& path,
                          uint64_t& out, uint64_t minimum_ms, ValidationError& error) {
  if (!readDuration(object, key, path, out, error)) return false;
  if (out < minimum_ms) {
    std::string field = path.empty() ? key : path + "." + key;
    return rejectField(error, field, "must be at least " + std::to_string(minimum_ms) + "ms");
  }
  return true;
}

bool parseLimits(const nlohmann::json& object, ControlPlaneLimits& limits, ValidationError& error) {
  const std::string path = "limits";
  return checkKeys(object, path,
                   {"max_body_size", "max_gitspaces_per_user", "max_event_streams",
                    "max_event_streams_per_user", "max_stream_backlog", "events_per_gitspace",
                    "max_task_attempts", "gateway_report_max_age", "stream_keepalive",
                    "max_polls_per_delegate"},
                   error) &&
         readCount(object, "max_body_size", path, limits.max_body_size, 4096, 64u << 20, error) &&
         readCount(object, "max_gitspaces_per_user", path, limits.max_gitspaces_per_user, 1,
                   100'000, error) &&
         readCount(object, "max_event_streams", path, limits.max_event_streams, 1, 100'000,
                   error) &&
         readCount(object, "max_event_streams_per_user", path, limits.max_event_streams_per_user, 1,
                   100'000, error) &&
         readCount(object, "max_stream_backlog", path, limits.max_stream_backlog, 64 * 1024,
                   1u << 30, error) &&
         readCount(object, "events_per_gitspace", path, limits.events_per_gitspace, 10, 10'000'000,
                   error) &&
         readCount(object, "max_task_attempts", path, limits.max_task_attempts, 1, 1000, error) &&
         readPositiveDuration(object, "gateway_report_max_age", path,
                              limits.gateway_report_max_age_ms, 1000, error) &&
         readPositiveDuration(object, "stream_keepalive", path, limits.stream_keepalive_ms, 100,
                              error) &&
         readCount(object, "max_polls_per_delegate", path, limits.max_polls_per_delegate, 1, 10'000,
                   error);
}

}  // namespace

bool parseControlConfig(const nlohmann::json& root, ControlPlaneConfig& config,
                        ValidationError& error) {
  if (root.is_null()) return true;  // an empty file: all defaults
  if (!checkKeys(root, "",
                 {"listen", "state_dir", "public_url", "token_ttl", "agent_token_ttl", "task_lease",
                  "deadlines", "default_idle_timeout", "log_level", "limits"},
                 error) ||
      !readString(root, "listen", "", config.listen, error) ||
      !readString(root, "state_dir", "", config.state_dir, error) ||
      !readString(root, "public_url", "", config.public_url, error) ||
      !readPositiveDuration(root, "token_ttl", "", config.token_ttl_ms, 60'000, error) ||
      !readPositiveDuration(root, "agent_token_ttl", "", config.agent_token_ttl_ms, 10'000,
                            error) ||
      !readPositiveDuration(root, "task_lease", "", config.task_lease_ms, 1000, error) ||
      !readPositiveDuration(root, "default_idle_timeout", "", config.default_idle_timeout_ms, 1000,
                            error) ||
      !readString(root, "log_level", "", config.log_level, error)) {
    return false;
  }
  if (auto deadlines = root.find("deadlines"); deadlines != root.end()) {
    if (!checkKeys(*deadlines, "deadlines", {"starting", "stopping", "cleaning"}, error) ||
        !readPositiveDuration(*deadlines, "starting", "deadlines", config.starting_deadline_ms,
                              1000, error) ||
        !readPositiveDuration(*deadlines, "stopping", "deadlines", config.stopping_deadline_ms,
                              1000, error) ||
        !readPositiveDuration(*deadlines, "cleaning", "deadlines", config.cleaning_deadline_ms,
                              1000, error)) {
      return false;
    }
  }
  if (auto limits = root.find("limits"); limits != root.end()) {
    if (!parseLimits(*limits, config.limits, error)) return false;
  }
  LogLevel level;
  if (!Log::parseLevel(config.log_level, level)) {
    return rejectField(error, "log_level", "must be debug, info, warning or error");
  }
  if (!config.public_url.starts_with("http://") && !config.public_url.starts_with("https://") &&
      !config.public_url.empty()) {
    return rejectField(error, "public_url", "must be an http:// or https:// URL");
  }
  std::string message;
  ControlPlaneConfig copy = config;
  if (!checkControlConfig(copy, message)) {
    size_t colon = message.find(": ");
    return rejectField(error, message.substr(0, colon), message.substr(colon + 2));
  }
  return true;
}

bool checkControlConfig(ControlPlaneConfig& config, std::string& message) {
  SocketAddress address;
  std::string reason;
  if (!parseSocketAddress(config.listen, address, reason, false, false)) {
    message = "listen: " + reason;
    return false;
  }
  if (config.state_dir.empty() || config.state_dir.front() != '/') {
    message = "state_dir: must be an absolute path";
    return false;
  }
  if (config.public_url.empty()) config.public_url = "http://" + config.listen;
  while (config.public_url.size() > 1 && config.public_url.back() == '/') {
    config.public_url.pop_back();
  }
  return true;
}

namespace {

bool finishLoad(const std::string& file, const YamlDocument& document, ControlPlaneConfig& config,
                std::string& message) {
  ValidationError error;
  if (!parseControlConfig(document.root, config, error)) {
    message = file + ":" + std::to_string(document.lineOf(error.field)) + ": " +
              (error.field.empty() ? "" : error.field + ": ") + error.message;
    return false;
  }
  return true;
}

}  // namespace

bool loadControlConfigFile(const std::string& file, ControlPlaneConfig& config,
                           std::string& message) {
  YamlDocument document;
  if (!loadYamlFile(file, document, message)) return false;
  return finishLoad(file, document, config, message);
}

bool loadControlConfigText(const std::string& text, ControlPlaneConfig& config,
                           std::string& message) {
  YamlDocument document;
  if (!loadYamlText(text, document, message)) return false;
  return finishLoad("<text>", document, config, message);
}

}  // namespace spacegate
