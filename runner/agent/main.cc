// spacegate-agent: runs inside every Gitspace machine. The runner starts it
// as `spacegate-agent --config <file>` (an AgentConfig); it serves the agent
// API on config.listen until SIGTERM or SIGINT, then stops the Gitspace's
// processes, saves its state and exits 0. Without namespaces it makes itself
// a child subreaper, so that whatever the Gitspace starts stays its
// descendant and is stopped with it; as PID 1 of a PID namespace it is that
// already. Exit status 2: bad command line or config ("file: field: reason").
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/log.h"
#include "config/limits.h"
#include "net/socket_address.h"
#include "runner/agent/agent_api.h"
#include "runner/agent/agent_config.h"
#include "runner/agent/gitspace_controller.h"
#include "runner/agent/setup_log.h"
#include "service/service_server.h"

namespace {

bool readConfigFile(const std::string& path, std::string& text, std::string& error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = std::strerror(errno);
    return false;
  }
  char buffer[16 * 1024];
  while (true) {
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      error = std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
    if (text.size() > (1u << 20)) {
      error = "larger than 1 MiB";
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  return true;
}

void ignoreSignal(int) {}

}  // namespace

int main(int argc, char** argv) {
  using namespace spacegate;
  CLI::App app{"spacegate-agent: sets up and serves a Gitspace inside its machine"};
  std::string config_file;
  std::string log_level = "info";
  app.add_option("--config", config_file, "the agent's config file (JSON, written by the runner)")
      ->required();
  app.add_option("--log-level", log_level, "debug, info, warning or error");
  CLI11_PARSE(app, argc, argv);

  LogLevel level;
  if (!Log::parseLevel(log_level, level)) {
    std::fprintf(stderr, "spacegate-agent: --log-level: must be debug, info, warning or error\n");
    return 2;
  }
  Log::setLevel(level);
  std::string text;
  std::string error;
  if (!readConfigFile(config_file, text, error)) {
    std::fprintf(stderr, "spacegate-agent: %s: %s\n", config_file.c_str(), error.c_str());
    return 2;
  }
  AgentConfig config;
  if (!parseAgentConfig(text, config, error)) {
    std::fprintf(stderr, "spacegate-agent: %s: %s\n", config_file.c_str(), error.c_str());
    return 2;
  }
  SocketAddress listen;
  if (!parseSocketAddress(config.listen, listen, error, false, false)) {
    std::fprintf(stderr, "spacegate-agent: %s: listen: %s\n", config_file.c_str(), error.c_str());
    return 2;
  }

  // Every thread started from here on inherits the mask: SIGTERM and SIGINT
  // reach only the sigwait() below. A handler (never run) is installed too,
  // because PID 1 of a namespace does not get signals left at SIG_DFL.
  struct sigaction action {};
  action.sa_handler = ignoreSignal;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  ::umask(022);
  // In its own UTS namespace, the machine is named after itself (shells and
  // IDEs show it).
  if (config.sandboxed && ::sethostname(config.machine_id.data(), config.machine_id.size()) != 0) {
    logEvent(LogLevel::kWarning, "cannot set the machine's host name")
        .with("error", std::strerror(errno))
        .emit();
  }
  if (!config.sandboxed && ::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    logEvent(LogLevel::kWarning,
             "not a child subreaper: processes that daemonize may outlive a stop")
        .with("error", std::strerror(errno))
        .emit();
  }

  SetupLog setup_log;
  GitspaceController controller(config, setup_log);
  if (!controller.boot(error)) {
    logEvent(LogLevel::kError, "agent cannot start").with("error", error).emit();
    return 1;
  }
  AgentApi api(controller, setup_log);
  ServiceServerConfig server_config;
  server_config.name = "agent";
  server_config.tcp_enabled = true;
  server_config.tcp_address = listen;
  server_config.max_body_size = 1u << 20;
  Limits limits;
  ServiceServer server(api, server_config, limits);
  if (!server.open(error)) {
    logEvent(LogLevel::kError, "agent cannot listen").with("error", error).emit();
    controller.shutdown();
    return 1;
  }
  server.start();
  logEvent(LogLevel::kInfo, "agent listening")
      .with("listen", config.listen)
      .with("port", server.tcpPort())
      .with("machine_id", config.machine_id)
      .with("gitspace_id", controller.gitspaceId())
      .with("sandboxed", config.sandboxed)
      .emit();

  int received = 0;
  while (::sigwait(&stop_signals, &received) != 0) {
  }
  logEvent(LogLevel::kInfo, "agent stopping").with("signal", received).emit();
  controller.shutdown();
  server.stop();
  server.join();
  logEvent(LogLevel::kInfo, "agent stopped").emit();
  return 0;
}
