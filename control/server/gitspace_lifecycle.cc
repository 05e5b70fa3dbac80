#include "control/server/gitspace_lifecycle.h"

namespace spacegate {

const char* gitspaceStateName(GitspaceState state) {
  switch (state) {
    case GitspaceState::kUninitialized: return "uninitialized";
    case GitspaceState::kStarting: return "starting";
    case GitspaceState::kRunning: return "running";
    case GitspaceState::kStopping: return "stopping";
    case GitspaceState::kStopped: return "stopped";
    case GitspaceState::kCleaning: return "cleaning";
    case GitspaceState::kCleaned: return "cleaned";
    case GitspaceState::kDeleted: return "deleted";
    case GitspaceState::kError: return "error";
  }
  return "unknown";
}

bool parseGitspaceState(std::string_view text, GitspaceState& state) {
  for (GitspaceState candidate :
       {GitspaceState::kUninitialized, GitspaceState::kStarting, GitspaceState::kRunning,
        GitspaceState::kStopping, GitspaceState::kStopped, GitspaceState::kCleaning,
        GitspaceState::kCleaned, GitspaceState::kDeleted, GitspaceState::kError}) {
    if (text == gitspaceStateName(candidate)) {
      state = candidate;
      return true;
    }
  }
  return false;
}

const char* gitspaceEventName(GitspaceEvent event) {
  switch (event) {
    case GitspaceEvent::kCreate: return "create";
    case GitspaceEvent::kStart: return "start";
    case GitspaceEvent::kStop: return "stop";
    case GitspaceEvent::kReset: return "reset";
    case GitspaceEvent::kDelete: return "delete";
    case GitspaceEvent::kStarted: return "started";
    case GitspaceEvent::kStopped: return "stopped";
    case GitspaceEvent::kCleaned: return "cleaned";
    case GitspaceEvent::kRestart: return "restart";
    case GitspaceEvent::kDeleted: return "deleted";
    case GitspaceEvent::kFailed: return "failed";
    case GitspaceEvent::kDeadline: return "deadline";
  }
  return "unknown";
}

bool isBusyState(GitspaceState state) {
  return state == GitspaceState::kStarting || state == GitspaceState::kStopping ||
         state == GitspaceState::kCleaning;
}

std::optional<GitspaceState> nextGitspaceState(GitspaceState state, GitspaceEvent event) {
  using S = GitspaceState;
  using E = GitspaceEvent;
  switch (event) {
    case E::kCreate:
      if (state == S::kUninitialized) return S::kStarting;
      break;
    case E::kStart:
      if (state == S::kStopped || state == S::kError) return S::kStarting;
      break;
    case E::kStop:
      if (state == S::kRunning) return S::kStopping;
      break;
    case E::kReset:
      if (state == S::kRunning || state == S::kStopped || state == S::kError) {
        return S::kCleaning;
      }
      break;
    case E::kDelete:
      if (state != S::kDeleted) return S::kCleaning;
      break;
    case E::kStarted:
      if (state == S::kStarting) return S::kRunning;
      break;
    case E::kStopped:
      if (state == S::kStopping) return S::kStopped;
      break;
    case E::kCleaned:
      if (state == S::kCleaning) return S::kCleaned;
      break;
    case E::kRestart:
      if (state == S::kCleaned) return S::kStarting;
      break;
    case E::kDeleted:
      if (state == S::kCleaning) return S::kDeleted;
      break;
    case E::kFailed:
    case E::kDeadline:
      if (isBusyState(state)) return S::kError;
      break;
  }
  return std::nullopt;
}

}  // namespace spacegate
