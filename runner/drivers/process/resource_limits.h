// ResourceLimits: a machine's share of the host, as a control group per
// machine ("spacegate/<machine id>") under each controller the host offers:
// memory, pids and cpu, on cgroup v2 or v1. Where there are no writable
// cgroups the driver falls back to rlimits (open files) and says so. The
// group is also how every process of a machine is found and killed: the
// agent's children lead sessions of their own, but never leave the group.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace spacegate {

struct MachineLimits {
  uint64_t memory_bytes = 0;  // 0: none
  double cpus = 0;            // 0: none
  uint64_t max_processes = 0;
};

class ResourceLimits {
 public:
  // Finds the cgroup hierarchy (v2 unified, else v1 controllers).
  void detect();
  bool available() const { return !control_folders_.empty(); }
  // "cgroup v2 (memory, pids, cpu)", "cgroup v1 (memory, pids, cpu)" or why not.
  const std::string& description() const { return description_; }

  // Creates the machine's groups and sets the limits. False with a reason.
  bool create(const std::string& machine_id, const MachineLimits& limits, std::string& error);
  // The files a process writes its pid into to join the machine's groups.
  std::vector<std::string> procsFiles(const std::string& machine_id) const;
  // Every pid in the machine's groups.
  std::vector<pid_t> processes(const std::string& machine_id) const;
  // SIGKILLs everything in the groups (repeatedly, until empty or
  // `timeout_ms`) and removes the groups. True when they are gone.
  bool destroy(const std::string& machine_id, int timeout_ms, std::string& error);

 private:
  bool v2_ = false;
  std::vector<std::string> control_folders_;  // ".../spacegate" per controller
  std::string description_ = "no cgroups";
};

}  // namespace spacegate
