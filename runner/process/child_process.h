// Child processes for the runner and the agent: spawn, wait with a deadline,
// signal a whole process group, run a command and collect its output.
//
// One reaper thread per process owns waitpid(-1): the agent is PID 1 of its
// machine's PID namespace, so every orphan in the machine becomes its child
// and must be reaped, and a per-child waitpid would race with that. The
// reaper records each exit; spawn() registers the child under the same lock
// the reaper takes before recording, so an exit is never lost or misfiled.
// (libuv's uv_spawn is not used here: it would install its own SIGCHLD
// handler and reap by pid.)
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace spacegate {

struct ChildSpec {
  // argv[0]: an absolute path, or a name looked up in PATH.
  std::vector<std::string> argv;
  // Added to (or replacing) the inherited environment, "NAME=value".
  std::vector<std::string> environment;
  bool inherit_environment = true;
  std::string working_directory;  // empty: the caller's
  // Where stdout and stderr go: a descriptor that is dup'ed into the child;
  // -1 is /dev/null. stdin is always /dev/null.
  int stdout_fd = -1;
  int stderr_fd = -1;
  // Drop to this user and group (and its supplementary groups) when >= 0.
  int uid = -1;
  int gid = -1;
  // The child leads a new session and process group, so that signalling
  // the group reaches everything it starts.
  bool new_session = true;
  // Applied in the child before exec, when not zero.
  uint64_t max_open_files = 0;
};

struct ExitStatus {
  bool exited = false;       // false: still running (or unknown)
  int code = -1;             // exit code, or -1 when killed by a signal
  int signal = 0;            // the signal that killed it
  std::string text() const;  // "exit 0", "killed by signal 9"
};

class ChildReaper {
 public:
  static ChildReaper& instance();

  // Starts the child; -1 with `error` set when fork or exec fails (an exec
  // failure is reported through a close-on-exec pipe, not as exit 127).
  pid_t spawn(const ChildSpec& spec, std::string& error);
  // Waits up to `timeout_ms` (-1: forever) for `pid` to end; the status is
  // forgotten once returned. False on timeout (the child keeps running).
  bool wait(pid_t pid, ExitStatus& status, int timeout_ms);
  // Non-blocking: true and the status when `pid` has ended (forgotten then).
  bool poll(pid_t pid, ExitStatus& status);
  // Signals the process group `pid` leads (and `pid` itself).
  static void signalGroup(pid_t pid, int signal);
  // SIGTERM to the group, then SIGKILL after `grace_ms`; waits for the end.
  void terminate(pid_t pid, int grace_ms);

 private:
  ChildReaper();
  void reapLoop();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<pid_t, ExitStatus> children_;  // spawned by us; exited or not
  size_t running_ = 0;
  std::thread thread_;
};

struct CommandResult {
  ExitStatus status;
  std::string output;  // stdout and stderr together, cut at the limit
  bool timed_out = false;
  bool ok() const { return status.exited && status.code == 0 && !timed_out; }
};

// Runs a command to completion, collecting up to `max_output` bytes of its
// output; after `timeout_ms` its process group is killed. False only when it
// could not be started (`error` says why); check `result.ok()` for success.
bool runCommand(const ChildSpec& spec, int timeout_ms, CommandResult& result, std::string& error,
                size_t max_output = 1 << 20);
// Shorthand: argv only; "argv[0] ...: output" in `error` when it fails.
bool runCommand(const std::vector<std::string>& argv, int timeout_ms, std::string& error);

}  // namespace spacegate
