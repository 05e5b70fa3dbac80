// GitspaceProcesses: every process a Gitspace started (git, lifecycle
// commands, the IDE and whatever they start in turn) and stopping them all.
// Each command leads a process group of its own, which catches what it
// forks; a process that leaves its group (a daemon calling setsid(), an SSH
// session) is still a descendant of the agent, because the agent is PID 1 of
// its machine or, without namespaces, a child subreaper (main.cc sets
// PR_SET_CHILD_SUBREAPER), so orphans are re-parented to it. Stopping
// therefore signals the recorded groups and every descendant found in /proc:
// SIGTERM, then SIGKILL for what is left after the grace.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runner/agent/output_pump.h"
#include "runner/agent/setup_log.h"
#include "runner/process/child_process.h"

namespace spacegate {

class GitspaceProcesses {
 public:
  explicit GitspaceProcesses(SetupLog& log) : log_(log) {}
  ~GitspaceProcesses();

  // Starts `spec` in a new process group with its output into the log,
  // prefixed with `source`. -1 with a reason when it could not start.
  pid_t spawn(ChildSpec spec, const std::string& source, std::shared_ptr<OutputPump>& pump,
              std::string& error);
  // Stops everything started here (and every other descendant of the
  // agent): SIGTERM, SIGKILL after `grace_ms`, then waits (briefly) until
  // they are gone. The output pumps are stopped last.
  void stopAll(int grace_ms);

 private:
  SetupLog& log_;
  std::mutex mutex_;
  std::vector<pid_t> groups_;
  std::vector<std::shared_ptr<OutputPump>> pumps_;
};

// The live (not zombie) processes descended from `root`, read from /proc.
std::vector<pid_t> descendantProcesses(pid_t root);
// True while a process of group `group` exists (zombies included).
bool processGroupExists(pid_t group);
// The start time of `pid` in clock ticks since boot (/proc/<pid>/stat field
// 22), which with the pid names one process for good; 0 when it is gone.
uint64_t processStartTime(pid_t pid);
// Stops the group `leader` leads if `leader` is still the process that
// started at `start_time` (SIGTERM, SIGKILL after `grace_ms`). True when
// there was one to stop.
bool stopLeftoverGroup(pid_t leader, uint64_t start_time, int grace_ms);

}  // namespace spacegate
