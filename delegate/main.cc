// spacegate-delegate: runs in the owner's infrastructure and only dials out.
// It registers with the control plane, long-polls for tasks and carries them
// out against the runner, the gateways and (through a gateway) the
// machines' agents (see delegate_service.h). Exit status: 2 for a bad
// config file ("file:line: field: reason"), 1 when it cannot start (the
// state file's folder), 0 after SIGTERM or SIGINT.
#include <CLI/CLI.hpp>

#include <signal.h>

#include <cstdio>
#include <cstdlib>

#include "common/log.h"
#include "delegate/api_call.h"
#include "delegate/delegate_service.h"

int main(int argc, char** argv) {
  using namespace spacegate;
  CLI::App app{"spacegate-delegate: carries out the control plane's tasks"};
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
      std::fprintf(stderr, "spacegate-delegate: --log-level %s: unknown level\n",
                   log_level.c_str());
      return 2;
    }
    Log::setLevel(level);
  }
  DelegateConfig config;
  std::string message;
  if (!loadDelegateConfigFile(config_file, config, message)) {
    std::fprintf(stderr, "spacegate-delegate: %s\n", message.c_str());
    return 2;
  }
  if (check_only) {
    std::printf("%s: ok (%zu gateways)\n", config_file.c_str(), config.gateways.size());
    return 0;
  }

  // Signals are taken by sigwait below; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::string name = config.name;
  std::string control_url = config.control_plane.url;
  size_t gateways = config.gateways.size();
  int max_tasks = config.limits.max_concurrent_tasks;
  DelegateService service(std::move(config));
  if (!service.open(message)) {
    std::fprintf(stderr, "spacegate-delegate: state_file: %s\n", message.c_str());
    return 1;
  }
  service.start();
  logEvent(LogLevel::kInfo, "delegate started")
      .with("name", name)
      .with("version", kDelegateVersion)
      .with("control_url", control_url)
      .with("gateways", static_cast<uint64_t>(gateways))
      .with("max_concurrent_tasks", static_cast<int64_t>(max_tasks))
      .emit();

  int received = 0;
  sigwait(&signals, &received);
  logEvent(LogLevel::kInfo, "delegate stopping")
      .with("signal", static_cast<int64_t>(received))
      .emit();
  bool clean = service.shutdown();
  logEvent(LogLevel::kInfo, "delegate stopped").with("threads_joined", clean).emit();
  if (!clean) {
    // A long poll (or a task past its grace) is blocked in a call that
    // cannot be interrupted; leaving now closes its connection, and a task
    // cut short is handed out again when its lease runs out.
    std::_Exit(0);
  }
  return 0;
}
