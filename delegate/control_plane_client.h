// ControlPlaneClient: the delegate API of the control plane
// (docs/control-plane.md): register, the long poll for tasks, events and
// results, the desired route table, and the gateways' report. One call per
// method; retrying is the caller's business, because only the caller knows
// whether waiting is worth it (a result: yes; a report: the next one comes).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "delegate/api_call.h"
#include "delegate/delegate_config.h"

namespace spacegate {

// What became of a post about a task.
enum class TaskPostOutcome {
  kAccepted,   // 2xx
  kLeaseLost,  // 409: the task is no longer leased to this delegate
  kRefused,    // another 4xx: retrying the same body will not help
  kFailed,     // not reached, or 5xx: worth another try
};

class ControlPlaneClient {
 public:
  ControlPlaneClient(ServiceEndpoint endpoint, uint64_t timeout_ms)
      : endpoint_(std::move(endpoint)), timeout_ms_(timeout_ms) {}

  // POST /api/v1/delegate/register. The control plane's delegate id, or
  // false with a reason.
  bool registerDelegate(const std::string& name, const std::vector<std::string>& selectors,
                        std::string& delegate_id, std::string& error) const;

  enum class PollOutcome { kTask, kNoTask, kFailed };
  // GET /api/v1/delegate/tasks?wait=N: a task (kTask), none within `wait`
  // seconds (kNoTask), or kFailed with a reason (`status` is the HTTP status,
  // 0 when not reached).
  PollOutcome pollTask(int wait_s, nlohmann::json& task, int& status, std::string& error) const;

  // POST .../tasks/{id}/events {"events":[...]}.
  TaskPostOutcome postEvents(const std::string& task_id, const nlohmann::json& events,
                             std::string& error) const;
  // POST .../tasks/{id}/result.
  TaskPostOutcome postResult(const std::string& task_id, const nlohmann::json& result,
                             std::string& error) const;

  // GET /api/v1/delegate/routes: {"version", "routes"}.
  bool fetchRoutes(nlohmann::json& table, std::string& error) const;

  // POST /api/v1/delegate/report.
  bool postReport(const nlohmann::json& report, std::string& error) const;

  const std::string& url() const { return endpoint_.url; }
  // Sent as X-Spacegate-Delegate on every call after registration, so the
  // control plane tells delegates apart. Thread-safe (a re-registration may
  // happen while tasks run).
  void setDelegateId(std::string delegate_id) {
    std::lock_guard<std::mutex> lock(delegate_id_mutex_);
    delegate_id_ = std::move(delegate_id);
  }

 private:
  ApiReply call(const std::string& method, const std::string& target, const nlohmann::json& body,
                uint64_t timeout_ms) const;
  TaskPostOutcome post(const std::string& target, const nlohmann::json& body,
                       std::string& error) const;

  ServiceEndpoint endpoint_;
  uint64_t timeout_ms_;
  mutable std::mutex delegate_id_mutex_;
  std::string delegate_id_;
};

}  // namespace spacegate
