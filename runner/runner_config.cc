#include "runner/runner_config.h"

#include <arpa/inet.h>

#include <fstream>
#include <regex>
#include <set>

#include "config/config_fields.h"
#include "config/yaml_document.h"

namespace spacegate {

namespace {

bool validPoolName(const std::string& name) {
  static const std::regex pattern("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?");
  return std::regex_match(name, pattern);
}

bool parseProcessSpec(const nlohmann::json& object, const std::string& path,
                      ProcessDriverSpec& spec, ValidationError& error) {
  if (!checkKeys(object, path,
                 {"sandbox", "subnet", "bridge", "port_base", "memory", "cpus", "max_processes",
                  "max_open_files"},
                 error)) {
    return false;
  }
  if (auto it = object.find("sandbox"); it != object.end()) {
    std::string mode = it->is_string() ? it->get<std::string>() : "";
    if (mode == "auto") {
      spec.sandbox = SandboxMode::kAuto;
    } else if (mode == "namespaces") {
      spec.sandbox = SandboxMode::kNamespaces;
    } else if (mode == "processes") {
      spec.sandbox = SandboxMode::kProcesses;
    } else {
      return rejectField(error, path + ".sandbox", "must be auto, namespaces or processes");
    }
  }
  if (!readString(object, "subnet", path, spec.subnet_text, error)) return false;
  std::string reason;
  if (!parseIpv4Subnet(spec.subnet_text, spec.subnet_address, spec.subnet_prefix, reason)) {
    return rejectField(error, path + ".subnet", reason);
  }
  if (!readString(object, "bridge", path, spec.bridge, error)) return false;
  if (!spec.bridge.empty() && !std::regex_match(spec.bridge, std::regex("[A-Za-z0-9_-]{1,15}"))) {
    return rejectField(error, path + ".bridge", "must be 1 to 15 of [A-Za-z0-9_-]");
  }
  if (!readCount(object, "port_base", path, spec.port_base, 1024, 65000, error) ||
      !readCount(object, "memory", path, spec.memory_mib, 0, 1 << 24, error) ||
      !readCount(object, "max_processes", path, spec.max_processes, 0, 1 << 22, error) ||
      !readCount(object, "max_open_files", path, spec.max_open_files, 0, 1 << 20, error)) {
    return false;
  }
  if (auto it = object.find("cpus"); it != object.end()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 1024) {
      return rejectField(error, path + ".cpus", "must be a number from 0 (no limit) to 1024");
    }
    spec.cpus = it->get<double>();
  }
  return true;
}

}  // namespace

bool parseIpv4Subnet(const std::string& text, uint32_t& address, int& prefix, std::string& error) {
  size_t slash = text.find('/');
  in_addr parsed{};
  if (slash == std::string::npos ||
      inet_pton(AF_INET, text.substr(0, slash).c_str(), &parsed) != 1) {
    error = "must be an IPv4 network such as 10.213.0.0/24";
    return false;
  }
  std::string bits = text.substr(slash + 1);
  if (bits.empty() || bits.size() > 2 ||
      bits.find_first_not_of("0123456789") != std::string::npos) {
    error = "must be an IPv4 network such as 10.213.0.0/24";
    return false;
  }
  prefix = std::stoi(bits);
  if (prefix < 16 || prefix > 29) {
    error = "the prefix must be from /16 to /29";
    return false;
  }
  address = ntohl(parsed.s_addr);
  uint32_t host_mask = (1u << (32 - prefix)) - 1;
  if (address & host_mask) {
    error = "host bits must be zero (the network address, e.g. " +
            formatIpv4(address & ~host_mask) + "/" + bits + ")";
    return false;
  }
  return true;
}

std::string formatIpv4(uint32_t address) {
  return std::to_string(address >> 24) + "." + std::to_string((address >> 16) & 255) + "." +
         std::to_string((address >> 8) & 255) + "." + std::to_string(address & 255);
}

