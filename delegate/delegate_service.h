// DelegateService: the delegate's loops, each on a thread of its own.
//
//   tasks:   register (retried with back-off until the control plane
//            answers), sync routes, then long-poll for tasks while a worker
//            is free; a failed poll (the control plane gone, or no longer
//            knowing this delegate) leads back to registering, so every
//            reconnect is followed by a route sync.
//   routes:  a route sync every `route_sync_interval`.
//   report:  the gateways' health and activity every `report_interval`.
//
// SIGTERM (shutdown()): no more tasks are taken; the running ones get
// `shutdown_grace` to finish.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "delegate/control_plane_client.h"
#include "delegate/delegate_config.h"
#include "delegate/finished_task_store.h"
#include "delegate/gitspace_tasks.h"
#include "delegate/retry_backoff.h"
#include "delegate/route_sync.h"
#include "delegate/runner_client.h"
#include "delegate/task_dispatcher.h"
#include "delegate/task_reporter.h"

namespace spacegate {

class DelegateService {
 public:
  explicit DelegateService(DelegateConfig config);
  ~DelegateService();

  // Loads the state file; false with a reason.
  bool open(std::string& error);
  void start();
  // Asks every loop to stop and waits up to shutdown_grace for running
  // tasks. True when every thread has ended (none is blocked in a call).
  bool shutdown();

 private:
  void taskLoop();
  void routeLoop();
  void reportLoop();
  // One report: every gateway observed, then POST /api/v1/delegate/report.
  void reportGateways();
  bool registerUntilAnswered();

  DelegateConfig config_;
  ShutdownSignal shutdown_;
  ControlPlaneClient control_plane_;
  RunnerClient runner_;
  RouteSync routes_;
  FinishedTaskStore store_;
  LeaseKeeper keeper_;
  GitspaceTasks tasks_;
  TaskDispatcher dispatcher_;
  std::thread task_thread_;
  std::thread route_thread_;
  std::thread report_thread_;
  std::atomic<int> loops_running_{0};
  std::mutex report_mutex_;  // one report at a time; the fields below
  bool report_ok_ = true;
  std::map<std::string, bool> healthy_before_;
};

}  // namespace spacegate
