// The Gitspace lifecycle: its states, the events that move it, and the one
// function that holds every transition (docs/control-plane.md, "Lifecycle").
// Everything else (API actions, task results, deadlines, auto-stop) asks
// nextGitspaceState() and refuses what it refuses.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace spacegate {

enum class GitspaceState {
  kUninitialized,  // the record exists, nothing asked of a delegate yet
  kStarting,       // a start task is queued or running: machine, agent, IDE, routes
  kRunning,        // the IDE answers through the gateway
  kStopping,       // a stop task is queued or running
  kStopped,        // the machine is stopped, its disk kept
  kCleaning,       // a reset or delete task is queued or running: the machine goes
  kCleaned,        // a reset finished: the machine is gone, a fresh start follows
  kDeleted,        // the end: the machine is gone, the record stays
  kError,          // a task failed or a busy state ran past its deadline (state_reason)
};

enum class GitspaceEvent {
  kCreate,    // API: a new Gitspace
  kStart,     // API: start a stopped or failed Gitspace
  kStop,      // API (or idle): stop a running Gitspace
  kReset,     // API: throw the machine away and start fresh
  kDelete,    // API: delete
  kStarted,   // the start task finished ok
  kStopped,   // the stop task finished ok
  kCleaned,   // the reset task finished ok
  kRestart,   // after a reset: start again
  kDeleted,   // the delete task finished ok
  kFailed,    // the current task failed (or no delegate finished it)
  kDeadline,  // a busy state ran past its deadline
};

const char* gitspaceStateName(GitspaceState state);
bool parseGitspaceState(std::string_view text, GitspaceState& state);
const char* gitspaceEventName(GitspaceEvent event);

// The state `event` moves `state` to, or nothing when the event is not
// allowed in that state.
std::optional<GitspaceState> nextGitspaceState(GitspaceState state, GitspaceEvent event);

// Busy states: a task is at work and a deadline applies.
bool isBusyState(GitspaceState state);

}  // namespace spacegate
