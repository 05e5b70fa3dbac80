// GatewayReport: what the delegate tells the control plane about its
// gateways every `report_interval` (POST /api/v1/delegate/report): each
// gateway's health and route table version (its control API's /healthz),
// and per Gitspace the user traffic the gateways saw (their /activity),
// merged over the gateways: the latest activity, the sum of open
// connections and tunnels. The control plane stops a Gitspace that has had
// no traffic for its idle limit.
//
// Only user traffic counts: the gateway's /activity leaves out routes with
// `access: agent`, which carry the delegate's own calls to the agent (a
// Gitspace polled by its delegate must still be seen as idle).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "delegate/delegate_config.h"

namespace spacegate {

// One gateway as seen now.
struct GatewayObservation {
  std::string name;
  bool healthy = false;
  uint64_t version = 0;                               // route table version (healthz)
  std::string error;                                  // why not healthy
  nlohmann::json activity = nlohmann::json::array();  // /activity "gitspaces", when read
};

// Asks one gateway's control API: GET /healthz, then GET /activity.
GatewayObservation observeGateway(const GatewayConfig& gateway, uint64_t timeout_ms);

// {"gateways":[{"name","version","healthy"}],"activity":[{"gitspace",
// (version: the route table version as text)
// "last_activity_unix_ms","open_connections","open_tunnels"}]}
nlohmann::json buildGatewayReport(const std::vector<GatewayObservation>& gateways);

}  // namespace spacegate
