// ProcessDriver: the embedded default. A machine is a sandbox on this host:
// its own network namespace on the pool's bridge (MachineNetwork), its own
// mount, PID, UTS and IPC namespaces, a control group with its limits
// (ResourceLimits), a folder whose disk/ holds the workspace, and the agent
// as its first process. Where namespaces are not allowed (not root, or
// `sandbox: processes`), a machine is a plain child process tree on
// loopback ports of its own, and isolation() says so.
//
// On the host, a machine is the folder <state>/pools/<pool>/machines/<id>/:
//   agent.json   the agent's config (0600)
//   boot.log     the agent's own output
//   machine.pid  the pid of the machine's first host process
//   disk/        the machine's disk (workspace, home, agent state)
// The folder is made first and removed last, so that whatever a crash
// leaves behind is found by list() and removed by destroy().
#pragma once

#include <mutex>
#include <string>

#include "runner/driver.h"
#include "runner/drivers/process/machine_network.h"
#include "runner/drivers/process/resource_limits.h"
#include "runner/runner_config.h"

namespace spacegate {

class ProcessDriver : public Driver {
 public:
  ProcessDriver(const PoolConfig& pool, std::string state_dir, std::string agent_binary,
                std::string code_server);

  bool prepare(std::string& error) override;
  std::string isolation() const override;
  MachineEndpoint endpointFor(int slot) const override;
  bool create(const MachineSpec& spec, std::string& error) override;
  bool start(const MachineSpec& spec, std::string& error) override;
  bool stop(const std::string& id, std::string& error) override;
  bool destroy(const std::string& id, const std::string& keep_disk_as, std::string& error) override;
  std::vector<DriverMachine> list() override;
  bool processAlive(const std::string& id, std::string& reason) override;
  std::string bootLog(const std::string& id, size_t max_bytes) override;

  bool usesNamespaces() const { return namespaces_; }
  std::string machineFolder(const std::string& id) const;

 private:
  bool boot(const MachineSpec& spec, std::string& error);
  // Logs a warning when the pool's loopback ports lie in the kernel's
  // ephemeral port range.
  void warnIfPortsAreEphemeral() const;
  // The machine's first host process, if it is alive (0 otherwise).
  pid_t livePid(const std::string& id) const;

  PoolConfig pool_;
  std::string state_dir_;
  std::string agent_binary_;
  std::string code_server_;
  MachineNetwork network_;
  ResourceLimits limits_;
  bool namespaces_ = false;
  std::string fallback_reason_;
};

}  // namespace spacegate
