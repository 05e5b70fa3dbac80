// Each step logs what it does before doing it and why it failed when it
// does, so the setup log alone explains a Gitspace that did not start.
#include "runner/agent/gitspace_setup.h"

#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace spacegate {

namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string joinArgv(const std::vector<std::string>& argv) {
  std::string text;
  for (const std::string& argument : argv) {
    if (!text.empty()) text += ' ';
    bool plain = !argument.empty() && argument.find_first_of(" \t\"'\\$`") == std::string::npos;
    text += plain ? argument : "'" + argument + "'";
  }
  return text;
}

// "300 ms", "10 min", "90 s".
std::string durationText(int ms) {
  if (ms < 1000) return std::to_string(ms) + " ms";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + " min";
  return std::to_string(ms / 1000) + " s";
}

bool pathExists(const std::string& path) {
  struct stat info {};
  return ::lstat(path.c_str(), &info) == 0;
}

// Reads at most `limit` bytes of a regular file.
bool readSmallFile(const std::string& path, size_t limit, std::string& text, std::string& error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    error = std::strerror(errno);
    return false;
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    error = "not a regular file";
    ::close(fd);
    return false;
  }
  text.clear();
  char buffer[16 * 1024];
  while (text.size() < limit) {
    ssize_t got = ::read(fd, buffer, std::min(sizeof buffer, limit - text.size()));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      error = std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  ::close(fd);
  return true;
}

// The real path of `path` if it lies inside `root` (also a real path).
bool resolveInside(const std::string& root, const std::string& path, std::string& resolved) {
  char buffer[PATH_MAX];
  if (!::realpath(path.c_str(), buffer)) return false;
  resolved = buffer;
  return resolved.size() > root.size() && resolved.compare(0, root.size(), root) == 0 &&
         resolved[root.size()] == '/';
}

thread_local uid_t chown_uid;
thread_local gid_t chown_gid;
thread_local int chown_errno;

int chownEntry(const char* path, const struct stat*, int, struct FTW*) {
  if (::lchown(path, chown_uid, chown_gid) != 0 && chown_errno == 0) chown_errno = errno;
  return 0;
}

thread_local int remove_errno;

int removeEntry(const char* path, const struct stat*, int type, struct FTW*) {
  int result = type == FTW_DP ? ::rmdir(path) : ::unlink(path);
  if (result != 0 && errno != ENOENT && remove_errno == 0) remove_errno = errno;
  return 0;
}

}  // namespace

std::string workspacePath(const AgentConfig& config, const GitspaceSpec& spec) {
  return config.disk + "/workspace/" + repositoryFolderName(spec.repository);
}

std::string homePath(const AgentConfig& config, const std::string& user) {
  return config.disk + "/home/" + user;
}

std::string agentFolder(const AgentConfig& config) {
  return config.disk + "/.spacegate";
}

