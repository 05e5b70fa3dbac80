#include "delegate/control_plane_client.h"

namespace spacegate {

ApiReply ControlPlaneClient::call(const std::string& method, const std::string& target,
                                  const nlohmann::json& body, uint64_t timeout_ms) const {
  ServiceClient client = makeServiceClient(endpoint_, timeout_ms);
  // The route table of a large deployment is big; nothing else is.
  client.setMaxReplySize(512u << 20);
  std::string delegate_id;
  {
    std::lock_guard<std::mutex> lock(delegate_id_mutex_);
    delegate_id = delegate_id_;
  }
  if (!delegate_id.empty() && target != "/api/v1/delegate/register") {
    client.addHeader("X-Spacegate-Delegate", delegate_id);
  }
  return callApi(client, method, target, body);
}

bool ControlPlaneClient::registerDelegate(const std::string& name,
                                          const std::vector<std::string>& selectors,
                                          std::string& delegate_id, std::string& error) const {
  nlohmann::json body = {{"name", name}, {"version", kDelegateVersion}, {"selectors", selectors}};
  ApiReply reply = call("POST", "/api/v1/delegate/register", body, timeout_ms_);
  if (!reply.ok()) {
    error = reply.reason();
    return false;
  }
  delegate_id.clear();
  if (reply.body.is_object() && reply.body.contains("delegate_id")) {
    const nlohmann::json& id = reply.body["delegate_id"];
    delegate_id = id.is_string() ? id.get<std::string>() : id.dump();
  }
  return true;
}

ControlPlaneClient::PollOutcome ControlPlaneClient::pollTask(int wait_s, nlohmann::json& task,
                                                             int& status,
                                                             std::string& error) const {
  // The control plane holds the request up to `wait` seconds: the deadline
  // for its first reply byte must be longer than that.
  uint64_t timeout = static_cast<uint64_t>(wait_s) * 1000 + timeout_ms_;
  ApiReply reply =
      call("GET", "/api/v1/delegate/tasks?wait=" + std::to_string(wait_s), nullptr, timeout);
  status = reply.status;
  if (reply.status == 204) return PollOutcome::kNoTask;
  if (reply.status == 200) {
    if (!reply.body.is_object()) {
      error = "the task is not a JSON object: " + reply.text.substr(0, 200);
      return PollOutcome::kFailed;
    }
    task = std::move(reply.body);
    return PollOutcome::kTask;
  }
  error = reply.reason();
  return PollOutcome::kFailed;
}

TaskPostOutcome ControlPlaneClient::post(const std::string& target, const nlohmann::json& body,
                                         std::string& error) const {
  ApiReply reply = call("POST", target, body, timeout_ms_);
  if (reply.ok()) return TaskPostOutcome::kAccepted;
  error = reply.reason();
  if (reply.status == 409) return TaskPostOutcome::kLeaseLost;
  if (reply.status >= 400 && reply.status < 500 && reply.status != 408 && reply.status != 429) {
    return TaskPostOutcome::kRefused;
  }
  return TaskPostOutcome::kFailed;
}

TaskPostOutcome ControlPlaneClient::postEvents(const std::string& task_id,
                                               const nlohmann::json& events,
                                               std::string& error) const {
  return post("/api/v1/delegate/tasks/" + task_id + "/events", {{"events", events}}, error);
}

TaskPostOutcome ControlPlaneClient::postResult(const std::string& task_id,
                                               const nlohmann::json& result,
                                               std::string& error) const {
  return post("/api/v1/delegate/tasks/" + task_id + "/result", result, error);
}

bool ControlPlaneClient::fetchRoutes(nlohmann::json& table, std::string& error) const {
  ApiReply reply = call("GET", "/api/v1/delegate/routes", nullptr, timeout_ms_);
  if (reply.status != 200) {
    error = reply.reason();
    return false;
  }
  if (!reply.body.is_object() || !reply.body.contains("version") ||
      !reply.body["version"].is_number_integer() || !reply.body.contains("routes") ||
      !reply.body["routes"].is_array()) {
    error =
        "the route table is not {\"version\": N, \"routes\": [...]}: " + reply.text.substr(0, 200);
    return false;
  }
  table = std::move(reply.body);
  return true;
}

bool ControlPlaneClient::postReport(const nlohmann::json& report, std::string& error) const {
  ApiReply reply = call("POST", "/api/v1/delegate/report", report, timeout_ms_);
  if (!reply.ok()) {
    error = reply.reason();
    return false;
  }
  return true;
}

}  // namespace spacegate
