// Invariants of validated routes, shared by the config and route fuzz
// targets: a route that validated re-validates from its routeToJson() form
// into the same route (the control API and the snapshot file write routes
// that way and read them back), and a table built from a validated list
// finds every route at its own host and path prefix, whatever the case,
// port or trailing dot of the Host header.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "common/validation_error.h"
#include "route/route.h"
#include "route/route_json.h"
#include "route/route_table.h"
#include "split_reader.h"

namespace spacegate::fuzz {

inline bool sameRouteFields(const Route& a, const Route& b) {
  return a.id == b.id && a.host == b.host && a.path_prefix == b.path_prefix &&
         a.strip_prefix == b.strip_prefix && a.upstream_text == b.upstream_text &&
         a.upstream.kind == b.upstream.kind && a.upstream.host == b.upstream.host &&
         a.upstream.port == b.upstream.port && a.upstream.path == b.upstream.path &&
         a.protocol == b.protocol && a.upstream_tls == b.upstream_tls &&
         a.tunnel_ports == b.tunnel_ports && a.gitspace == b.gitspace && a.owner == b.owner &&
         a.access == b.access;
}

inline void checkRouteRoundTrip(const Route& route) {
  nlohmann::json json = routeToJson(route);
  Route again;
  ValidationError error;
  bool valid = parseRoute(json, "route", again, error);
  if (!valid) {
    std::fprintf(stderr, "routeToJson: %s\nrefused: %s: %s\n", json.dump().c_str(),
                 error.field.c_str(), error.message.c_str());
  }
  FUZZ_CHECK(valid, "a validated route does not re-validate from routeToJson()");
  FUZZ_CHECK(sameRouteFields(route, again), "routeToJson() round trip changed the route");
  FUZZ_CHECK(routeToJson(again) == json, "routeToJson() is not stable");
  FUZZ_CHECK(RouteTable::stripPrefix(route.path_prefix, route.path_prefix) == "/",
             "stripping a route's prefix from itself");
}

inline void checkTableFindsEveryRoute(const std::vector<Route>& routes) {
  RouteTable table(routes, 1);
  std::unordered_set<std::string> exact_hosts;
  for (const Route& route : routes) {
    if (!route.host.starts_with("*.")) exact_hosts.insert(route.host);
  }
  for (const Route& route : routes) {
    std::string host = route.host;
    if (host.starts_with("*.")) {
      // A name one label below the wildcard's domain, not shadowed by an
      // exact route (exact hosts win).
      std::string domain = host.substr(1);
      host.clear();
      for (const char* label : {"x", "y", "fuzz-label"}) {
        if (!exact_hosts.count(label + domain)) {
          host = label + domain;
          break;
        }
      }
      if (host.empty()) continue;
    }
    const Route* found = table.match(host, route.path_prefix);
    FUZZ_CHECK(found && found->id == route.id, "a route is not found at its own host and prefix");
    std::string spelled = host + ".:8443";
    for (char& c : spelled) {
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    }
    found = table.match(spelled, route.path_prefix);
    FUZZ_CHECK(found && found->id == route.id, "Host case, port or trailing dot changed the match");
  }
}

}  // namespace spacegate::fuzz
