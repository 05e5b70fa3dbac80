// GitspaceSetup: the steps that turn a spec into a workspace ready for its
// IDE, each logged to the setup log: clone the repository, read its
// devcontainer.json, choose the user (and make its home), build the
// environment, run postCreateCommand and postStartCommand. Every command
// runs through GitspaceProcesses (so stop reaches it), with a deadline, and
// gives up early when the caller cancels (a stop or delete during setup).
// The IDE is started by the caller (ide_server.h) with what these steps
// prepared.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "runner/agent/agent_config.h"
#include "runner/agent/devcontainer.h"
#include "runner/agent/gitspace_processes.h"
#include "runner/agent/gitspace_spec.h"
#include "runner/agent/setup_log.h"

namespace spacegate {

// Deadlines of the steps.
struct SetupTimeouts {
  int clone_ms = 10 * 60 * 1000;
  int lifecycle_command_ms = 30 * 60 * 1000;
  // After a command exits, how long its output may take to drain into the
  // log (a background process it left may hold the pipe for ever).
  int output_drain_ms = 1000;
  // SIGTERM to SIGKILL for a command that is cancelled or overruns.
  int kill_grace_ms = 5000;
};

// Who commands and the IDE run as.
struct RunAs {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  // Whether spawning must switch to uid/gid (false when it is the agent's own).
  bool switch_user = false;
  bool isRoot() const { return uid == 0; }
};

// What the steps before the IDE produce.
struct PreparedWorkspace {
  std::string workspace;          // the clone
  std::string devcontainer_file;  // relative to the clone; empty when none was found
  DevcontainerConfig devcontainer;
  RunAs user;
  std::string user_warning;              // the requested user was not used, and why
  std::vector<std::string> environment;  // NAME=value, for every command and the IDE
};

class GitspaceSetup {
 public:
  GitspaceSetup(const AgentConfig& config, SetupLog& log, GitspaceProcesses& processes,
                std::function<bool()> cancelled, SetupTimeouts timeouts = {})
      : config_(config),
        log_(log),
        processes_(processes),
        cancelled_(std::move(cancelled)),
        timeouts_(timeouts) {}

  // `git clone` into `workspace` (a leftover of an unfinished clone is
  // removed first).
  bool cloneRepository(const GitspaceSpec& spec, const std::string& workspace, std::string& error);
  // The spec's devcontainer path, else .devcontainer/devcontainer.json, else
  // .devcontainer.json; none found means the defaults. Errors name the file.
  bool readDevcontainer(const GitspaceSpec& spec, PreparedWorkspace& prepared, std::string& error);
  // remoteUser, else the spec's user name, else root; a user this host does
  // not have falls back to root with a warning. Makes the home folder and
  // hands the clone to the user.
  bool chooseUser(const GitspaceSpec& spec, PreparedWorkspace& prepared, std::string& error);
  // The clean environment of every command and the IDE.
  void buildEnvironment(const GitspaceSpec& spec, const std::string& gitspace_id,
                        PreparedWorkspace& prepared);
  // Runs a lifecycle command (`name` is "postCreateCommand" or
  // "postStartCommand") in the clone as the user; the object form's commands
  // run in parallel and must all succeed.
  bool runLifecycleCommand(const std::string& name, const LifecycleCommand& command,
                           const PreparedWorkspace& prepared, std::string& error);

  // A ChildSpec that runs `argv` in the clone, as the user, in the
  // Gitspace's environment (argv[0] looked up in that environment's PATH).
  ChildSpec commandSpec(std::vector<std::string> argv, const PreparedWorkspace& prepared) const;

 private:
  enum class RunOutcome { kExited, kTimedOut, kCancelled, kNotStarted };
  struct Started {
    std::string source;
    pid_t pid = -1;
    std::shared_ptr<OutputPump> pump;
    ExitStatus status;
    RunOutcome outcome = RunOutcome::kNotStarted;
    std::string error;
  };
  // Waits for every started command until `timeout_ms`, or cancellation
  // (then the unfinished ones are stopped).
  void waitAll(std::vector<Started>& commands, int timeout_ms);

  const AgentConfig& config_;
  SetupLog& log_;
  GitspaceProcesses& processes_;
  std::function<bool()> cancelled_;
  SetupTimeouts timeouts_;
};

// `<disk>/workspace/<repository folder name>`.
std::string workspacePath(const AgentConfig& config, const GitspaceSpec& spec);
// `<disk>/home/<user>`.
std::string homePath(const AgentConfig& config, const std::string& user);
// `<disk>/.spacegate`, the agent's own folder (0700).
std::string agentFolder(const AgentConfig& config);

// File helpers. Neither follows symbolic links: a repository may hold links
// to anywhere, and the agent runs as root.
bool makeDirectories(const std::string& path, mode_t mode, std::string& error);
bool removeTree(const std::string& path, std::string& error);
bool chownTree(const std::string& path, uid_t uid, gid_t gid, std::string& error);
// `program` looked up in a PATH value ("" when not found); a name with a '/'
// is returned as it is.
std::string findInPath(const std::string& program, const std::string& path_value);

}  // namespace spacegate
