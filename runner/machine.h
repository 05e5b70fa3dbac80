// A machine as the runner knows it: its lifecycle state, which Gitspace it
// serves, where its agent answers, and how healthy it was at the last check.
#pragma once

#include <cstdint>
#include <string>

namespace spacegate {

enum class MachineState {
  kProvisioning,  // being created and booted; not yet answering
  kWarm,          // booted, agent healthy, in the pool waiting for a Gitspace
  kInUse,         // serving its Gitspace (check `ready` before sending work)
  kStopped,       // processes stopped; network and disk kept for a start
  kTerminating,   // being destroyed; gone from the database when done
  kLost,          // the driver no longer has it (reason says why); kept for the record
};

const char* machineStateName(MachineState state);
bool parseMachineState(const std::string& text, MachineState& state);

struct MachineRecord {
  std::string id;  // "m-" + 8 hex digits
  std::string pool;
  std::string gitspace_id;  // empty while warm
  MachineState state = MachineState::kProvisioning;
  int slot = 0;         // index in the pool's network (address, ports)
  std::string address;  // where the agent, IDE and ports answer
  int agent_port = 0;
  int ide_port = 0;
  int ssh_port = 0;
  std::string runner_secret;  // bearer secret for the agent's runner-only calls
  std::string reason;         // why it is lost, or the last failure
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;
  bool keep_storage_on_delete = false;

  // Not stored: learnt from health checks since the runner started.
  int64_t ready_at_ms = 0;  // when it last became ready (0: not ready)
  bool healthy = false;
  bool ready = false;  // healthy, and the agent serves this record's Gitspace
  std::string health_reason;
  int failed_checks = 0;
  int64_t checked_at_ms = 0;
  bool busy = false;      // an operation (create, start, stop, destroy, check) runs now
  bool checking = false;  // ... and it is a health check (a warm machine can still be taken)
};

int64_t wallClockMs();

}  // namespace spacegate
