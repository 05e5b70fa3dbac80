// /proc/<pid>/stat is "pid (comm) state ppid ...", where comm may hold
// spaces and parentheses: the fields after it are found from the last ')'.
#include "runner/agent/gitspace_processes.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

namespace spacegate {

namespace {

bool readProcStat(pid_t pid, char& state, pid_t& parent) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[1024];
  ssize_t got = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (got <= 0) return false;
  std::string_view text(buffer, static_cast<size_t>(got));
  size_t close_paren = text.rfind(')');
  if (close_paren == std::string_view::npos || close_paren + 4 >= text.size()) return false;
  std::string_view rest = text.substr(close_paren + 2);
  state = rest[0];
  parent = static_cast<pid_t>(std::strtol(std::string(rest.substr(2, 20)).c_str(), nullptr, 10));
  return true;
}

bool anyAlive(const std::vector<pid_t>& groups, pid_t self) {
  for (pid_t group : groups) {
    if (processGroupExists(group)) return true;
  }
  return !descendantProcesses(self).empty();
}

}  // namespace

std::vector<pid_t> descendantProcesses(pid_t root) {
  std::multimap<pid_t, pid_t> children;  // parent → child, live processes only
  if (DIR* proc = ::opendir("/proc")) {
    while (dirent* entry = ::readdir(proc)) {
      char* end = nullptr;
      long pid = std::strtol(entry->d_name, &end, 10);
      if (pid <= 0 || *end != '\0') continue;
      char state = 0;
      pid_t parent = 0;
      if (!readProcStat(static_cast<pid_t>(pid), state, parent)) continue;
      if (state == 'Z' || state == 'X') continue;
      children.emplace(parent, static_cast<pid_t>(pid));
    }
    ::closedir(proc);
  }
  std::vector<pid_t> found;
  std::vector<pid_t> pending = {root};
  while (!pending.empty()) {
    pid_t parent = pending.back();
    pending.pop_back();
    auto [begin, end] = children.equal_range(parent);
    for (auto it = begin; it != end; ++it) {
      // Threads of this process show up only under /proc/<pid>/task, so a
      // process is never its own child here; the check guards odd /proc views.
      if (it->second == root) continue;
      found.push_back(it->second);
      pending.push_back(it->second);
    }
  }
  return found;
}

uint64_t processStartTime(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buffer[1024];
  ssize_t got = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (got <= 0) return 0;
  std::string_view text(buffer, static_cast<size_t>(got));
  size_t close_paren = text.rfind(')');
  if (close_paren == std::string_view::npos) return 0;
  // After "pid (comm)": field 3 (state) onwards; the start time is field 22.
  std::string rest(text.substr(close_paren + 2));
  char* cursor = rest.data();
  for (int field = 3; field < 22; ++field) {
    cursor = std::strchr(cursor, ' ');
    if (!cursor) return 0;
    ++cursor;
  }
  return std::strtoull(cursor, nullptr, 10);
}

bool stopLeftoverGroup(pid_t leader, uint64_t start_time, int grace_ms) {
  if (leader <= 1 || start_time == 0 || processStartTime(leader) != start_time) return false;
  ChildReaper::signalGroup(leader, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  while (processGroupExists(leader) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (processGroupExists(leader)) ChildReaper::signalGroup(leader, SIGKILL);
  return true;
}

bool processGroupExists(pid_t group) {
  if (group <= 0) return false;
  return ::kill(-group, 0) == 0 || errno == EPERM;
}

GitspaceProcesses::~GitspaceProcesses() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& pump : pumps_) pump->stop();
}

pid_t GitspaceProcesses::spawn(ChildSpec spec, const std::string& source,
                               std::shared_ptr<OutputPump>& pump, std::string& error) {
  pump = std::make_shared<OutputPump>(log_, source);
  if (!pump->open(error)) return -1;
  spec.stdout_fd = pump->writeFd();
  spec.stderr_fd = pump->writeFd();
  spec.new_session = true;
  pid_t pid;
  {
    // Under the lock: a concurrent stopAll() either sees this group or runs
    // before it exists.
    std::lock_guard<std::mutex> lock(mutex_);
    pid = ChildReaper::instance().spawn(spec, error);
    if (pid > 0) {
      groups_.push_back(pid);
      pumps_.push_back(pump);
    }
  }
  pump->closeWriteEnd();
  if (pid < 0) pump->stop();
  return pid;
}

void GitspaceProcesses::stopAll(int grace_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  pid_t self = ::getpid();
  auto signal_all = [&](int signal_number) {
    for (pid_t group : groups_) ChildReaper::signalGroup(group, signal_number);
    // Those that left their group (once is enough: some servers read a
    // second SIGTERM as "hurry").
    for (pid_t pid : descendantProcesses(self)) {
      if (std::find(groups_.begin(), groups_.end(), ::getpgid(pid)) == groups_.end()) {
        ::kill(pid, signal_number);
      }
    }
  };
  auto wait_until_gone = [&](int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (anyAlive(groups_, self)) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  };
  if (anyAlive(groups_, self)) {
    signal_all(SIGTERM);
    // A process may fork between the scan and the signal: look again.
    if (!wait_until_gone(grace_ms)) {
      signal_all(SIGKILL);
      if (!wait_until_gone(2000)) {
        signal_all(SIGKILL);
        wait_until_gone(2000);
      }
    }
  }
  for (auto& pump : pumps_) pump->stop();
  pumps_.clear();
  groups_.clear();
}

}  // namespace spacegate
