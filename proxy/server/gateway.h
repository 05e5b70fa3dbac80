// Gateway: the whole `spacegate` process. Starts the workers, owns the route
// store (restored from the state directory's snapshot before anything is
// served), the control API server and the access-log sink, and handles
// signals on the main thread: SIGTERM/SIGINT drain and exit; SIGHUP re-reads
// the config file's routes when no control API manages them (a bad file
// changes nothing).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/gateway_config.h"
#include "control_api/control_api.h"
#include "control_api/control_server.h"
#include "control_api/gateway_control.h"
#include "control_api/key_ring_store.h"
#include "control_api/route_store.h"
#include "log/access_log.h"
#include "route/route_publisher.h"

namespace spacegate {

class Worker;

class Gateway : public GatewayControl {
 public:
  // `config_file` may be empty (flags only); it is re-read on SIGHUP.
  Gateway(GatewayConfig config, std::string config_file);
  ~Gateway() override;

  // Runs until a shutdown signal and every worker has finished. Returns the
  // process exit code.
  int run();

  // GatewayControl (called from the control API's thread).
  std::vector<WorkerCountersSnapshot> workerCounters() const override;
  void drain() override;
  bool draining() const override { return draining_.load(); }

 private:
  bool prepareRoutes(std::string& error);
  void reloadRoutes();

  GatewayConfig config_;
  std::string config_file_;
  AccessLogSink access_log_;
  RouteTablePublisher routes_;
  KeyRingPublisher keys_;
  std::unique_ptr<RouteStore> route_store_;
  std::unique_ptr<KeyRingStore> key_store_;
  std::unique_ptr<ControlApi> control_api_;
  std::unique_ptr<ControlServer> control_server_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> draining_{false};
};

// Raises the soft open-files limit to the hard one; returns the new limit.
uint64_t raiseDescriptorLimit();

}  // namespace spacegate
