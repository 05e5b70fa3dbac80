#include "delegate/gateway_report.h"

#include <algorithm>
#include <map>

#include "delegate/api_call.h"

namespace spacegate {

namespace {

int64_t integerField(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

}  // namespace

GatewayObservation observeGateway(const GatewayConfig& gateway, uint64_t timeout_ms) {
  GatewayObservation observation;
  observation.name = gateway.name;
  ServiceClient client = makeServiceClient(gateway.control, timeout_ms);
  client.setMaxReplySize(64u << 20);
  ApiReply health = callApi(client, "GET", "/healthz");
  if (health.status != 200) {
    observation.error = health.reason();
  } else {
    observation.healthy = true;
    observation.version =
        static_cast<uint64_t>(std::max<int64_t>(0, integerField(health.body, "version")));
  }
  // A draining gateway (503) still carries traffic worth counting.
  if (!health.reached()) return observation;
  ApiReply activity = callApi(client, "GET", "/activity");
  if (activity.status == 200 && activity.body.is_object() && activity.body.contains("gitspaces") &&
      activity.body["gitspaces"].is_array()) {
    observation.activity = activity.body["gitspaces"];
  } else if (observation.error.empty()) {
    observation.error = "GET /activity: " + activity.reason();
  }
  return observation;
}

nlohmann::json buildGatewayReport(const std::vector<GatewayObservation>& gateways) {
  struct Merged {
    int64_t last_activity_unix_ms = 0;
    int64_t open_connections = 0;
    int64_t open_tunnels = 0;
  };
  std::map<std::string, Merged> by_gitspace;
  nlohmann::json list = nlohmann::json::array();
  for (const GatewayObservation& gateway : gateways) {
    // The version is the gateway's route table version, as text (the
    // control plane keeps it as a string of at most 64 characters).
    list.push_back({{"name", gateway.name},
                    {"version", std::to_string(gateway.version)},
                    {"healthy", gateway.healthy}});
    if (!gateway.activity.is_array()) continue;
    for (const nlohmann::json& item : gateway.activity) {
      if (!item.is_object() || !item.contains("gitspace") || !item["gitspace"].is_string()) {
        continue;
      }
      Merged& merged = by_gitspace[item["gitspace"].get<std::string>()];
      merged.last_activity_unix_ms =
          std::max(merged.last_activity_unix_ms, integerField(item, "last_activity_unix_ms"));
      merged.open_connections += integerField(item, "open_connections");
      merged.open_tunnels += integerField(item, "open_tunnels");
    }
  }
  nlohmann::json activity = nlohmann::json::array();
  for (const auto& [gitspace, merged] : by_gitspace) {
    activity.push_back({{"gitspace", gitspace},
                        {"last_activity_unix_ms", merged.last_activity_unix_ms},
                        {"open_connections", merged.open_connections},
                        {"open_tunnels", merged.open_tunnels}});
  }
  return {{"gateways", std::move(list)}, {"activity", std::move(activity)}};
}

}  // namespace spacegate
