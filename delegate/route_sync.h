// RouteSync: brings every gateway to the control plane's desired route
// table. It fetches the whole table (GET /api/v1/delegate/routes) and PUTs
// it, as it is, to each gateway's control API (PUT /routes {"version",
// "routes"}). A gateway answering 409 is already at this version or a newer
// one, which is what the delegate wants; any other failure is logged for
// that gateway and the others still get the table. Syncs run one at a time
// (a task's sync and the periodic one never interleave their pushes).
//
// It runs every `route_sync_interval`, after every (re)registration, and
// after each task step that changes routes (docs/control-plane.md, Routes).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "delegate/control_plane_client.h"
#include "delegate/delegate_config.h"

namespace spacegate {

// What one gateway made of one push.
struct GatewayPush {
  std::string gateway;
  int status = 0;        // the PUT's HTTP status; 0: not reached
  bool current = false;  // 200 (applied) or 409 (already at this version or newer)
  std::string error;     // why not, when not current
};

struct RouteSyncOutcome {
  bool fetched = false;  // the control plane gave a table
  std::string error;     // why not
  uint64_t version = 0;
  nlohmann::json table;  // {"version", "routes"} as fetched
  std::vector<GatewayPush> pushes;

  // Gateways that hold this version (or newer) now.
  size_t currentGateways() const;
  // "local: HTTP 400: ...; edge: Connection refused" for the ones that do not.
  std::string failures() const;
};

class RouteSync {
 public:
  RouteSync(const ControlPlaneClient& control_plane, std::vector<GatewayConfig> gateways,
            uint64_t timeout_ms)
      : control_plane_(control_plane), gateways_(std::move(gateways)), timeout_ms_(timeout_ms) {}

  // Fetches the table and pushes it to every gateway. `why` goes into the
  // log line ("periodic", "registered", "task t-1 start").
  RouteSyncOutcome syncNow(std::string_view why);

  // Pushes a table already fetched (the unit of syncNow, for tests).
  std::vector<GatewayPush> pushTable(const nlohmann::json& table);

  // The table has the agent route of `gitspace_id` (`access: agent`).
  static bool hasAgentRoute(const nlohmann::json& table, const std::string& gitspace_id);

 private:
  const ControlPlaneClient& control_plane_;
  std::vector<GatewayConfig> gateways_;
  uint64_t timeout_ms_;
  std::mutex sync_mutex_;
};

}  // namespace spacegate
