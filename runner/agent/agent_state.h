// AgentState: everything the agent must remember across its own restarts
// (the machine is stopped and started, the agent crashes): which Gitspace the
// machine serves, the spec it was given, where setup got to, whether
// postCreateCommand has run, and what the IDE is. It lives in
// `<disk>/.spacegate/agent-state.json`, written whole to a temporary file
// and renamed over the old one, so a crash leaves the old or the new state,
// never half of one. The Gitspace state machine is here too: its states, the
// events that move it, and the one function that says where each leads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runner/agent/gitspace_spec.h"

namespace spacegate {

enum class GitspaceState {
  kUninitialized,  // no spec: a warm machine, or one whose Gitspace was deleted
  kSettingUp,      // the setup thread is cloning, running lifecycle commands or
                   // waiting for the IDE to answer (`step` says which)
  kRunning,        // the IDE answers on its port
  kStopped,        // nothing of the Gitspace runs; the clone and homes are kept
                   // (POST stop, or the machine restarted)
  kError,          // setup failed or the IDE exited; `error` says why; start retries
};

enum class GitspaceEvent {
  kSpecAccepted,    // PUT /v1/gitspace with a new spec
  kStartRequested,  // POST /v1/gitspace/start
  kIdeReady,        // the IDE answered on its port
  kFailed,          // a setup step failed, or the IDE exited on its own
  kStopRequested,   // POST /v1/gitspace/stop
  kDeleted,         // DELETE /v1/gitspace
  kRebooted,        // the agent starts with a state left by an earlier run
};

const char* gitspaceStateName(GitspaceState state);
bool parseGitspaceState(std::string_view text, GitspaceState& state);
const char* gitspaceEventName(GitspaceEvent event);

// The state `event` leads to from `from`; false when the event is not
// allowed there (the caller answers 409). kRebooted leads to kStopped from a
// busy state; the caller turns that into kUninitialized when the clone is
// gone (see recoverAfterReboot).
bool nextGitspaceState(GitspaceState from, GitspaceEvent event, GitspaceState& to);

// What the agent tells about the IDE once setup has chosen it.
struct IdeEndpoint {
  std::string kind;  // ideKindName()
  int port = 0;
  std::string protocol;  // "http" or "ssh"
  std::string host;
};

struct AgentState {
  std::string gitspace_id;  // the assignment; empty for a warm machine
  bool has_spec = false;
  GitspaceSpec spec;
  GitspaceState state = GitspaceState::kUninitialized;
  std::string error;  // why the state is kError
  std::string step;   // the current (or last) setup step
  bool clone_done = false;
  bool post_create_done = false;
  std::string workspace;     // the clone's folder
  std::string user;          // the user commands and the IDE run as
  std::string user_warning;  // e.g. the requested user does not exist here
  std::string image;         // devcontainer.json's image, recorded
  std::vector<int> forwarded_ports;
  IdeEndpoint ide;
  // The running IDE's process (it leads its group) and its start time
  // (/proc/<pid>/stat), so that an agent restarted after a crash can stop
  // an IDE its predecessor left behind, and only that process.
  int ide_pid = 0;
  uint64_t ide_start_time = 0;

  // Forgets the Gitspace (spec, progress, results) but keeps the assignment.
  void clearGitspace();
};

std::string agentStateToJson(const AgentState& state);
// False with a reason naming the field.
bool parseAgentState(std::string_view text, AgentState& state, std::string& error);

// At boot, a state left by an earlier run: running or setting up means the
// machine was restarted, so it becomes stopped (the delegate calls start),
// or uninitialized when the clone is gone. An error stays an error.
void recoverAfterReboot(AgentState& state, bool clone_exists);

// Reads and writes the state file.
class AgentStateFile {
 public:
  explicit AgentStateFile(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }
  // False with a reason; a missing file is `found` = false and success.
  bool load(AgentState& state, bool& found, std::string& error) const;
  // Atomic: a temporary file (0600), fsync, rename. False with a reason.
  bool save(const AgentState& state, std::string& error) const;
  bool remove(std::string& error) const;

 private:
  std::string path_;
};

}  // namespace spacegate
