// Driver: how the runner makes machines. The runner owns the lifecycle
// (pools, states, the database, health); a driver only acts on one machine
// at a time and reports what exists. A new kind of machine (qemu, a cloud)
// is one class implementing this, plus its tests. Calls may block (they run
// on the runner's operation threads) and must be safe to repeat: after a
// crash the runner may destroy a machine that was half created.
#pragma once

#include <string>
#include <vector>

#include "runner/agent/agent_config.h"
#include "runner/machine.h"

namespace spacegate {

// What a machine gets at creation.
struct MachineSpec {
  std::string id;
  std::string pool;
  std::string gitspace_id;  // empty for a warm machine
  int slot = 0;
  std::string runner_secret;
  std::vector<std::pair<std::string, std::string>> control_plane_keys;
  // A disk kept from an earlier machine of this Gitspace, moved in at
  // create (empty: a fresh disk).
  std::string kept_disk;
};

// Where a created machine answers.
struct MachineEndpoint {
  std::string address;
  int agent_port = 0;
  int ide_port = 0;
  int ssh_port = 0;
};

// A machine the driver found on the host.
struct DriverMachine {
  std::string id;
  bool running = false;  // its agent process (first process) is alive
};

class Driver {
 public:
  virtual ~Driver() = default;

  // Called once before anything else (networks, folders). False with a reason.
  virtual bool prepare(std::string& error) = 0;
  // How machines are isolated, in words (shown in GET /v1/pools and logs).
  virtual std::string isolation() const = 0;
  // The endpoint a machine in `slot` will have (known before it boots).
  virtual MachineEndpoint endpointFor(int slot) const = 0;

  // Makes the machine and boots its agent. Does not wait for the agent to
  // answer: the runner's health checks decide when it is ready.
  virtual bool create(const MachineSpec& spec, std::string& error) = 0;
  // Boots a stopped machine again (same network, same disk).
  virtual bool start(const MachineSpec& spec, std::string& error) = 0;
  // Stops every process of the machine; its network and disk stay.
  virtual bool stop(const std::string& id, std::string& error) = 0;
  // Removes everything of the machine. With `keep_disk_as` set, its disk
  // is moved there instead of deleted. Succeeds when nothing is left,
  // including when there was nothing to begin with.
  virtual bool destroy(const std::string& id, const std::string& keep_disk_as,
                       std::string& error) = 0;
  // Every machine of this driver on the host (for reconciliation).
  virtual std::vector<DriverMachine> list() = 0;
  // True when the machine's first process is alive; `reason` when not.
  virtual bool processAlive(const std::string& id, std::string& reason) = 0;
  // The tail of the machine's boot log (its agent's output).
  virtual std::string bootLog(const std::string& id, size_t max_bytes) = 0;
};

}  // namespace spacegate
