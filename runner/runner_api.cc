#include "runner/runner_api.h"

#include <nlohmann/json.hpp>

namespace spacegate {

namespace {

constexpr size_t kBootLogBytes = 16 * 1024;

std::string dumpJson(const nlohmann::json& body) {
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

nlohmann::json machineJson(const MachineRecord& record) {
  nlohmann::json health = {{"healthy", record.healthy}, {"checked_at_ms", record.checked_at_ms}};
  if (!record.health_reason.empty()) health["reason"] = record.health_reason;
  nlohmann::json body = {
      {"id", record.id},
      {"pool", record.pool},
      {"gitspace_id", record.gitspace_id},
      {"state", machineStateName(record.state)},
      {"ready", record.ready},
      {"health", health},
      {"address", record.address},
      {"agent_port", record.agent_port},
      {"agent_url", "http://" + record.address + ":" + std::to_string(record.agent_port)},
      {"ide_port", record.ide_port},
      {"ssh_port", record.ssh_port},
      {"created_at_ms", record.created_at_ms},
      {"updated_at_ms", record.updated_at_ms},
      {"ready_at_ms", record.ready_at_ms},
  };
  if (!record.reason.empty()) body["reason"] = record.reason;
  return body;
}

ServiceResponse outcomeResponse(const PoolOutcome& outcome) {
  if (!outcome.error.empty() && outcome.status >= 400) {
    return ServiceResponse::error(outcome.status, outcome.error, outcome.field);
  }
  nlohmann::json body = machineJson(outcome.machine);
  if (!outcome.source.empty()) body["source"] = outcome.source;
  return ServiceResponse::json(outcome.status, dumpJson(body));
}

ServiceResponse methodNotAllowed(const char* allow) {
  ServiceResponse response = ServiceResponse::error(405, "method not allowed");
  response.headers.emplace_back("Allow", allow);
  return response;
}

}  // namespace

void RunnerApi::handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) {
  // Driver work never happens here: PoolManager queues it, so answers are
  // quick and the server's loop can run them inline.
  exchange->respond(answer(request));
}

ServiceResponse RunnerApi::answer(const ServiceRequest& request) {
  const std::string& path = request.path;
  if (path == "/healthz") {
    if (request.method != "GET" && request.method != "HEAD") return methodNotAllowed("GET, HEAD");
    return ServiceResponse::json(200, "{\"status\":\"ok\"}\n");
  }
  if (request.over_tcp && !token_.empty() && !request.hasBearerToken(token_)) {
    ServiceResponse response = ServiceResponse::error(401, "a valid bearer token is required");
    response.headers.emplace_back("WWW-Authenticate", "Bearer");
    return response;
  }
  if (path == "/metrics") {
    if (request.method != "GET") return methodNotAllowed("GET");
    ServiceResponse response;
    response.content_type = "text/plain; version=0.0.4";
    response.body = pools_.metricsText();
    return response;
  }
  if (path == "/v1/pools") {
    if (request.method != "GET") return methodNotAllowed("GET");
    nlohmann::json list = nlohmann::json::array();
    for (const PoolManager::PoolView& view : pools_.pools()) {
      list.push_back({{"name", view.config->name},
                      {"driver", view.config->driver},
                      {"min", view.config->min},
                      {"max", view.config->max},
                      {"isolation", view.isolation},
                      {"warm", view.counts.warm},
                      {"in_use", view.counts.in_use},
                      {"stopped", view.counts.stopped},
                      {"provisioning", view.counts.provisioning},
                      {"terminating", view.counts.terminating},
                      {"lost", view.counts.lost},
                      {"unhealthy", view.counts.unhealthy}});
    }
    return ServiceResponse::json(200, dumpJson({{"pools", list}}));
  }
  if (path == "/v1/machines") return machineCollection(request);
  static const std::string kPrefix = "/v1/machines/";
  if (path.starts_with(kPrefix)) {
    std::string rest = path.substr(kPrefix.size());
    size_t slash = rest.find('/');
    std::string id = rest.substr(0, slash);
    std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (!validGitspaceId(id)) return ServiceResponse::error(404, "no such machine", "id");
    return machine(request, id, action);
  }
  return ServiceResponse::error(404, "not found");
}

ServiceResponse RunnerApi::machineCollection(const ServiceRequest& request) {
  if (request.method == "GET") {
    nlohmann::json list = nlohmann::json::array();
    for (const MachineRecord& record : pools_.machines()) list.push_back(machineJson(record));
    return ServiceResponse::json(200, dumpJson({{"machines", list}}));
  }
  if (request.method != "POST") return methodNotAllowed("GET, POST");
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
  if (!body.is_object()) return ServiceResponse::error(400, "the body must be a JSON object");
  for (const auto& [key, value] : body.items()) {
    if (key != "pool" && key != "gitspace_id") {
      return ServiceResponse::error(400, "unknown field", key);
    }
  }
  std::string pool;
  if (body.contains("pool")) {
    if (!body["pool"].is_string()) return ServiceResponse::error(400, "must be a string", "pool");
    pool = body["pool"].get<std::string>();
  } else {
    std::vector<PoolManager::PoolView> views = pools_.pools();
    if (views.size() != 1) {
      return ServiceResponse::error(400, "required when the runner has several pools", "pool");
    }
    pool = views.front().config->name;
  }
  if (!body.contains("gitspace_id") || !body["gitspace_id"].is_string()) {
    return ServiceResponse::error(400, "required: a string", "gitspace_id");
  }
  return outcomeResponse(pools_.acquire(pool, body["gitspace_id"].get<std::string>()));
}

ServiceResponse RunnerApi::machine(const ServiceRequest& request, const std::string& id,
                                   const std::string& action) {
  if (action.empty()) {
    if (request.method == "GET") {
      MachineRecord record;
      if (!pools_.find(id, record)) return ServiceResponse::error(404, "no such machine", "id");
      nlohmann::json body = machineJson(record);
      body["boot_log"] = pools_.bootLog(id, kBootLogBytes);
      return ServiceResponse::json(200, dumpJson(body));
    }
    if (request.method == "DELETE") {
      std::string keep;
      bool keep_storage = false;
      if (request.queryParameter("keep_storage", keep)) {
        if (keep == "true" || keep == "1") {
          keep_storage = true;
        } else if (keep != "false" && keep != "0") {
          return ServiceResponse::error(400, "must be true or false", "keep_storage");
        }
      }
      return outcomeResponse(pools_.deleteMachine(id, keep_storage));
    }
    return methodNotAllowed("GET, DELETE");
  }
  if (action == "stop" || action == "start") {
    if (request.method != "POST") return methodNotAllowed("POST");
    return outcomeResponse(action == "stop" ? pools_.stopMachine(id) : pools_.startMachine(id));
  }
  return ServiceResponse::error(404, "not found");
}

}  // namespace spacegate
