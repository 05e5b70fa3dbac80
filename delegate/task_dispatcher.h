// TaskDispatcher: runs the tasks the poll loop receives on a fixed set of
// worker threads (`max_concurrent_tasks`), so twenty Gitspaces created at
// once all progress; the poll loop asks for a task only while a worker is
// free, so the others wait, unleased, in the control plane's queue.
//
// For each task: a task this delegate already finished (FinishedTaskStore)
// gets its stored result again and nothing is repeated; a task already
// running here (handed out again) is left to the run in progress; anything
// else runs through GitspaceTasks with a TaskReporter kept alive by the
// LeaseKeeper. The result is written to the store before it is posted, and
// the routes are synced after every task (the control plane's table changes
// with results: IDE routes after a start, none after a delete).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "delegate/control_plane_client.h"
#include "delegate/delegate_config.h"
#include "delegate/finished_task_store.h"
#include "delegate/gitspace_tasks.h"
#include "delegate/retry_backoff.h"
#include "delegate/route_sync.h"
#include "delegate/task_reporter.h"

namespace spacegate {

class TaskDispatcher {
 public:
  TaskDispatcher(const ControlPlaneClient& control_plane, GitspaceTasks& tasks, RouteSync& routes,
                 FinishedTaskStore& store, LeaseKeeper& keeper, const DelegateLimits& limits);
  ~TaskDispatcher();

  void start();
  // Queues a task as the control plane sent it. False when it is already
  // here (running or queued) or the dispatcher no longer takes tasks.
  bool submit(const nlohmann::json& task);
  // Waits until a worker is free; false when `shutdown` was requested.
  bool waitForFreeWorker(ShutdownSignal& shutdown);
  // Stops taking tasks and waits up to `grace_ms` for the running ones.
  // True when none is left.
  bool drain(uint64_t grace_ms);
  // Joins the workers (after a drain that returned true).
  void join();

  // Runs one task on the calling thread (what a worker does; for tests).
  void runTask(const nlohmann::json& document);
  size_t busy() const;

 private:
  void workerLoop();

  const ControlPlaneClient& control_plane_;
  GitspaceTasks& tasks_;
  RouteSync& routes_;
  FinishedTaskStore& store_;
  LeaseKeeper& keeper_;
  const DelegateLimits limits_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<nlohmann::json> queue_;
  std::set<std::string> present_;  // ids queued or running
  size_t running_ = 0;
  bool accepting_ = true;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace spacegate
