#include "server/gateway.h"

#include <sys/resource.h>
#include <uv.h>

#include <csignal>
#include <thread>

#include "common/log.h"
#include "server/worker.h"

namespace spacegate {

uint64_t raiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

Gateway::Gateway(GatewayConfig config, std::string config_file)
    : config_(std::move(config)), config_file_(std::move(config_file)) {}

Gateway::~Gateway() = default;

void Gateway::reloadRoutes() {
  if (config_file_.empty()) return;
  GatewayConfig fresh;
  std::string message;
  if (!loadGatewayConfigFile(config_file_, fresh, message)) {
    logEvent(LogLevel::kError, "config reload refused; routes unchanged")
        .with("error", message)
        .emit();
    return;
  }
  size_t count = fresh.routes.size();
  routes_.publish(std::make_shared<const RouteTable>(std::move(fresh.routes)));
  logEvent(LogLevel::kInfo, "routes reloaded").with("routes", static_cast<uint64_t>(count)).emit();
}

int Gateway::run() {
  std::string error;
  if (!access_log_.open(config_.access_log, error)) {
    logEvent(LogLevel::kError, "cannot open the access log").with("error", error).emit();
    return 1;
  }
  uint64_t descriptors = raiseDescriptorLimit();
  unsigned workers = config_.workers ? config_.workers : std::max(1u, std::thread::hardware_concurrency());
  routes_.publish(std::make_shared<const RouteTable>(config_.routes));

  for (unsigned index = 0; index < workers; ++index) {
    auto worker = std::make_unique<Worker>(index, config_, routes_, access_log_);
    if (!worker->open(error)) {
      logEvent(LogLevel::kError, "cannot start").with("error", error).emit();
      return 1;
    }
    workers_.push_back(std::move(worker));
  }
  for (auto& worker : workers_) worker->start();
  {
    auto line = logEvent(LogLevel::kInfo, "listening");
    std::string listeners;
    for (const SocketAddress& address : config_.listeners) {
      if (!listeners.empty()) listeners += ",";
      listeners += address.text();
    }
    line.with("listen", listeners)
        .with("workers", workers)
        .with("routes", static_cast<uint64_t>(config_.routes.size()))
        .with("open_files_limit", descriptors)
        .emit();
  }

  // Signals are handled on the main thread's own loop.
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_signal_t terminate, interrupt, hangup;
  struct SignalContext {
    Gateway* gateway;
    uv_signal_t* handles[3];
    bool stopping = false;
  } context{this, {&terminate, &interrupt, &hangup}};
  auto on_stop = [](uv_signal_t* handle, int signal_number) {
    auto* signal_context = static_cast<SignalContext*>(handle->data);
    if (signal_context->stopping) return;
    signal_context->stopping = true;
    logEvent(LogLevel::kInfo, "shutting down")
        .with("signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
        .emit();
    for (auto& worker : signal_context->gateway->workers_) worker->requestShutdown();
    for (uv_signal_t* signal_handle : signal_context->handles) {
      uv_close(reinterpret_cast<uv_handle_t*>(signal_handle), nullptr);
    }
  };
  for (uv_signal_t* handle : {&terminate, &interrupt, &hangup}) {
    uv_signal_init(&loop, handle);
    handle->data = &context;
  }
  uv_signal_start(&terminate, on_stop, SIGTERM);
  uv_signal_start(&interrupt, on_stop, SIGINT);
  uv_signal_start(
      &hangup,
      [](uv_signal_t* handle, int) {
        static_cast<SignalContext*>(handle->data)->gateway->reloadRoutes();
      },
      SIGHUP);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);

  for (auto& worker : workers_) worker->join();
  workers_.clear();
  logEvent(LogLevel::kInfo, "stopped").emit();
  return 0;
}

}  // namespace spacegate
