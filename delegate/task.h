// A task as the control plane hands it out (docs/control-plane.md, "Delegate
// API"), checked field by field so that a task the delegate cannot carry out
// is answered with a failed result that names the field, and its result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace spacegate {

enum class TaskKind {
  kStart,   // a machine, the agent route, the Gitspace set up and running
  kStop,    // the Gitspace's processes and its machine stopped; disk kept
  kDelete,  // the machine and its disk gone
  kReset,   // like delete; the control plane then queues a fresh start
};

const char* taskKindName(TaskKind kind);

struct TaskGitspace {
  std::string id;  // "gs-<8 hex>"
  std::string name;
  std::string owner;
  std::string repository;
  std::string branch;
  std::string ide;
  std::string machine_id;  // empty before the first start
  // The owner's SSH public keys (start and reset tasks), for the agent's
  // spec as user.ssh_authorized_keys. Absent from a control plane that does
  // not send them: the spec then says nothing about keys.
  std::optional<std::vector<std::string>> ssh_authorized_keys;
};

struct TaskInfra {
  std::string gateway_domain;
  std::string url_scheme;
  int gateway_port = 0;
  std::string runner_pool;
};

struct Task {
  std::string id;
  TaskKind kind = TaskKind::kStart;
  int attempt = 1;
  TaskGitspace gitspace;
  TaskInfra infra;
  std::string agent_token;
  int64_t lease_until_ms = 0;

  // "agent--<gs>.<domain>": the host the gateway routes to the agent.
  std::string agentHost() const { return "agent--" + gitspace.id + "." + infra.gateway_domain; }
  // "/gs/<gs>/": where the IDE serves.
  std::string basePath() const { return "/gs/" + gitspace.id + "/"; }
};

// Reads a task; false with a reason (naming the field). `id` is filled
// whenever the task has a usable one, so the refusal can be posted to it.
bool parseTask(const nlohmann::json& document, Task& task, std::string& error);

struct TaskResult {
  bool ok = false;
  nlohmann::json data = nlohmann::json::object();  // when ok
  std::string error;                               // when not

  static TaskResult success(nlohmann::json data = nlohmann::json::object()) {
    TaskResult result;
    result.ok = true;
    result.data = std::move(data);
    return result;
  }
  static TaskResult failure(std::string error) {
    TaskResult result;
    result.error = std::move(error);
    return result;
  }
  // {"ok":true,"data":{...}} or {"ok":false,"error":"..."}
  nlohmann::json toJson() const;
  static bool fromJson(const nlohmann::json& document, TaskResult& result);
};

// [A-Za-z0-9._-]{1,128}: ids that go into URL paths as they are.
bool isPlainId(const std::string& id);

}  // namespace spacegate
