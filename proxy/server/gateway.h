// Gateway: the whole `spacegate` process. Starts the workers, owns the route
// table publisher and the access-log sink, and handles signals on the main
// thread: SIGTERM/SIGINT drain and exit, SIGHUP re-reads the routes of the
// config file (a bad file changes nothing).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/gateway_config.h"
#include "log/access_log.h"
#include "route/route_publisher.h"

namespace spacegate {

class Worker;

class Gateway {
 public:
  // `config_file` may be empty (flags only); it is re-read on SIGHUP.
  Gateway(GatewayConfig config, std::string config_file);
  ~Gateway();

  // Runs until a shutdown signal and every worker has finished. Returns the
  // process exit code.
  int run();

 private:
  void reloadRoutes();

  GatewayConfig config_;
  std::string config_file_;
  AccessLogSink access_log_;
  RouteTablePublisher routes_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

// Raises the soft open-files limit to the hard one; returns the new limit.
uint64_t raiseDescriptorLimit();

}  // namespace spacegate
