// spacegate: the Spacegate gateway. A thin main over the gateway library.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include "common/log.h"
#include "config/gateway_config.h"
#include "server/gateway.h"
#include "tls/tls_context_set.h"

int main(int argc, char** argv) {
  using namespace spacegate;
  CLI::App app{"spacegate: the Spacegate gateway (HTTP/1.1 reverse proxy for Gitspaces)"};
  std::string config_file;
  std::vector<std::string> listen;
  unsigned workers = 0;
  std::string access_log;
  std::string log_level;
  bool check_only = false;
  std::string control_socket;
  std::string state_dir;
  app.add_option("--config", config_file, "YAML (or JSON) config file");
  app.add_option("--listen", listen, "address to listen on, e.g. 127.0.0.1:8080 (repeatable)");
  app.add_option("--workers", workers, "event loops (default: one per core)");
  app.add_option("--access-log", access_log, "access log: a file, \"stdout\" or \"off\"");
  app.add_option("--log-level", log_level, "debug, info, warning or error");
  app.add_option("--control-socket", control_socket, "unix socket of the control API (mode 0600)");
  app.add_option("--state-dir", state_dir, "folder for the route snapshot (routes.json)");
  app.add_flag("--check", check_only, "validate the configuration and exit");
  CLI11_PARSE(app, argc, argv);

  GatewayConfig config;
  std::string message;
  if (!config_file.empty() && !loadGatewayConfigFile(config_file, config, message)) {
    std::fprintf(stderr, "spacegate: %s\n", message.c_str());
    return 2;
  }
  // Flags override the file.
  if (!listen.empty()) {
    config.listeners.clear();
    for (const std::string& text : listen) {
      ListenerConfig listener;
      std::string reason;
      if (!parseSocketAddress(text, listener.address, reason, false, false)) {
        std::fprintf(stderr, "spacegate: --listen %s: %s\n", text.c_str(), reason.c_str());
        return 2;
      }
      config.listeners.push_back(listener);
    }
  }
  if (workers) config.workers = workers;
  if (!control_socket.empty()) {
    if (control_socket.front() != '/') {
      char cwd[4096];
      if (getcwd(cwd, sizeof cwd)) control_socket = std::string(cwd) + "/" + control_socket;
    }
    config.control.socket = control_socket;
  }
  if (!state_dir.empty()) config.state_dir = state_dir;
  if (!access_log.empty()) config.access_log = access_log;
  if (!log_level.empty()) config.log_level = log_level;
  if (config.listeners.empty()) {
    ListenerConfig listener;
    std::string reason;
    parseSocketAddress("127.0.0.1:8080", listener.address, reason, false, false);
    config.listeners.push_back(listener);
  }
  LogLevel level;
  if (!Log::parseLevel(config.log_level, level)) {
    std::fprintf(stderr, "spacegate: --log-level: must be debug, info, warning or error\n");
    return 2;
  }
  Log::setLevel(level);
  if (check_only) {
    // The certificates too: a file that is missing, not PEM, or whose key
    // does not match is found now, not at the next start.
    if (needsTlsCertificates(config)) {
      SessionTicketKeys keys(config.tls.session_ticket_rotation_ms);
      ValidationError error;
      if (!TlsContextSet::load(config.tls, &keys, error)) {
        std::fprintf(stderr, "spacegate: %s: %s: %s\n",
                     config_file.empty() ? "flags" : config_file.c_str(), error.field.c_str(),
                     error.message.c_str());
        return 2;
      }
    }
    std::printf("spacegate: configuration OK (%zu routes, %zu certificates)\n",
                config.routes.size(), config.tls.certificates.size());
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  Gateway gateway(std::move(config), config_file);
  return gateway.run();
}