bool parseRunnerConfig(const nlohmann::json& root, RunnerConfig& config, ValidationError& error) {
  if (root.is_null()) return rejectField(error, "", "the file is empty");
  if (!checkKeys(root, "",
                 {"listen", "socket", "state_dir", "token_file", "control_plane_keys",
                  "agent_binary", "code_server", "health_interval", "provision_timeout", "pools"},
                 error) ||
      !readString(root, "listen", "", config.listen, error) ||
      !readString(root, "socket", "", config.socket, error) ||
      !readString(root, "state_dir", "", config.state_dir, error) ||
      !readString(root, "token_file", "", config.token_file, error) ||
      !readString(root, "control_plane_keys", "", config.control_plane_keys, error) ||
      !readString(root, "agent_binary", "", config.agent_binary, error) ||
      !readString(root, "code_server", "", config.code_server, error) ||
      !readDuration(root, "health_interval", "", config.health_interval_ms, error) ||
      !readDuration(root, "provision_timeout", "", config.provision_timeout_ms, error)) {
    return false;
  }
  if (config.listen.empty() && config.socket.empty()) {
    return rejectField(error, "listen", "give `listen` (host:port) or `socket` (a unix socket)");
  }
  if (config.state_dir.front() != '/') {
    return rejectField(error, "state_dir", "must be an absolute path");
  }
  if (config.health_interval_ms < 100) {
    return rejectField(error, "health_interval", "must be at least 100ms");
  }
  auto pools = root.find("pools");
  if (pools == root.end() || !pools->is_array() || pools->empty()) {
    return rejectField(error, "pools", "must be a list of at least one pool");
  }
  std::set<std::string> names;
  std::set<std::string> bridges;
  config.pools.clear();
  for (size_t index = 0; index < pools->size(); ++index) {
    const nlohmann::json& entry = (*pools)[index];
    std::string path = "pools[" + std::to_string(index) + "]";
    PoolConfig pool;
    if (!checkKeys(entry, path, {"name", "driver", "min", "max", "process"}, error) ||
        !readString(entry, "name", path, pool.name, error) ||
        !readString(entry, "driver", path, pool.driver, error) ||
        !readCount(entry, "min", path, pool.min, 0, 4096, error) ||
        !readCount(entry, "max", path, pool.max, 1, 4096, error)) {
      return false;
    }
    if (pool.name.empty()) return rejectField(error, path + ".name", "required");
    if (!validPoolName(pool.name)) {
      return rejectField(
          error, path + ".name",
          "must be 1 to 12 of [a-z0-9-], starting and ending with a letter or digit");
    }
    if (!names.insert(pool.name).second) {
      return rejectField(error, path + ".name", "another pool has this name");
    }
    if (pool.driver != "process") {
      return rejectField(error, path + ".driver", "unknown driver (this runner has: process)");
    }
    if (pool.min > pool.max) return rejectField(error, path + ".min", "must not exceed max");
    if (auto spec = entry.find("process"); spec != entry.end()) {
      if (!parseProcessSpec(*spec, path + ".process", pool.process, error)) return false;
    } else {
      std::string reason;
      parseIpv4Subnet(pool.process.subnet_text, pool.process.subnet_address,
                      pool.process.subnet_prefix, reason);
    }
    if (pool.process.bridge.empty()) pool.process.bridge = "sg-" + pool.name;
    if (!bridges.insert(pool.process.bridge).second) {
      return rejectField(error, path + ".process.bridge", "another pool uses this bridge");
    }
    if (pool.max > pool.process.subnetCapacity()) {
      return rejectField(error, path + ".max",
                         "the subnet " + pool.process.subnet_text + " holds only " +
                             std::to_string(pool.process.subnetCapacity()) + " machines");
    }
    if (pool.process.port_base + pool.max * kLoopbackPortsPerMachine > 65535) {
      return rejectField(error, path + ".process.port_base",
                         "too high: each machine needs " +
                             std::to_string(kLoopbackPortsPerMachine) + " ports above it");
    }
    config.pools.push_back(std::move(pool));
  }
  // Pools must not share addresses or ports.
  for (size_t a = 0; a < config.pools.size(); ++a) {
    for (size_t b = a + 1; b < config.pools.size(); ++b) {
      const ProcessDriverSpec& first = config.pools[a].process;
      const ProcessDriverSpec& second = config.pools[b].process;
      int shortest = std::min(first.subnet_prefix, second.subnet_prefix);
      uint32_t mask = ~((1u << (32 - shortest)) - 1);
      if ((first.subnet_address & mask) == (second.subnet_address & mask)) {
        return rejectField(error, "pools[" + std::to_string(b) + "].process.subnet",
                           "overlaps the subnet of pool " + config.pools[a].name);
      }
      int first_end = first.port_base + config.pools[a].max * kLoopbackPortsPerMachine;
      int second_end = second.port_base + config.pools[b].max * kLoopbackPortsPerMachine;
      if (first.port_base < second_end && second.port_base < first_end) {
        return rejectField(error, "pools[" + std::to_string(b) + "].process.port_base",
                           "overlaps the ports of pool " + config.pools[a].name);
      }
    }
  }
  return true;
}

namespace {

bool finishLoad(const std::string& file, const YamlDocument& document, RunnerConfig& config,
                std::string& message) {
  ValidationError error;
  if (!parseRunnerConfig(document.root, config, error)) {
    message = file + ":" + std::to_string(document.lineOf(error.field)) + ": " +
              (error.field.empty() ? "" : error.field + ": ") + error.message;
    return false;
  }
  if (!config.token_file.empty()) {
    std::ifstream stream(config.token_file);
    if (!stream) {
      message = file + ":" + std::to_string(document.lineOf("token_file")) +
                ": token_file: cannot read " + config.token_file;
      return false;
    }
    std::getline(stream, config.token);
    while (!config.token.empty() && (config.token.back() == '\r' || config.token.back() == ' ')) {
      config.token.pop_back();
    }
    if (config.token.size() < 16) {
      message = file + ":" + std::to_string(document.lineOf("token_file")) +
                ": token_file: the token must be at least 16 characters";
      return false;
    }
  }
  return true;
}

}  // namespace

bool loadRunnerConfigFile(const std::string& file, RunnerConfig& config, std::string& message) {
  YamlDocument document;
  if (!loadYamlFile(file, document, message)) return false;
  return finishLoad(file, document, config, message);
}

bool loadRunnerConfigText(const std::string& text, RunnerConfig& config, std::string& message) {
  YamlDocument document;
  if (!loadYamlText(text, document, message)) return false;
  return finishLoad("<text>", document, config, message);
}

}  // namespace spacegate
