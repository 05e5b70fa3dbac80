// RouteTable: an immutable snapshot of all routes, built once and then only
// read (by every worker, without locks). Lookup hashes the host (exact, then
// the one-label wildcard, only for hosts without exact routes), then picks the longest matching path prefix among
// that host's few routes: the cost does not grow with the number of routes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "route/route.h"

namespace spacegate {

class RouteTable {
 public:
  explicit RouteTable(std::vector<Route> routes, uint64_t version = 0);

  // The route for a request, or nullptr. `host` may carry a port and any
  // case; `path` is the origin-form target (path and query).
  const Route* match(std::string_view host, std::string_view path) const;

  const std::vector<Route>& routes() const { return routes_; }
  uint64_t version() const { return version_; }

  // Normalises a Host value for lookup: lower case, port and trailing dot removed.
  static std::string normaliseHost(std::string_view host);
  // True when `prefix` matches `path` on a segment boundary ("/gs/x" matches
  // "/gs/x", "/gs/x/a" and "/gs/x?q", not "/gs/xy").
  static bool prefixMatches(std::string_view prefix, std::string_view path);
  // The path to send upstream when the route strips its prefix.
  static std::string stripPrefix(std::string_view prefix, std::string_view path);

 private:
  // Routes of one host, longest prefix first.
  using HostRoutes = std::vector<const Route*>;
  static const Route* longestPrefix(const HostRoutes& candidates, std::string_view path);

  std::vector<Route> routes_;
  uint64_t version_;
  std::unordered_map<std::string, HostRoutes> exact_;
  std::unordered_map<std::string, HostRoutes> wildcard_;  // keyed by the part after "*."
};

using RouteTableSnapshot = std::shared_ptr<const RouteTable>;

}  // namespace spacegate
