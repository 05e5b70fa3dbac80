// The state file is the agent's only memory; the JSON keeps the spec in its
// canonical form, so comparing a new PUT with the stored one after a restart
// is the same text comparison as before it.
#include "runner/agent/agent_state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

namespace spacegate {

const char* gitspaceStateName(GitspaceState state) {
  switch (state) {
    case GitspaceState::kUninitialized: return "uninitialized";
    case GitspaceState::kSettingUp: return "setting_up";
    case GitspaceState::kRunning: return "running";
    case GitspaceState::kStopped: return "stopped";
    case GitspaceState::kError: return "error";
  }
  return "unknown";
}

bool parseGitspaceState(std::string_view text, GitspaceState& state) {
  for (GitspaceState candidate :
       {GitspaceState::kUninitialized, GitspaceState::kSettingUp, GitspaceState::kRunning,
        GitspaceState::kStopped, GitspaceState::kError}) {
    if (text == gitspaceStateName(candidate)) {
      state = candidate;
      return true;
    }
  }
  return false;
}

const char* gitspaceEventName(GitspaceEvent event) {
  switch (event) {
    case GitspaceEvent::kSpecAccepted: return "spec_accepted";
    case GitspaceEvent::kStartRequested: return "start_requested";
    case GitspaceEvent::kIdeReady: return "ide_ready";
    case GitspaceEvent::kFailed: return "failed";
    case GitspaceEvent::kStopRequested: return "stop_requested";
    case GitspaceEvent::kDeleted: return "deleted";
    case GitspaceEvent::kRebooted: return "rebooted";
  }
  return "unknown";
}

bool nextGitspaceState(GitspaceState from, GitspaceEvent event, GitspaceState& to) {
  using S = GitspaceState;
  switch (event) {
    case GitspaceEvent::kSpecAccepted:
      if (from != S::kUninitialized) return false;
      to = S::kSettingUp;
      return true;
    case GitspaceEvent::kStartRequested:
      if (from != S::kStopped && from != S::kError) return false;
      to = S::kSettingUp;
      return true;
    case GitspaceEvent::kIdeReady:
      if (from != S::kSettingUp) return false;
      to = S::kRunning;
      return true;
    case GitspaceEvent::kFailed:
      if (from != S::kSettingUp && from != S::kRunning) return false;
      to = S::kError;
      return true;
    case GitspaceEvent::kStopRequested:
      if (from == S::kUninitialized) return false;
      to = S::kStopped;
      return true;
    case GitspaceEvent::kDeleted: to = S::kUninitialized; return true;
    case GitspaceEvent::kRebooted:
      to = (from == S::kRunning || from == S::kSettingUp) ? S::kStopped : from;
      return true;
  }
  return false;
}

void AgentState::clearGitspace() {
  std::string keep_id = std::move(gitspace_id);
  *this = AgentState{};
  gitspace_id = std::move(keep_id);
}

std::string agentStateToJson(const AgentState& state) {
  nlohmann::json document = {
      {"version", 1},
      {"gitspace_id", state.gitspace_id},
      {"state", gitspaceStateName(state.state)},
      {"error", state.error},
      {"step", state.step},
      {"clone_done", state.clone_done},
      {"post_create_done", state.post_create_done},
      {"workspace", state.workspace},
      {"user", state.user},
      {"user_warning", state.user_warning},
      {"image", state.image},
      {"forwarded_ports", state.forwarded_ports},
      {"ide",
       {{"kind", state.ide.kind},
        {"port", state.ide.port},
        {"protocol", state.ide.protocol},
        {"host", state.ide.host}}},
      {"ide_process", {{"pid", state.ide_pid}, {"start_time", state.ide_start_time}}},
  };
  document["spec"] = state.has_spec ? gitspaceSpecToJson(state.spec) : nlohmann::json(nullptr);
  return document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

bool parseAgentState(std::string_view text, AgentState& state, std::string& error) {
  nlohmann::json document = nlohmann::json::parse(text, nullptr, false);
  if (!document.is_object()) {
    error = "not a JSON object";
    return false;
  }
  AgentState parsed;
  auto string_field = [&](const char* name, std::string& out) {
    if (!document.contains(name)) return true;
    if (!document[name].is_string()) {
      error = std::string(name) + ": must be a string";
      return false;
    }
    out = document[name].get<std::string>();
    return true;
  };
  auto bool_field = [&](const char* name, bool& out) {
    if (!document.contains(name)) return true;
    if (!document[name].is_boolean()) {
      error = std::string(name) + ": must be true or false";
      return false;
    }
    out = document[name].get<bool>();
    return true;
  };
  std::string state_name = "uninitialized";
  if (!string_field("gitspace_id", parsed.gitspace_id) || !string_field("state", state_name) ||
      !string_field("error", parsed.error) || !string_field("step", parsed.step) ||
      !bool_field("clone_done", parsed.clone_done) ||
      !bool_field("post_create_done", parsed.post_create_done) ||
      !string_field("workspace", parsed.workspace) || !string_field("user", parsed.user) ||
      !string_field("user_warning", parsed.user_warning) || !string_field("image", parsed.image)) {
    return false;
  }
  if (!parseGitspaceState(state_name, parsed.state)) {
    error = "state: unknown state \"" + state_name + "\"";
    return false;
  }
  if (document.contains("forwarded_ports")) {
    const auto& ports = document["forwarded_ports"];
    if (!ports.is_array()) {
      error = "forwarded_ports: must be an array";
      return false;
    }
    for (const auto& port : ports) {
      if (!port.is_number_integer()) {
        error = "forwarded_ports: must hold port numbers";
        return false;
      }
      parsed.forwarded_ports.push_back(port.get<int>());
    }
  }
  if (document.contains("ide")) {
    const auto& ide = document["ide"];
    auto text = [&](const char* name, std::string& out) {
      if (ide.contains(name) && ide[name].is_string()) out = ide[name].get<std::string>();
    };
    if (!ide.is_object()) {
      error = "ide: must be an object";
      return false;
    }
    text("kind", parsed.ide.kind);
    text("protocol", parsed.ide.protocol);
    text("host", parsed.ide.host);
    if (ide.contains("port") && ide["port"].is_number_integer()) {
      parsed.ide.port = ide["port"].get<int>();
    }
  }
  if (document.contains("ide_process")) {
    const auto& process = document["ide_process"];
    if (!process.is_object() || !process.contains("pid") || !process["pid"].is_number_integer() ||
        !process.contains("start_time") || !process["start_time"].is_number_unsigned()) {
      error = "ide_process: must be {\"pid\": N, \"start_time\": N}";
      return false;
    }
    parsed.ide_pid = process["pid"].get<int>();
    parsed.ide_start_time = process["start_time"].get<uint64_t>();
  }
  if (document.contains("spec") && !document["spec"].is_null()) {
    SpecError spec_error;
    if (!gitspaceSpecFromJson(document["spec"], parsed.spec, spec_error)) {
      error = "spec." + spec_error.field + ": " + spec_error.message;
      return false;
    }
    parsed.has_spec = true;
  }
  if (!parsed.has_spec && parsed.state != GitspaceState::kUninitialized) {
    error = "spec: required when the state is " + state_name;
    return false;
  }
  state = std::move(parsed);
  return true;
}

void recoverAfterReboot(AgentState& state, bool clone_exists) {
  GitspaceState next = state.state;
  nextGitspaceState(state.state, GitspaceEvent::kRebooted, next);
  if (next == GitspaceState::kStopped && !clone_exists) {
    // Nothing to start from: the delegate sets the Gitspace up again.
    state.clearGitspace();
    return;
  }
  if (next != state.state) state.step = "stopped: the machine restarted";
  state.state = next;
}

bool AgentStateFile::load(AgentState& state, bool& found, std::string& error) const {
  found = false;
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return true;
    error = path_ + ": " + std::strerror(errno);
    return false;
  }
  found = true;
  std::string text;
  char buffer[16 * 1024];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = path_ + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!parseAgentState(text, state, error)) {
    error = path_ + ": " + error;
    return false;
  }
  return true;
}

bool AgentStateFile::save(const AgentState& state, std::string& error) const {
  std::string text = agentStateToJson(state);
  std::string temporary = path_ + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  size_t written = 0;
  while (written < text.size()) {
    ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = temporary + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(temporary.c_str());
      return false;
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    error = temporary + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
    return false;
  }
  if (::rename(temporary.c_str(), path_.c_str()) != 0) {
    error = path_ + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
    return false;
  }
  return true;
}

bool AgentStateFile::remove(std::string& error) const {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    error = path_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace spacegate
