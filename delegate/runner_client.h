// RunnerClient: the runner's API (docs/runner.md) as the delegate uses it:
// a machine for a Gitspace, its state, stop, delete, and the Gitspace's
// machine when the task does not name one. Each method is one call; the
// task code decides what to retry.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "delegate/api_call.h"
#include "delegate/delegate_config.h"

namespace spacegate {

// The fields of a runner machine the delegate needs.
struct MachineView {
  std::string id;
  std::string pool;
  std::string gitspace_id;
  std::string state;  // provisioning, warm, in_use, stopped, terminating, lost
  bool ready = false;
  bool healthy = false;
  std::string address;
  int agent_port = 0;
  int ide_port = 0;
  int ssh_port = 0;
  std::string source;  // POST /v1/machines: warm, cold, booting, existing, woken
  std::string reason;  // the runner's reason (lost, last failure) or the health reason

  static MachineView fromJson(const nlohmann::json& body);
  // "m-1 (in_use, not ready: agent did not answer)"
  std::string describe() const;
};

class RunnerClient {
 public:
  RunnerClient(ServiceEndpoint endpoint, uint64_t timeout_ms)
      : endpoint_(std::move(endpoint)), timeout_ms_(timeout_ms) {}

  // POST /v1/machines {"pool", "gitspace_id"}: idempotent (the Gitspace's
  // machine again, a stopped one woken). 429 at the pool's max.
  ApiReply acquire(const std::string& pool, const std::string& gitspace_id,
                   MachineView& machine) const;
  ApiReply get(const std::string& machine_id, MachineView& machine) const;
  ApiReply start(const std::string& machine_id) const;
  ApiReply stop(const std::string& machine_id) const;
  // DELETE /v1/machines/{id} (storage not kept).
  ApiReply remove(const std::string& machine_id) const;
  // The Gitspace's machine (not lost or terminating) from GET /v1/machines;
  // status 404 when it has none.
  ApiReply findForGitspace(const std::string& gitspace_id, MachineView& machine) const;

 private:
  ApiReply call(const std::string& method, const std::string& target,
                const nlohmann::json& body = nullptr) const;

  ServiceEndpoint endpoint_;
  uint64_t timeout_ms_;
};

}  // namespace spacegate