bool makeDirectories(const std::string& path, mode_t mode, std::string& error) {
  if (path.empty()) return true;
  size_t position = 0;
  while (position != std::string::npos) {
    position = path.find('/', position + 1);
    std::string prefix = path.substr(0, position);
    if (prefix.empty()) continue;
    if (::mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      error = prefix + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    error = path + ": not a folder";
    return false;
  }
  return true;
}

bool removeTree(const std::string& path, std::string& error) {
  if (!pathExists(path)) return true;
  remove_errno = 0;
  ::nftw(path.c_str(), removeEntry, 32, FTW_DEPTH | FTW_PHYS);
  if (remove_errno != 0 || pathExists(path)) {
    error = path + ": " + std::strerror(remove_errno ? remove_errno : EBUSY);
    return false;
  }
  return true;
}

bool chownTree(const std::string& path, uid_t uid, gid_t gid, std::string& error) {
  chown_uid = uid;
  chown_gid = gid;
  chown_errno = 0;
  if (::nftw(path.c_str(), chownEntry, 32, FTW_PHYS) != 0 && chown_errno == 0) {
    chown_errno = errno;
  }
  if (chown_errno != 0) {
    error = path + ": chown: " + std::strerror(chown_errno);
    return false;
  }
  return true;
}

std::string findInPath(const std::string& program, const std::string& path_value) {
  if (program.find('/') != std::string::npos) return program;
  size_t start = 0;
  while (start <= path_value.size()) {
    size_t colon = path_value.find(':', start);
    std::string folder =
        path_value.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!folder.empty()) {
      std::string candidate = folder + "/" + program;
      struct stat info {};
      if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
          (info.st_mode & 0111) != 0) {
        return candidate;
      }
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return "";
}

void GitspaceSetup::waitAll(std::vector<Started>& commands, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto running = [&] {
    for (const Started& command : commands) {
      if (command.pid > 0 && !command.status.exited) return true;
    }
    return false;
  };
  RunOutcome stop_reason = RunOutcome::kExited;
  while (running()) {
    for (Started& command : commands) {
      if (command.pid > 0 && !command.status.exited &&
          ChildReaper::instance().wait(command.pid, command.status, 100)) {
        command.outcome = RunOutcome::kExited;
      }
    }
    if (!running()) break;
    if (cancelled_()) {
      stop_reason = RunOutcome::kCancelled;
    } else if (std::chrono::steady_clock::now() >= deadline) {
      stop_reason = RunOutcome::kTimedOut;
    } else {
      continue;
    }
    for (Started& command : commands) {
      if (command.pid > 0 && !command.status.exited) {
        ChildReaper::instance().terminate(command.pid, timeouts_.kill_grace_ms);
        command.status.exited = true;
        command.outcome = stop_reason;
      }
    }
  }
  // Let the output reach the log before the step's verdict does.
  for (Started& command : commands) {
    if (command.pump) command.pump->waitForEnd(timeouts_.output_drain_ms);
  }
}

bool GitspaceSetup::cloneRepository(const GitspaceSpec& spec, const std::string& workspace,
                                    std::string& error) {
  if (!makeDirectories(config_.disk + "/workspace", 0755, error)) return false;
  if (pathExists(workspace)) {
    log_.note("removing " + workspace + " (left by an unfinished clone)");
    if (!removeTree(workspace, error)) return false;
  }
  ChildSpec child;
  child.argv = {"git", "-c", "protocol.ext.allow=never", "clone"};
  if (!spec.branch.empty()) {
    child.argv.push_back("--branch");
    child.argv.push_back(spec.branch);
  }
  child.argv.push_back("--");
  child.argv.push_back(spec.repository);
  child.argv.push_back(workspace);
  child.environment = {"GIT_TERMINAL_PROMPT=0"};
  log_.note("$ " + joinArgv(child.argv));
  std::vector<Started> commands(1);
  commands[0].source = "git";
  commands[0].pid = processes_.spawn(child, "git", commands[0].pump, commands[0].error);
  if (commands[0].pid < 0) {
    error = "git clone could not start: " + commands[0].error;
    return false;
  }
  waitAll(commands, timeouts_.clone_ms);
  const Started& clone = commands[0];
  if (clone.outcome == RunOutcome::kCancelled) {
    error = "git clone cancelled";
    return false;
  }
  if (clone.outcome == RunOutcome::kTimedOut) {
    error = "git clone timed out after " + durationText(timeouts_.clone_ms);
    return false;
  }
  if (!(clone.status.exited && clone.status.code == 0)) {
    std::string tail = clone.pump ? clone.pump->recentOutput(3) : "";
    error = "git clone failed: " + clone.status.text() + (tail.empty() ? "" : ": " + tail);
    return false;
  }
  log_.note("cloned " + spec.repository + " into " + workspace);
  return true;
}

bool GitspaceSetup::readDevcontainer(const GitspaceSpec& spec, PreparedWorkspace& prepared,
                                     std::string& error) {
  std::vector<std::string> candidates;
  if (!spec.devcontainer_path.empty()) {
    candidates = {spec.devcontainer_path};
  } else {
    candidates = {".devcontainer/devcontainer.json", ".devcontainer.json"};
  }
  char root_buffer[PATH_MAX];
  if (!::realpath(prepared.workspace.c_str(), root_buffer)) {
    error = prepared.workspace + ": " + std::strerror(errno);
    return false;
  }
  std::string root = root_buffer;
  prepared.devcontainer = DevcontainerConfig{};
  prepared.devcontainer_file.clear();
  for (const std::string& candidate : candidates) {
    std::string path = prepared.workspace + "/" + candidate;
    if (!pathExists(path)) continue;
    std::string resolved;
    if (!resolveInside(root, path, resolved)) {
      error = candidate + ": must be a file inside the repository";
      return false;
    }
    std::string text;
    std::string read_error;
    if (!readSmallFile(resolved, kMaxDevcontainerSize + 1, text, read_error)) {
      error = candidate + ": " + read_error;
      return false;
    }
    DevcontainerError parse_error;
    if (!parseDevcontainer(text, prepared.devcontainer, parse_error)) {
      error = candidate + ": " + parse_error.text();
      return false;
    }
    prepared.devcontainer_file = candidate;
    break;
  }
  if (prepared.devcontainer_file.empty()) {
    if (!spec.devcontainer_path.empty()) {
      error = spec.devcontainer_path + ": not found in the repository";
      return false;
    }
    log_.note(
        "no devcontainer.json (looked for .devcontainer/devcontainer.json and "
        ".devcontainer.json): using the defaults");
    return true;
  }
  const DevcontainerConfig& devcontainer = prepared.devcontainer;
  log_.note("using " + prepared.devcontainer_file +
            (devcontainer.name.empty() ? "" : " (\"" + devcontainer.name + "\")"));
  if (!devcontainer.image.empty()) {
    log_.note("image " + devcontainer.image +
              " is recorded, not pulled: this driver runs the host's userland");
  }
  for (const std::string& field : devcontainer.ignored_fields) {
    log_.note("devcontainer.json field \"" + field + "\" is not supported here and is ignored");
  }
  if (!devcontainer.container_env.empty()) {
    std::string names;
    for (const auto& [name, value] : devcontainer.container_env) {
      names += (names.empty() ? "" : ", ") + name;
    }
    log_.note("containerEnv: " + names);
  }
  if (!devcontainer.forward_ports.empty()) {
    std::string ports;
    for (const ForwardPort& port : devcontainer.forward_ports) {
      ports += (ports.empty() ? "" : ", ") + std::to_string(port.port);
    }
    log_.note("forwardPorts: " + ports);
  }
  return true;
}

bool GitspaceSetup::chooseUser(const GitspaceSpec& spec, PreparedWorkspace& prepared,
                               std::string& error) {
  std::string requested = "root";
  std::string origin = "the default";
  if (!prepared.devcontainer.remote_user.empty()) {
    requested = prepared.devcontainer.remote_user;
    origin = "remoteUser";
  } else if (!spec.user.name.empty()) {
    requested = spec.user.name;
    origin = "the spec's user.name";
  }
  prepared.user_warning.clear();
  passwd entry{};
  passwd* found = nullptr;
  std::vector<char> buffer(16 * 1024);
  ::getpwnam_r(requested.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (!found) {
    prepared.user_warning =
        "user \"" + requested + "\" (" + origin + ") does not exist on this host; running as root";
    log_.note(prepared.user_warning);
    ::getpwnam_r("root", &entry, buffer.data(), buffer.size(), &found);
    if (!found) {
      error = "user root does not exist on this host";
      return false;
    }
  }
  RunAs user;
  user.name = found->pw_name;
  user.uid = found->pw_uid;
  user.gid = found->pw_gid;
  user.switch_user = ::geteuid() == 0 && user.uid != 0;
  if (::geteuid() != 0 && user.uid != ::geteuid()) {
    // An agent that is not root cannot become anyone else.
    passwd* self = ::getpwuid(::geteuid());
    prepared.user_warning = "the agent does not run as root and cannot switch to \"" + user.name +
                            "\"; running as its own user";
    log_.note(prepared.user_warning);
    user.name = self ? self->pw_name : std::to_string(::geteuid());
    user.uid = ::geteuid();
    user.gid = ::getegid();
    user.switch_user = false;
  }
  user.home = homePath(config_, user.name);
  log_.note("user " + user.name + " (uid " + std::to_string(user.uid) + "), HOME " + user.home);
  if (!makeDirectories(config_.disk + "/home", 0755, error)) return false;
  if (::mkdir(user.home.c_str(), 0700) != 0 && errno != EEXIST) {
    error = user.home + ": " + std::strerror(errno);
    return false;
  }
  if (::geteuid() == 0) {
    if (::lchown(user.home.c_str(), user.uid, user.gid) != 0) {
      error = user.home + ": chown: " + std::strerror(errno);
      return false;
    }
    if (user.uid != 0) {
      // The user must be able to walk from the disk to its clone and home.
      struct stat info {};
      if (::stat(config_.disk.c_str(), &info) == 0 && (info.st_mode & S_IXOTH) == 0) {
        ::chmod(config_.disk.c_str(), (info.st_mode & 07777) | S_IXOTH);
      }
      ::chmod((config_.disk + "/workspace").c_str(), 0755);
      // Handed over once after the clone (the clone's root says whether it
      // was): a start need not walk a large tree again.
      struct stat workspace {};
      bool handed_over = ::stat(prepared.workspace.c_str(), &workspace) == 0 &&
                         workspace.st_uid == user.uid && workspace.st_gid == user.gid;
      if (!handed_over) {
        log_.note("handing " + prepared.workspace + " to " + user.name);
        if (!chownTree(prepared.workspace, user.uid, user.gid, error)) return false;
      }
    }
  }
  prepared.user = user;
  return true;
}

void GitspaceSetup::buildEnvironment(const GitspaceSpec& spec, const std::string& gitspace_id,
                                     PreparedWorkspace& prepared) {
  std::map<std::string, std::string> variables = {
      {"PATH", kDefaultPath}, {"HOME", prepared.user.home}, {"USER", prepared.user.name},
      {"LANG", "C.UTF-8"},    {"SHELL", "/bin/sh"},
  };
  for (const auto& [name, value] : prepared.devcontainer.container_env) variables[name] = value;
  for (const auto& [name, value] : spec.env) variables[name] = value;
  variables["GITSPACE_ID"] = gitspace_id;
  variables["GITSPACE_WORKSPACE"] = prepared.workspace;
  prepared.environment.clear();
  for (const auto& [name, value] : variables) prepared.environment.push_back(name + "=" + value);
}

ChildSpec GitspaceSetup::commandSpec(std::vector<std::string> argv,
                                     const PreparedWorkspace& prepared) const {
  std::string path_value = kDefaultPath;
  for (const std::string& entry : prepared.environment) {
    if (entry.starts_with("PATH=")) path_value = entry.substr(5);
  }
  if (!argv.empty()) {
    std::string found = findInPath(argv[0], path_value);
    if (!found.empty()) argv[0] = found;
  }
  ChildSpec child;
  child.argv = std::move(argv);
  child.environment = prepared.environment;
  child.inherit_environment = false;
  child.working_directory = prepared.workspace;
  if (prepared.user.switch_user) {
    child.uid = static_cast<int>(prepared.user.uid);
    child.gid = static_cast<int>(prepared.user.gid);
  }
  return child;
}

bool GitspaceSetup::runLifecycleCommand(const std::string& name, const LifecycleCommand& command,
                                        const PreparedWorkspace& prepared, std::string& error) {
  if (command.empty()) {
    log_.note(name + ": none");
    return true;
  }
  std::vector<Started> commands;
  for (const LifecycleCommand::Step& step : command.steps) {
    Started started;
    started.source = step.name.empty() ? name : name + "." + step.name;
    std::vector<std::string> argv =
        step.usesShell() ? std::vector<std::string>{"/bin/sh", "-c", step.shell_line} : step.argv;
    log_.note(started.source + ": $ " + (step.usesShell() ? step.shell_line : joinArgv(argv)));
    started.pid =
        processes_.spawn(commandSpec(argv, prepared), started.source, started.pump, started.error);
    if (started.pid < 0) {
      started.status.exited = true;
      started.outcome = RunOutcome::kNotStarted;
    }
    commands.push_back(std::move(started));
  }
  waitAll(commands, timeouts_.lifecycle_command_ms);
  for (const Started& started : commands) {
    std::string who = command.parallel ? " (" + started.source + ")" : "";
    switch (started.outcome) {
      case RunOutcome::kNotStarted:
        error = name + " failed" + who + ": could not start: " + started.error;
        return false;
      case RunOutcome::kCancelled: error = name + " cancelled"; return false;
      case RunOutcome::kTimedOut:
        error = name + " failed" + who + ": timed out after " +
                durationText(timeouts_.lifecycle_command_ms);
        return false;
      case RunOutcome::kExited:
        if (!(started.status.exited && started.status.code == 0)) {
          error = name + " failed" + who + ": " + started.status.text();
          return false;
        }
        break;
    }
  }
  log_.note(name + ": done");
  return true;
}

}  // namespace spacegate
