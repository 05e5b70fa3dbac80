// The desired gateway routes of a Gitspace, from its state, its machine and
// its infra (docs/control-plane.md, "Routes"), and the URLs users open.
// Pure functions: ControlPlane compares a Gitspace's routes before and after
// a change to know when the route revision must grow.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "control/server/control_records.h"

namespace spacegate {

// Route objects as the gateway's PUT /routes takes them (docs/routes.md).
std::vector<nlohmann::json> desiredRoutesFor(const GitspaceRecord& gitspace,
                                             const InfraRecord& infra);

// "<scheme>://gs.D[:port]/gs/gs/" (the port left out when it is the scheme's
// default) and "<scheme>://D[:port]/gs/gs/".
std::string gitspaceUrl(const GitspaceRecord& gitspace, const InfraRecord& infra);
std::string gitspacePathUrl(const GitspaceRecord& gitspace, const InfraRecord& infra);

// "gs.D": the host of a Gitspace's IDE route, which carries its tunnels.
std::string gitspaceHost(const GitspaceRecord& gitspace, const InfraRecord& infra);
// "<scheme>://D[:port]": where tools reach the gateway.
std::string gatewayUrl(const InfraRecord& infra);
// "ws(s)://gs.D[:port]/.spacegate/tunnel/<port>": the gateway's WebSocket
// tunnel endpoint to a port of the Gitspace's machine (docs/tunnels.md).
std::string tunnelWebSocketUrl(const GitspaceRecord& gitspace, const InfraRecord& infra, int port);

// "10.0.0.5:8089", "[fd00::5]:8089".
std::string upstreamAddress(const std::string& address, int port);

}  // namespace spacegate
