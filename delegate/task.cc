#include "delegate/task.h"

#include <algorithm>
#include <cctype>

namespace spacegate {

namespace {

bool readText(const nlohmann::json& object, const char* key, const std::string& path,
              std::string& out, bool required, std::string& error) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (!required) return true;
    error = path + key + ": required";
    return false;
  }
  if (!it->is_string()) {
    error = path + key + ": must be a string";
    return false;
  }
  out = it->get<std::string>();
  if (required && out.empty()) {
    error = path + key + ": must not be empty";
    return false;
  }
  return true;
}

bool isDomain(const std::string& text) {
  if (text.empty() || text.size() > 253) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
  });
}

}  // namespace

const char* taskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kStart: return "start";
    case TaskKind::kStop: return "stop";
    case TaskKind::kDelete: return "delete";
    case TaskKind::kReset: return "reset";
  }
  return "unknown";
}

bool isPlainId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

bool parseTask(const nlohmann::json& document, Task& task, std::string& error) {
  task = Task{};
  if (!document.is_object()) {
    error = "the task is not a JSON object";
    return false;
  }
  std::string id;
  if (!readText(document, "id", "", id, true, error)) return false;
  if (!isPlainId(id)) {
    error = "id: must be 1 to 128 of [A-Za-z0-9._-]";
    return false;
  }
  task.id = id;
  std::string kind;
  if (!readText(document, "kind", "", kind, true, error)) return false;
  if (kind == "start") {
    task.kind = TaskKind::kStart;
  } else if (kind == "stop") {
    task.kind = TaskKind::kStop;
  } else if (kind == "delete") {
    task.kind = TaskKind::kDelete;
  } else if (kind == "reset") {
    task.kind = TaskKind::kReset;
  } else {
    error = "kind: this delegate does not know \"" + kind.substr(0, 40) +
            "\" (start, stop, delete, reset)";
    return false;
  }
  if (auto attempt = document.find("attempt");
      attempt != document.end() && attempt->is_number_integer()) {
    task.attempt = attempt->get<int>();
  }
  if (auto lease = document.find("lease_until_ms");
      lease != document.end() && lease->is_number_integer()) {
    task.lease_until_ms = lease->get<int64_t>();
  }
  auto gitspace = document.find("gitspace");
  if (gitspace == document.end() || !gitspace->is_object()) {
    error = "gitspace: required (an object)";
    return false;
  }
  TaskGitspace& gs = task.gitspace;
  if (!readText(*gitspace, "id", "gitspace.", gs.id, true, error) ||
      !readText(*gitspace, "name", "gitspace.", gs.name, false, error) ||
      !readText(*gitspace, "owner", "gitspace.", gs.owner, false, error) ||
      !readText(*gitspace, "repository", "gitspace.", gs.repository, false, error) ||
      !readText(*gitspace, "branch", "gitspace.", gs.branch, false, error) ||
      !readText(*gitspace, "ide", "gitspace.", gs.ide, false, error) ||
      !readText(*gitspace, "machine_id", "gitspace.", gs.machine_id, false, error)) {
    return false;
  }
  if (!isPlainId(gs.id)) {
    error = "gitspace.id: must be 1 to 128 of [A-Za-z0-9._-]";
    return false;
  }
  if (!gs.machine_id.empty() && !isPlainId(gs.machine_id)) {
    error = "gitspace.machine_id: must be 1 to 128 of [A-Za-z0-9._-]";
    return false;
  }
  // The keys go to the agent as they are; the agent checks each line.
  if (auto keys = gitspace->find("ssh_authorized_keys");
      keys != gitspace->end() && !keys->is_null()) {
    if (!keys->is_array()) {
      error = "gitspace.ssh_authorized_keys: must be an array of strings";
      return false;
    }
    gs.ssh_authorized_keys.emplace();
    for (size_t i = 0; i < keys->size(); ++i) {
      if (!(*keys)[i].is_string()) {
        error = "gitspace.ssh_authorized_keys[" + std::to_string(i) + "]: must be a string";
        return false;
      }
      gs.ssh_authorized_keys->push_back((*keys)[i].get<std::string>());
    }
  }
  auto infra = document.find("infra");
  if (infra != document.end() && infra->is_object()) {
    if (!readText(*infra, "gateway_domain", "infra.", task.infra.gateway_domain, false, error) ||
        !readText(*infra, "url_scheme", "infra.", task.infra.url_scheme, false, error) ||
        !readText(*infra, "runner_pool", "infra.", task.infra.runner_pool, false, error)) {
      return false;
    }
    if (auto port = infra->find("gateway_port");
        port != infra->end() && port->is_number_integer()) {
      task.infra.gateway_port = port->get<int>();
    }
  } else if (infra != document.end() && !infra->is_null()) {
    error = "infra: must be an object";
    return false;
  }
  if (!readText(document, "agent_token", "", task.agent_token, false, error)) return false;
  // Stop and delete only try the agent (and skip it without a domain or a
  // token); a start cannot do without them.
  if (!task.infra.gateway_domain.empty() && !isDomain(task.infra.gateway_domain)) {
    error = "infra.gateway_domain: must be a DNS name";
    return false;
  }
  if (task.kind == TaskKind::kStart) {
    if (task.infra.gateway_domain.empty()) {
      error = "infra.gateway_domain: required for a start";
      return false;
    }
    if (gs.repository.empty()) {
      error = "gitspace.repository: required for a start";
      return false;
    }
    if (gs.ide.empty()) {
      error = "gitspace.ide: required for a start";
      return false;
    }
    if (task.infra.runner_pool.empty()) {
      error = "infra.runner_pool: required for a start";
      return false;
    }
    if (task.agent_token.empty()) {
      error = "agent_token: required for a start (the agent accepts nothing else)";
      return false;
    }
  }
  return true;
}

nlohmann::json TaskResult::toJson() const {
  if (ok) return {{"ok", true}, {"data", data.is_null() ? nlohmann::json::object() : data}};
  return {{"ok", false}, {"error", error}};
}

bool TaskResult::fromJson(const nlohmann::json& document, TaskResult& result) {
  if (!document.is_object() || !document.contains("ok") || !document["ok"].is_boolean()) {
    return false;
  }
  result = TaskResult{};
  result.ok = document["ok"].get<bool>();
  if (result.ok) {
    result.data = document.value("data", nlohmann::json::object());
  } else {
    if (!document.contains("error") || !document["error"].is_string()) return false;
    result.error = document["error"].get<std::string>();
  }
  return true;
}

}  // namespace spacegate
