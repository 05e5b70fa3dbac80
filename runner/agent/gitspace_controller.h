// GitspaceController: the one Gitspace of this machine. It owns the state
// (AgentState, persisted at every change), runs the work that takes time on
// a worker thread of its own, one operation after another (set up, start,
// stop, delete), and watches the IDE once it runs. The API calls it from the
// server's loop thread, so nothing here holds its lock across a slow call:
// a request reads a snapshot or queues an operation.
//
// A stop or delete cancels setup in flight: every queued setup carries the
// epoch it was queued in, and stop, delete and shutdown move the epoch on,
// so a setup that sees another epoch stops at its next check and changes
// nothing. Transitions go through transitionLocked(), which applies
// nextGitspaceState() and persists the result.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "runner/agent/agent_config.h"
#include "runner/agent/agent_state.h"
#include "runner/agent/gitspace_processes.h"
#include "runner/agent/gitspace_setup.h"
#include "runner/agent/gitspace_spec.h"
#include "runner/agent/setup_log.h"

namespace spacegate {

struct ControllerTimeouts {
  SetupTimeouts setup;
  // How long the IDE may take to answer on its port.
  int ide_ready_ms = 120'000;
  // SIGTERM to SIGKILL when the Gitspace's processes are stopped.
  int stop_grace_ms = 5000;
};

class GitspaceController {
 public:
  GitspaceController(AgentConfig config, SetupLog& log, ControllerTimeouts timeouts = {});
  ~GitspaceController();
  GitspaceController(const GitspaceController&) = delete;
  GitspaceController& operator=(const GitspaceController&) = delete;

  // Makes the agent's folder, loads the state file (a corrupt one is moved
  // aside) and recovers it after a restart; starts the worker. False with a
  // reason when the disk cannot be used at all.
  bool boot(std::string& error);

  enum class Result {
    kDone,       // finished (200)
    kAccepted,   // work queued (202)
    kUnchanged,  // already so (200, idempotent)
    kConflict,   // not allowed now (409); `error` says why
    kFailed,     // could not be done (500); `error` says why
  };

  // The runner's assignment of a warm machine to a Gitspace.
  Result assign(const std::string& gitspace_id, std::string& error);
  // PUT /v1/gitspace: a new spec starts setup; the same one again changes
  // nothing; another one while one exists is a conflict.
  Result applySpec(const GitspaceSpec& spec, std::string& error);
  // From stopped or error: set up again (the steps already done are kept).
  Result start(std::string& error);
  // Asynchronous, `done` runs on the worker thread when finished.
  using Done = std::function<void(Result, const std::string& error)>;
  void stop(Done done);
  // Stops everything and removes the clone, the homes and the Gitspace's
  // state (the assignment stays).
  void remove(Done done);
  // SIGTERM: cancels setup, stops the Gitspace's processes, persists the
  // state (as it was, so the next boot sees a restart) and ends the worker.
  void shutdown();

  std::string gitspaceId() const;
  AgentState snapshot() const;
  // Lock-free, for log followers (called from SetupLog watchers).
  GitspaceState state() const { return state_mirror_.load(std::memory_order_acquire); }
  // GET /v1/gitspace.
  nlohmann::json statusJson() const;
  const AgentConfig& config() const { return config_; }

 private:
  void workerLoop();
  void enqueue(std::function<void()> task);
  // Under mutex_: applies `event` (nextGitspaceState), sets `error`, mirrors
  // and persists. False (and nothing changed) when the event is not allowed.
  bool transitionLocked(GitspaceEvent event, const std::string& error = "");
  void persistLocked();
  void setStep(uint64_t epoch, const std::string& step);

  // Worker-thread operations.
  void runSetup(uint64_t epoch);
  void failSetup(uint64_t epoch, const std::string& error);
  bool waitForIde(uint64_t epoch, const std::string& host, int port, const std::string& protocol,
                  std::string& error);
  void startIdeWatcher(uint64_t epoch, pid_t pid, std::shared_ptr<OutputPump> pump);
  // Stops every process of the Gitspace and the IDE watcher.
  void stopSession();

  const AgentConfig config_;
  SetupLog& log_;
  const ControllerTimeouts timeouts_;
  AgentStateFile state_file_;
  GitspaceProcesses processes_;

  mutable std::mutex mutex_;
  AgentState state_;
  std::atomic<GitspaceState> state_mirror_{GitspaceState::kUninitialized};
  std::atomic<uint64_t> epoch_{1};
  int pending_stops_ = 0;  // queued stop/delete operations
  bool shutting_down_ = false;

  // The IDE of the running session (under mutex_).
  bool ide_exited_ = false;
  ExitStatus ide_exit_;
  std::shared_ptr<OutputPump> ide_pump_;
  std::thread ide_watcher_;  // worker thread only

  std::condition_variable tasks_changed_;
  std::deque<std::function<void()>> tasks_;
  std::thread worker_;
};

}  // namespace spacegate
