#include "runner/drivers/process/resource_limits.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace spacegate {

namespace {

bool writeFile(const std::string& path, const std::string& value, std::string& error) {
  std::ofstream stream(path);
  if (!stream) {
    error = path + ": " + std::strerror(errno);
    return false;
  }
  stream << value;
  stream.flush();
  if (!stream) {
    error = path + ": cannot write " + value;
    return false;
  }
  return true;
}

bool writableFolder(const std::string& path) {
  std::error_code failure;
  std::filesystem::create_directories(path, failure);
  return !failure && ::access(path.c_str(), W_OK) == 0;
}

}  // namespace

void ResourceLimits::detect() {
  control_folders_.clear();
  namespace fs = std::filesystem;
  if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
    std::ifstream controllers("/sys/fs/cgroup/cgroup.controllers");
    std::string list((std::istreambuf_iterator<char>(controllers)), {});
    std::string folder = "/sys/fs/cgroup/spacegate";
    if (writableFolder(folder)) {
      std::string ignored;
      // Let the machines' groups use the controllers the host offers.
      std::string enable;
      for (const char* name : {"memory", "pids", "cpu"}) {
        if (list.find(name) != std::string::npos) enable += std::string(" +") + name;
      }
      writeFile("/sys/fs/cgroup/cgroup.subtree_control", enable, ignored);
      writeFile(folder + "/cgroup.subtree_control", enable, ignored);
      v2_ = true;
      control_folders_.push_back(folder);
      description_ = "cgroup v2 (" + enable + " )";
    } else {
      description_ = "cgroup v2 is not writable; rlimits only";
    }
    return;
  }
  std::string found;
  for (const char* name : {"memory", "pids", "cpu"}) {
    std::string root = std::string("/sys/fs/cgroup/") + name;
    if (!fs::exists(root + "/cgroup.procs")) continue;
    std::string folder = root + "/spacegate";
    if (!writableFolder(folder)) continue;
    control_folders_.push_back(folder);
    found += std::string(found.empty() ? "" : ", ") + name;
  }
  description_ =
      control_folders_.empty() ? "no writable cgroups; rlimits only" : "cgroup v1 (" + found + ")";
}

std::vector<std::string> ResourceLimits::procsFiles(const std::string& machine_id) const {
  std::vector<std::string> files;
  for (const std::string& folder : control_folders_) {
    files.push_back(folder + "/" + machine_id + "/cgroup.procs");
  }
  return files;
}

bool ResourceLimits::create(const std::string& machine_id, const MachineLimits& limits,
                            std::string& error) {
  for (const std::string& folder : control_folders_) {
    std::string group = folder + "/" + machine_id;
    std::error_code failure;
    std::filesystem::create_directories(group, failure);
    if (failure) {
      error = group + ": " + failure.message();
      return false;
    }
    bool ok = true;
    if (v2_) {
      if (limits.memory_bytes)
        ok &= writeFile(group + "/memory.max", std::to_string(limits.memory_bytes), error);
      if (limits.max_processes)
        ok &= writeFile(group + "/pids.max", std::to_string(limits.max_processes), error);
      if (limits.cpus > 0) {
        ok &= writeFile(
            group + "/cpu.max",
            std::to_string(static_cast<int64_t>(std::ceil(limits.cpus * 100000))) + " 100000",
            error);
      }
    } else if (folder.ends_with("/memory/spacegate")) {
      if (limits.memory_bytes) {
        ok &=
            writeFile(group + "/memory.limit_in_bytes", std::to_string(limits.memory_bytes), error);
      }
    } else if (folder.ends_with("/pids/spacegate")) {
      if (limits.max_processes) {
        ok &= writeFile(group + "/pids.max", std::to_string(limits.max_processes), error);
      }
    } else if (folder.ends_with("/cpu/spacegate")) {
      if (limits.cpus > 0) {
        ok &=
            writeFile(group + "/cpu.cfs_period_us", "100000", error) &&
            writeFile(group + "/cpu.cfs_quota_us",
                      std::to_string(static_cast<int64_t>(std::ceil(limits.cpus * 100000))), error);
      }
    }
    if (!ok) return false;
  }
  return true;
}

std::vector<pid_t> ResourceLimits::processes(const std::string& machine_id) const {
  std::vector<pid_t> pids;
  for (const std::string& file : procsFiles(machine_id)) {
    std::ifstream stream(file);
    pid_t pid;
    while (stream >> pid) {
      if (std::find(pids.begin(), pids.end(), pid) == pids.end()) pids.push_back(pid);
    }
  }
  return pids;
}

bool ResourceLimits::destroy(const std::string& machine_id, int timeout_ms, std::string& error) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    std::vector<pid_t> pids = processes(machine_id);
    if (pids.empty()) break;
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    if (std::chrono::steady_clock::now() > deadline) {
      error =
          "machine " + machine_id + ": " + std::to_string(pids.size()) + " processes would not die";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const std::string& folder : control_folders_) {
    std::string group = folder + "/" + machine_id;
    if (!std::filesystem::exists(group)) continue;
    // A group empties a moment after its last process is reaped.
    bool removed = false;
    for (int attempt = 0; attempt < 100 && !removed; ++attempt) {
      removed = ::rmdir(group.c_str()) == 0 || errno == ENOENT;
      if (!removed) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!removed) {
      error = group + ": " + std::strerror(errno);
      return false;
    }
  }
  return true;
}

}  // namespace spacegate
