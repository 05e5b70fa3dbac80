#include "delegate/route_sync.h"

#include "common/log.h"
#include "delegate/api_call.h"

namespace spacegate {

size_t RouteSyncOutcome::currentGateways() const {
  size_t count = 0;
  for (const GatewayPush& push : pushes) count += push.current ? 1 : 0;
  return count;
}

std::string RouteSyncOutcome::failures() const {
  if (!fetched) return "the control plane's route table: " + error;
  std::string text;
  for (const GatewayPush& push : pushes) {
    if (push.current) continue;
    if (!text.empty()) text += "; ";
    text += push.gateway + ": " + push.error;
  }
  return text;
}

bool RouteSync::hasAgentRoute(const nlohmann::json& table, const std::string& gitspace_id) {
  if (!table.is_object() || !table.contains("routes") || !table["routes"].is_array()) return false;
  for (const nlohmann::json& route : table["routes"]) {
    if (!route.is_object()) continue;
    if (route.value("gitspace", "") == gitspace_id && route.value("access", "") == "agent") {
      return true;
    }
  }
  return false;
}

std::vector<GatewayPush> RouteSync::pushTable(const nlohmann::json& table) {
  // The body is the table exactly as the control plane gave it: the
  // gateway validates it, and a refusal names the route's field.
  nlohmann::json body = {{"version", table["version"]}, {"routes", table["routes"]}};
  std::string text = dumpJson(body);
  std::vector<GatewayPush> pushes;
  if (table["version"].get<uint64_t>() == 0) {
    // A control plane whose table never changed: gateways refuse version 0
    // and start there themselves, so there is nothing to push.
    for (const GatewayConfig& gateway : gateways_) {
      pushes.push_back(GatewayPush{gateway.name, 0, true, ""});
    }
    return pushes;
  }
  for (const GatewayConfig& gateway : gateways_) {
    ServiceClient client = makeServiceClient(gateway.control, timeout_ms_);
    ServiceReply reply;
    std::string error;
    GatewayPush push;
    push.gateway = gateway.name;
    if (!client.call("PUT", "/routes", text, reply, error)) {
      push.error = error;
    } else {
      push.status = reply.status;
      push.current = reply.status == 200 || reply.status == 409;
      if (!push.current) {
        ApiReply parsed;
        parsed.status = reply.status;
        parsed.text = reply.body;
        parsed.body = nlohmann::json::parse(reply.body, nullptr, false);
        if (parsed.body.is_discarded()) parsed.body = nullptr;
        push.error = parsed.reason();
      }
    }
    if (!push.current) {
      logEvent(LogLevel::kWarning, "route push refused or failed")
          .with("gateway", gateway.name)
          .with("version", table["version"].get<uint64_t>())
          .with("status", static_cast<int64_t>(push.status))
          .with("error", push.error)
          .emit();
    }
    pushes.push_back(std::move(push));
  }
  return pushes;
}

RouteSyncOutcome RouteSync::syncNow(std::string_view why) {
  std::lock_guard<std::mutex> lock(sync_mutex_);
  RouteSyncOutcome outcome;
  if (!control_plane_.fetchRoutes(outcome.table, outcome.error)) {
    logEvent(LogLevel::kWarning, "route sync: cannot fetch the desired table")
        .with("why", std::string(why))
        .with("error", outcome.error)
        .emit();
    return outcome;
  }
  outcome.fetched = true;
  outcome.version = outcome.table["version"].get<uint64_t>();
  outcome.pushes = pushTable(outcome.table);
  logEvent(LogLevel::kInfo, "routes synced")
      .with("why", std::string(why))
      .with("version", outcome.version)
      .with("routes", static_cast<uint64_t>(outcome.table["routes"].size()))
      .with("gateways_current", static_cast<uint64_t>(outcome.currentGateways()))
      .with("gateways", static_cast<uint64_t>(outcome.pushes.size()))
      .emit();
  return outcome;
}

}  // namespace spacegate
