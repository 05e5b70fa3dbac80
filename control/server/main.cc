// spacegate-control: the control plane (docs/control-plane.md). Users,
// infra configs, Gitspaces and their lifecycle, the task queue that
// delegates long-poll, and the route table the delegates push into gateways;
// state in SQLite under state_dir.
//
//   spacegate-control --config control.yaml
//   spacegate-control --listen 127.0.0.1:7600 --state-dir DIR
//   spacegate-control --state-dir DIR export-gateway-config
#include <CLI/CLI.hpp>

#include <signal.h>
#include <sys/stat.h>

#include <cstdio>

#include "common/log.h"
#include "control/server/control_config.h"
#include "control/server/control_http_api.h"
#include "control/server/control_plane.h"
#include "control/server/control_store.h"
#include "control/server/secret_token.h"
#include "control/server/state_files.h"
#include "service/service_server.h"

namespace {

using namespace spacegate;

int fail(const std::string& message, int code) {
  std::fprintf(stderr, "spacegate-control: %s\n", message.c_str());
  return code;
}

// First start: a secret written to its 0600 file before its hash is
// committed, so a crash in between makes a new one at the next start
// instead of locking everyone out.
bool bootstrapSecret(const char* what, const std::string& path,
                     const std::function<bool(const std::string&, std::string&)>& commit,
                     std::string& error) {
  std::string token = newSecretToken();
  if (!writePrivateFile(path, token + "\n", error) || !commit(sha256Hex(token), error)) {
    return false;
  }
  logEvent(LogLevel::kInfo, std::string("first start: wrote the ") + what)
      .with("path", path)
      .emit();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"spacegate-control: the Spacegate control plane"};
  std::string config_file;
  std::string listen;
  std::string state_dir;
  std::string log_level;
  app.add_option("--config", config_file, "YAML (or JSON) config file");
  app.add_option("--listen", listen, "API address host:port (overrides the file)");
  app.add_option("--state-dir", state_dir, "state folder (overrides the file)");
  app.add_option("--log-level", log_level, "debug, info, warning or error");
  auto* export_command = app.add_subcommand(
      "export-gateway-config", "print the gateway's auth: section for this control plane's key");
  CLI11_PARSE(app, argc, argv);

  ControlPlaneConfig config;
  std::string message;
  if (!config_file.empty() && !loadControlConfigFile(config_file, config, message)) {
    return fail(message, 2);
  }
  if (!listen.empty()) config.listen = listen;
  if (!state_dir.empty()) config.state_dir = state_dir;
  if (!log_level.empty()) config.log_level = log_level;
  LogLevel level;
  if (!Log::parseLevel(config.log_level, level)) {
    return fail("--log-level " + config.log_level + ": unknown level", 2);
  }
  Log::setLevel(level);
  if (config_file.empty() && state_dir.empty()) {
    return fail("give --config FILE, or --state-dir DIR (and --listen)", 2);
  }
  if (!checkControlConfig(config, message)) return fail(message, 2);

  if (*export_command) {
    std::string yaml;
    if (!gatewayAuthSection(config.state_dir, yaml, message)) return fail(message, 2);
    std::fputs(yaml.c_str(), stdout);
    return 0;
  }

  // Everything made in state_dir (the database and its WAL too) is the
  // owner's alone.
  ::umask(077);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  if (!prepareStateDir(config.state_dir, message)) return fail(message, 1);
  StateFiles files = stateFilesIn(config.state_dir);
  SigningKey key;
  bool key_created = false;
  if (!loadOrCreateSigningKey(files, key, key_created, message)) return fail(message, 1);
  logEvent(LogLevel::kInfo,
           key_created ? "first start: wrote the signing key pair" : "signing key loaded")
      .with("path", files.signing_key)
      .with("public", files.signing_pub)
      .with("kid", key.kid)
      .emit();

  ControlStore store;
  if (!store.open(files.database, message)) return fail(message, 1);
  ControlPlane plane(config, store, key);
  if (!plane.load(message)) return fail(files.database + ": " + message, 1);
  if (!plane.hasAdmin()) {
    if (!bootstrapSecret(
            "admin token", files.admin_token,
            [&](const std::string& hash, std::string& error) {
              return plane.bootstrapAdmin(hash, error);
            },
            message)) {
      return fail(message, 1);
    }
  } else {
    logEvent(LogLevel::kInfo, "admin token (made at first start)")
        .with("path", files.admin_token)
        .emit();
  }
  if (!plane.hasDelegateToken()) {
    if (!bootstrapSecret(
            "delegate token", files.delegate_token,
            [&](const std::string& hash, std::string& error) {
              return plane.addDelegateToken(hash, error);
            },
            message)) {
      return fail(message, 1);
    }
  } else {
    logEvent(LogLevel::kInfo, "delegate token (made at first start)")
        .with("path", files.delegate_token)
        .emit();
  }

  ControlHttpApi api(plane);
  ServiceServerConfig server_config;
  server_config.name = "control";
  server_config.tcp_enabled = true;
  std::string reason;
  if (!parseSocketAddress(config.listen, server_config.tcp_address, reason, false, false)) {
    return fail("listen " + config.listen + ": " + reason, 2);
  }
  server_config.max_body_size = config.limits.max_body_size;
  // Event streams and parked polls hold connections: room for them all.
  server_config.max_connections = static_cast<int>(config.limits.max_event_streams + 1024);
  Limits limits;
  ServiceServer server(api, server_config, limits);
  if (!server.open(message)) return fail(message, 1);
  plane.setPost([&server](std::function<void()> task) { server.post(std::move(task)); });
  server.start();
  plane.startMaintenance();
  logEvent(LogLevel::kInfo, "control plane started")
      .with("listen", config.listen)
      .with("port", static_cast<int64_t>(server.tcpPort()))
      .with("public_url", config.public_url)
      .with("state_dir", config.state_dir)
      .with("database", files.database)
      .emit();

  int received = 0;
  sigwait(&signals, &received);
  logEvent(LogLevel::kInfo, "control plane stopping")
      .with("signal", static_cast<int64_t>(received))
      .emit();
  plane.stopMaintenance();
  server.stop();
  server.join();
  return 0;
}
