#include "runner/process/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

extern char** environ;

namespace spacegate {

std::string ExitStatus::text() const {
  if (!exited) return "running";
  if (signal != 0) return "killed by signal " + std::to_string(signal);
  return "exit " + std::to_string(code);
}

ChildReaper& ChildReaper::instance() {
  // Never destroyed: the reaper thread runs for the life of the process.
  static ChildReaper* reaper = new ChildReaper();
  return *reaper;
}

ChildReaper::ChildReaper() {
  thread_ = std::thread([this] { reapLoop(); });
  thread_.detach();
}

void ChildReaper::reapLoop() {
  while (true) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      // No children at all: sleep until spawn() makes one (orphans that a
      // PID 1 inherits arrive as children too, so poll now and then).
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait_for(lock, std::chrono::milliseconds(200), [this] { return running_ > 0; });
      continue;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = children_.find(pid);
    // Not ours: an orphan inherited as PID 1. Reaped; nothing to record.
    if (found == children_.end() || found->second.exited) continue;
    ExitStatus& exit = found->second;
    exit.exited = true;
    if (WIFEXITED(status)) {
      exit.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      exit.signal = WTERMSIG(status);
    }
    --running_;
    changed_.notify_all();
  }
}

pid_t ChildReaper::spawn(const ChildSpec& spec, std::string& error) {
  if (spec.argv.empty()) {
    error = "no command";
    return -1;
  }
  // Everything the child needs is prepared before fork(): between fork and
  // exec a multithreaded process may only make async-signal-safe calls.
  std::vector<char*> argv;
  for (const std::string& argument : spec.argv) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> environment_storage;
  if (spec.inherit_environment) {
    for (char** entry = environ; *entry; ++entry) {
      std::string_view text(*entry);
      std::string_view name = text.substr(0, text.find('='));
      bool replaced = false;
      for (const std::string& added : spec.environment) {
        if (added.size() > name.size() && added.compare(0, name.size(), name) == 0 &&
            added[name.size()] == '=') {
          replaced = true;
          break;
        }
      }
      if (!replaced) environment_storage.emplace_back(text);
    }
  }
  for (const std::string& added : spec.environment) environment_storage.push_back(added);
  std::vector<char*> environment;
  for (std::string& entry : environment_storage) environment.push_back(entry.data());
  environment.push_back(nullptr);
  // execvpe searches the caller's PATH (this process's environ), not the
  // child's environment.
  std::string program = spec.argv[0];
  std::vector<gid_t> groups;
  if (spec.uid >= 0) {
    passwd* entry = ::getpwuid(static_cast<uid_t>(spec.uid));
    if (entry) {
      int count = 64;
      groups.resize(static_cast<size_t>(count));
      if (::getgrouplist(entry->pw_name,
                         spec.gid >= 0 ? static_cast<gid_t>(spec.gid) : entry->pw_gid,
                         groups.data(), &count) < 0) {
        groups.resize(static_cast<size_t>(count));
        ::getgrouplist(entry->pw_name, spec.gid >= 0 ? static_cast<gid_t>(spec.gid) : entry->pw_gid,
                       groups.data(), &count);
      }
      groups.resize(static_cast<size_t>(count));
    }
  }
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return -1;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  pid_t pid = ::fork();
  if (pid < 0) {
    error = std::string("fork: ") + std::strerror(errno);
    ::close(report[0]);
    ::close(report[1]);
    return -1;
  }
  if (pid == 0) {
    // The child. Report the failing step's errno through the pipe.
    auto fail = [&](int step) {
      int codes[2] = {step, errno};
      ssize_t ignored = ::write(report[1], codes, sizeof codes);
      (void)ignored;
      ::_exit(127);
    };
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int signal_number : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) {
      ::signal(signal_number, SIG_DFL);
    }
    if (spec.new_session && ::setsid() < 0) fail(1);
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd < 0) fail(2);
    ::dup2(null_fd, 0);
    ::dup2(spec.stdout_fd >= 0 ? spec.stdout_fd : null_fd, 1);
    ::dup2(spec.stderr_fd >= 0 ? spec.stderr_fd : null_fd, 2);
    if (spec.max_open_files > 0) {
      rlimit limit{spec.max_open_files, spec.max_open_files};
      ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    if (!spec.working_directory.empty() && ::chdir(spec.working_directory.c_str()) != 0) fail(3);
    if (spec.uid >= 0) {
      gid_t gid = spec.gid >= 0 ? static_cast<gid_t>(spec.gid) : static_cast<gid_t>(spec.uid);
      if (!groups.empty()) gid = spec.gid >= 0 ? static_cast<gid_t>(spec.gid) : groups[0];
      if (::setgroups(groups.size(), groups.data()) != 0) fail(4);
      if (::setgid(gid) != 0) fail(4);
      if (::setuid(static_cast<uid_t>(spec.uid)) != 0) fail(5);
    }
    ::execvpe(program.c_str(), argv.data(), environment.data());
    fail(6);
  }
  children_[pid] = ExitStatus{};
  ++running_;
  changed_.notify_all();
  lock.unlock();
  ::close(report[1]);
  int codes[2] = {0, 0};
  ssize_t got;
  do {
    got = ::read(report[0], codes, sizeof codes);
  } while (got < 0 && errno == EINTR);
  ::close(report[0]);
  if (got == sizeof codes) {
    static const char* const kSteps[] = {"",       "setsid", "open /dev/null", "chdir", "setgid",
                                         "setuid", "exec"};
    error = spec.argv[0] + ": " + kSteps[codes[0]] + ": " + std::strerror(codes[1]);
    if (codes[0] == 3) error = spec.working_directory + ": " + std::strerror(codes[1]);
    ExitStatus ignored;
    wait(pid, ignored, -1);
    return -1;
  }
  return pid;
}

