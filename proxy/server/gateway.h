// Gateway: the whole `spacegate` process. Starts the workers, owns the route
// store (restored from the state directory's snapshot before anything is
// served), the control API server and the access-log sink, and handles
// signals on the main thread: SIGTERM/SIGINT drain and exit; SIGHUP re-reads
// the config file's routes when no control API manages them (a bad file
// changes nothing).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
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
#include "tls/tls_context_set.h"

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
  std::string tlsListing() const override;
  bool reloadTls(ValidationError& error) override;

 private:
  bool prepareRoutes(std::string& error);
  void reloadRoutes();
  // Builds the TLS contexts of `tls` and publishes them (SIGHUP, control API).
  bool applyTls(const TlsConfig& tls, ValidationError& error);

  GatewayConfig config_;
  std::string config_file_;
  AccessLogSink access_log_;
  RouteTablePublisher routes_;
  // Before the contexts: they point at the keys until the last one is gone.
  std::unique_ptr<SessionTicketKeys> ticket_keys_;
  TlsContextPublisher tls_contexts_;
  mutable std::mutex tls_mutex_;  // reloads (SIGHUP and control API) one at a time
  TlsConfig tls_config_;          // what the contexts in use were built from
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
