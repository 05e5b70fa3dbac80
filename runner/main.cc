// spacegate-runner: keeps pools of Gitspace machines and runs their
// lifecycle (see runner/pool_manager.h). Machines outlive the runner: on
// SIGTERM it stops serving and leaves them running; the next start finds
// them again through the database and the driver.
#include <CLI/CLI.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "auth/base64url.h"
#include "common/log.h"
#include "runner/drivers/process/process_driver.h"
#include "runner/pool_manager.h"
#include "runner/runner_api.h"
#include "service/service_server.h"

namespace {

using namespace spacegate;

// Control plane public keys: one key file ({"kid", "public_key"}, as
// `spacegatectl token keygen` writes) or {"keys": [...]}.
bool loadControlPlaneKeys(const std::string& path,
                          std::vector<std::pair<std::string, std::string>>& keys,
                          std::string& error) {
  std::ifstream stream(path);
  if (!stream) {
    error = path + ": cannot read";
    return false;
  }
  std::stringstream contents;
  contents << stream.rdbuf();
  nlohmann::json document = nlohmann::json::parse(contents.str(), nullptr, false);
  std::vector<nlohmann::json> entries;
  if (document.is_object() && document.contains("keys") && document["keys"].is_array()) {
    for (const auto& entry : document["keys"]) entries.push_back(entry);
  } else {
    entries.push_back(document);
  }
  for (const nlohmann::json& entry : entries) {
    std::string kid;
    std::string public_key;
    if (!parsePublicKeyJson(entry.dump(), kid, public_key, error)) {
      error = path + ": " + error;
      return false;
    }
    keys.emplace_back(kid, public_key);
  }
  return true;
}

std::string defaultAgentBinary() {
  std::error_code failure;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", failure);
  if (failure) return "spacegate-agent";
  std::filesystem::path beside = self.parent_path() / "spacegate-agent";
  if (std::filesystem::exists(beside)) return beside;
  // The build tree: runner/spacegate-runner and runner/spacegate-agent.
  return (self.parent_path() / "agent" / "spacegate-agent").string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spacegate-runner: pools of Gitspace machines and their lifecycle"};
  std::string config_file;
  std::string log_level;
  bool check_only = false;
  app.add_option("--config", config_file, "YAML (or JSON) config file")->required();
  app.add_option("--log-level", log_level, "debug, info, warning or error");
  app.add_flag("--check", check_only, "validate the configuration and exit");
  CLI11_PARSE(app, argc, argv);

  if (!log_level.empty()) {
    LogLevel level;
    if (!Log::parseLevel(log_level, level)) {
      std::fprintf(stderr, "spacegate-runner: --log-level %s: unknown level\n", log_level.c_str());
      return 2;
    }
    Log::setLevel(level);
  }
  RunnerConfig config;
  std::string message;
  if (!loadRunnerConfigFile(config_file, config, message)) {
    std::fprintf(stderr, "spacegate-runner: %s\n", message.c_str());
    return 2;
  }
  std::vector<std::pair<std::string, std::string>> keys;
  if (!config.control_plane_keys.empty() &&
      !loadControlPlaneKeys(config.control_plane_keys, keys, message)) {
    std::fprintf(stderr, "spacegate-runner: control_plane_keys: %s\n", message.c_str());
    return 2;
  }
  if (config.agent_binary.empty()) config.agent_binary = defaultAgentBinary();
  // Machines start in their own folders: every path they get is absolute.
  config.agent_binary = std::filesystem::absolute(config.agent_binary).string();
  if (!config.code_server.empty()) {
    config.code_server = std::filesystem::absolute(config.code_server).string();
  }
  if (check_only) {
    std::printf("%s: ok (%zu pools)\n", config_file.c_str(), config.pools.size());
    return 0;
  }
  if (keys.empty()) {
    logEvent(LogLevel::kWarning,
             "no control_plane_keys: agents will refuse every Gitspace call until they have keys")
        .emit();
  }

  // Signals are taken by sigwait below; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::error_code failure;
  std::filesystem::create_directories(config.state_dir, failure);
  if (failure) {
    std::fprintf(stderr, "spacegate-runner: %s: %s\n", config.state_dir.c_str(),
                 failure.message().c_str());
    return 1;
  }
  // Others may pass through (a Gitspace user reaches its disk inside), not list.
  ::chmod(config.state_dir.c_str(), 0711);
  for (std::filesystem::path folder = std::filesystem::path(config.state_dir).parent_path();
       !folder.empty() && folder != folder.root_path(); folder = folder.parent_path()) {
    struct stat info {};
    if (::stat(folder.c_str(), &info) == 0 && !(info.st_mode & S_IXOTH)) {
      logEvent(LogLevel::kWarning,
               "others may not pass through a folder above state_dir: Gitspaces whose user is "
               "not root cannot reach their disks")
          .with("folder", folder.string())
          .emit();
      break;
    }
  }
  MachineStore store;
  if (!store.open(config.state_dir + "/runner.db", message)) {
    std::fprintf(stderr, "spacegate-runner: %s\n", message.c_str());
    return 1;
  }
  std::vector<ManagedPool> pools;
  for (const PoolConfig& pool : config.pools) {
    pools.push_back(
        ManagedPool{pool, std::make_unique<ProcessDriver>(
                              pool, config.state_dir, config.agent_binary, config.code_server)});
  }
  PoolManager manager(config, std::move(pools), store, keys);
  if (!manager.reconcile(message)) {
    std::fprintf(stderr, "spacegate-runner: %s\n", message.c_str());
    return 1;
  }

  RunnerApi api(manager, config.token);
  ServiceServerConfig server_config;
  server_config.name = "runner";
  server_config.socket_path = config.socket;
  if (!config.listen.empty()) {
    std::string reason;
    if (!parseSocketAddress(config.listen, server_config.tcp_address, reason, false, false)) {
      std::fprintf(stderr, "spacegate-runner: listen %s: %s\n", config.listen.c_str(),
                   reason.c_str());
      return 2;
    }
    server_config.tcp_enabled = true;
  }
  server_config.max_body_size = 64 * 1024;
  Limits limits;
  ServiceServer server(api, server_config, limits);
  if (!server.open(message)) {
    std::fprintf(stderr, "spacegate-runner: %s\n", message.c_str());
    return 1;
  }
  manager.startThreads();
  server.start();
  logEvent(LogLevel::kInfo, "runner started")
      .with("listen", config.listen)
      .with("socket", config.socket)
      .with("state_dir", config.state_dir)
      .with("agent_binary", config.agent_binary)
      .emit();

  int received = 0;
  sigwait(&signals, &received);
  logEvent(LogLevel::kInfo, "runner stopping; machines keep running")
      .with("signal", static_cast<int64_t>(received))
      .emit();
  server.stop();
  server.join();
  manager.stopThreads();
  return 0;
}
