// Reading and writing route objects as JSON (nlohmann::json), with
// validation of every field. Used by the config file loader (YAML converted
// to JSON) and, later, the control API and the snapshot file.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/validation_error.h"
#include "route/route.h"

namespace spacegate {

// Parses one route object; `path` names it in errors ("routes[2]").
bool parseRoute(const nlohmann::json& object, const std::string& path, Route& route,
                ValidationError& error);
// Parses a list of routes and checks they are consistent as a table: ids
// unique, no two routes with the same host and path prefix.
bool parseRouteList(const nlohmann::json& array, const std::string& path,
                    std::vector<Route>& routes, ValidationError& error);

nlohmann::json routeToJson(const Route& route);

// Whether this gateway can serve the route as written (h2c is cleartext:
// no upstream TLS with it). Checked wherever
// routes enter the gateway, so a route never behaves other than it says.
bool checkRoutesServable(const std::vector<Route>& routes, const std::string& path,
                         ValidationError& error);
bool checkRouteServable(const Route& route, const std::string& path, ValidationError& error);

// Route ids: [a-z0-9._-], 1..128 bytes.
bool isValidRouteId(const std::string& id);

}  // namespace spacegate
