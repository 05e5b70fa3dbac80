#include "delegate/runner_client.h"

namespace spacegate {

MachineView MachineView::fromJson(const nlohmann::json& body) {
  MachineView machine;
  if (!body.is_object()) return machine;
  auto text = [&](const char* key) {
    auto it = body.find(key);
    return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto number = [&](const char* key) {
    auto it = body.find(key);
    return it != body.end() && it->is_number_integer() ? it->get<int>() : 0;
  };
  machine.id = text("id");
  machine.pool = text("pool");
  machine.gitspace_id = text("gitspace_id");
  machine.state = text("state");
  machine.ready = body.value("ready", false);
  machine.address = text("address");
  machine.agent_port = number("agent_port");
  machine.ide_port = number("ide_port");
  machine.ssh_port = number("ssh_port");
  machine.source = text("source");
  machine.reason = text("reason");
  if (auto health = body.find("health"); health != body.end() && health->is_object()) {
    machine.healthy = health->value("healthy", false);
    if (machine.reason.empty() && health->contains("reason") && (*health)["reason"].is_string()) {
      machine.reason = (*health)["reason"].get<std::string>();
    }
  }
  return machine;
}

std::string MachineView::describe() const {
  std::string text = id + " (" + (state.empty() ? "unknown" : state);
  if (state == "in_use") text += ready ? ", ready" : ", not ready";
  if (!reason.empty()) text += ": " + reason;
  return text + ")";
}

ApiReply RunnerClient::call(const std::string& method, const std::string& target,
                            const nlohmann::json& body) const {
  return callApi(makeServiceClient(endpoint_, timeout_ms_), method, target, body);
}

ApiReply RunnerClient::acquire(const std::string& pool, const std::string& gitspace_id,
                               MachineView& machine) const {
  ApiReply reply = call("POST", "/v1/machines", {{"pool", pool}, {"gitspace_id", gitspace_id}});
  if (reply.ok()) machine = MachineView::fromJson(reply.body);
  return reply;
}

ApiReply RunnerClient::get(const std::string& machine_id, MachineView& machine) const {
  ApiReply reply = call("GET", "/v1/machines/" + machine_id);
  if (reply.ok()) machine = MachineView::fromJson(reply.body);
  return reply;
}

ApiReply RunnerClient::start(const std::string& machine_id) const {
  return call("POST", "/v1/machines/" + machine_id + "/start");
}

ApiReply RunnerClient::stop(const std::string& machine_id) const {
  return call("POST", "/v1/machines/" + machine_id + "/stop");
}

ApiReply RunnerClient::remove(const std::string& machine_id) const {
  return call("DELETE", "/v1/machines/" + machine_id);
}

ApiReply RunnerClient::findForGitspace(const std::string& gitspace_id, MachineView& machine) const {
  ApiReply reply = call("GET", "/v1/machines");
  if (!reply.ok()) return reply;
  if (reply.body.is_object() && reply.body.contains("machines") &&
      reply.body["machines"].is_array()) {
    for (const nlohmann::json& entry : reply.body["machines"]) {
      MachineView candidate = MachineView::fromJson(entry);
      if (candidate.gitspace_id != gitspace_id) continue;
      if (candidate.state == "lost" || candidate.state == "terminating") continue;
      machine = candidate;
      return reply;
    }
  }
  reply.status = 404;
  reply.body = {{"error", "the runner has no machine for " + gitspace_id}};
  reply.text.clear();
  return reply;
}

}  // namespace spacegate