bool ChildReaper::wait(pid_t pid, ExitStatus& status, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto done = [&] {
    auto found = children_.find(pid);
    return found == children_.end() || found->second.exited;
  };
  if (timeout_ms < 0) {
    changed_.wait(lock, done);
  } else if (!changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), done)) {
    return false;
  }
  auto found = children_.find(pid);
  if (found == children_.end()) {
    status = ExitStatus{true, -1, 0};
    return true;
  }
  status = found->second;
  children_.erase(found);
  return true;
}

bool ChildReaper::poll(pid_t pid, ExitStatus& status) {
  return wait(pid, status, 0);
}

void ChildReaper::signalGroup(pid_t pid, int signal) {
  if (pid <= 0) return;
  ::kill(-pid, signal);
  ::kill(pid, signal);
}

void ChildReaper::terminate(pid_t pid, int grace_ms) {
  ExitStatus status;
  signalGroup(pid, SIGTERM);
  if (wait(pid, status, grace_ms)) {
    // The leader is gone; anything left in its group goes too.
    ::kill(-pid, SIGKILL);
    return;
  }
  signalGroup(pid, SIGKILL);
  wait(pid, status, -1);
}

bool runCommand(const ChildSpec& spec, int timeout_ms, CommandResult& result, std::string& error,
                size_t max_output) {
  result = CommandResult{};
  int output[2];
  if (::pipe2(output, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  ChildSpec with_output = spec;
  with_output.stdout_fd = output[1];
  with_output.stderr_fd = output[1];
  pid_t pid = ChildReaper::instance().spawn(with_output, error);
  ::close(output[1]);
  if (pid < 0) {
    ::close(output[0]);
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buffer[16 * 1024];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd entry{output[0], POLLIN, 0};
    int ready = ::poll(&entry, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    ssize_t got = ::read(output[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: every writer (the child and its children) closed it
    size_t room = max_output - std::min(max_output, result.output.size());
    result.output.append(buffer, std::min(room, static_cast<size_t>(got)));
  }
  ::close(output[0]);
  if (result.timed_out) {
    ChildReaper::signalGroup(pid, SIGKILL);
  }
  ChildReaper::instance().wait(pid, result.status, -1);
  return true;
}

bool runCommand(const std::vector<std::string>& argv, int timeout_ms, std::string& error) {
  ChildSpec spec;
  spec.argv = argv;
  CommandResult result;
  if (!runCommand(spec, timeout_ms, result, error)) return false;
  if (result.ok()) return true;
  std::string command;
  for (const std::string& argument : argv) command += (command.empty() ? "" : " ") + argument;
  while (!result.output.empty() && (result.output.back() == '\n' || result.output.back() == '\r')) {
    result.output.pop_back();
  }
  error = command + ": " + (result.timed_out ? "timed out" : result.status.text()) +
          (result.output.empty() ? "" : ": " + result.output);
  return false;
}

}  // namespace spacegate
