#include "runner/agent/agent_config.h"

#include <nlohmann/json.hpp>

#include "auth/base64url.h"

namespace spacegate {

KeyRing AgentConfig::keyRing() const {
  KeyRing ring;
  for (const auto& [kid, public_key] : keys) ring.add(kid, public_key);
  return ring;
}

std::string agentConfigToJson(const AgentConfig& config) {
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& [kid, public_key] : config.keys) {
    keys.push_back({{"kid", kid}, {"public_key", base64UrlEncode(public_key)}});
  }
  nlohmann::json document = {{"machine_id", config.machine_id},
                             {"listen", config.listen},
                             {"runner_secret", config.runner_secret},
                             {"gitspace_id", config.gitspace_id},
                             {"keys", keys},
                             {"disk", config.disk},
                             {"ide_host", config.ide_host},
                             {"ide_port", config.ide_port},
                             {"ssh_port", config.ssh_port},
                             {"code_server", config.code_server},
                             {"sandboxed", config.sandboxed}};
  return document.dump(2) + "\n";
}

bool parseAgentConfig(const std::string& text, AgentConfig& config, std::string& error) {
  nlohmann::json document = nlohmann::json::parse(text, nullptr, false);
  if (!document.is_object()) {
    error = "not a JSON object";
    return false;
  }
  auto text_field = [&](const char* name, std::string& out, bool required) {
    if (!document.contains(name)) {
      if (required) error = std::string(name) + ": required";
      return !required;
    }
    if (!document[name].is_string()) {
      error = std::string(name) + ": must be a string";
      return false;
    }
    out = document[name].get<std::string>();
    if (required && out.empty()) {
      error = std::string(name) + ": must not be empty";
      return false;
    }
    return true;
  };
  auto port_field = [&](const char* name, int& out) {
    if (!document.contains(name)) return true;
    if (!document[name].is_number_integer() || document[name].get<int64_t>() < 1 ||
        document[name].get<int64_t>() > 65535) {
      error = std::string(name) + ": must be a port from 1 to 65535";
      return false;
    }
    out = document[name].get<int>();
    return true;
  };
  if (!text_field("machine_id", config.machine_id, true) ||
      !text_field("listen", config.listen, true) ||
      !text_field("runner_secret", config.runner_secret, true) ||
      !text_field("gitspace_id", config.gitspace_id, false) ||
      !text_field("disk", config.disk, true) || !text_field("ide_host", config.ide_host, false) ||
      !text_field("code_server", config.code_server, false) ||
      !port_field("ide_port", config.ide_port) || !port_field("ssh_port", config.ssh_port)) {
    return false;
  }
  if (document.contains("sandboxed")) {
    if (!document["sandboxed"].is_boolean()) {
      error = "sandboxed: must be true or false";
      return false;
    }
    config.sandboxed = document["sandboxed"].get<bool>();
  }
  config.keys.clear();
  if (document.contains("keys")) {
    if (!document["keys"].is_array()) {
      error = "keys: must be an array";
      return false;
    }
    size_t index = 0;
    for (const auto& entry : document["keys"]) {
      std::string field = "keys[" + std::to_string(index++) + "]";
      std::string public_key;
      if (!entry.is_object() || !entry.contains("kid") || !entry["kid"].is_string() ||
          !entry.contains("public_key") || !entry["public_key"].is_string() ||
          !base64UrlDecode(entry["public_key"].get<std::string>(), public_key) ||
          public_key.size() != 32) {
        error = field + ": expected {\"kid\": ..., \"public_key\": 32 bytes of base64url}";
        return false;
      }
      config.keys.emplace_back(entry["kid"].get<std::string>(), std::move(public_key));
    }
  }
  return true;
}

}  // namespace spacegate
