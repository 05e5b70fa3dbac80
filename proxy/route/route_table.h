// RouteTable: an immutable snapshot of all routes, read by every worker
// without locks. A route is filed under the key (host, path_prefix). Lookup
// normalises the host, takes that host's distinct prefix lengths (longest
// first; a handful even when one gateway host carries 100,000 /gs/<id>/
// prefixes) and probes the key for each length that ends on a segment
// boundary of the path. Exact hosts come first; a host with routes of its own
// is never served by a wildcard route. The cost depends on the request and
// the number of distinct prefix lengths, never on the number of routes.
//
// The maps are split into shards by key. An update copies only the shards it
// touches and shares the rest with the previous table, so a single upsert
// into a table of 100,000 routes costs microseconds, not a rebuild.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "route/route.h"

namespace spacegate {

class RouteTable {
 public:
  static constexpr size_t kShardCount = 1024;

  RouteTable();
  // Builds a table from scratch (routes already validated as a set).
  explicit RouteTable(std::vector<Route> routes, uint64_t version = 0);

  // A new table: this one with `upserts` (replacing routes of the same id)
  // and `deletes` applied. Untouched shards are shared. Routes that keep
  // their id keep their counters.
  std::shared_ptr<const RouteTable> withChanges(std::vector<Route> upserts,
                                                const std::vector<std::string>& deletes,
                                                uint64_t version) const;

  // The route for a request, or nullptr. `host` may carry a port and any
  // case; `path` is the origin-form target (path and query).
  const Route* match(std::string_view host, std::string_view path) const;
  // The route a tunnel to `host` (CONNECT, the WebSocket tunnel endpoint)
  // uses: the host's route with tunnel_ports (exact hosts only; whatever its
  // path prefix), else its "/" route, else nullptr.
  const Route* matchTunnel(std::string_view host) const;
  const Route* findById(std::string_view id) const;
  RoutePtr findPointerById(std::string_view id) const;
  // The route with this exact host and path prefix, or nullptr.
  const Route* findByHostAndPrefix(std::string_view host, std::string_view prefix) const;

  // Every route, sorted by id.
  std::vector<RoutePtr> sortedRoutes() const;
  template <typename Visit>
  void forEach(Visit visit) const {
    for (const auto& shard : id_shards_) {
      for (const auto& [id, route] : shard->routes) visit(*route);
    }
  }
  size_t size() const { return size_; }
  uint64_t version() const { return version_; }

  // Normalises a Host value for lookup: lower case, port and trailing dot
  // removed. Returns false if it does not fit `buffer`.
  static bool normaliseHost(std::string_view host, char* buffer, size_t capacity,
                            std::string_view& normalised);
  static std::string normaliseHost(std::string_view host);
  // True when `prefix` matches `path` on a segment boundary ("/gs/x" matches
  // "/gs/x", "/gs/x/a" and "/gs/x?q", not "/gs/xy").
  static bool prefixMatches(std::string_view prefix, std::string_view path);
  // The path to send upstream when the route strips its prefix.
  static std::string stripPrefix(std::string_view prefix, std::string_view path);

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>()(text); }
  };
  // A host's distinct prefix lengths, longest first, each with the number of
  // routes that have it.
  using PrefixLengths = std::vector<std::pair<uint32_t, uint32_t>>;
  using LengthMap = std::unordered_map<std::string, PrefixLengths, StringHash, std::equal_to<>>;
  struct HostShard {
    LengthMap exact;
    LengthMap wildcard;  // keyed by the part after "*."
    // Per exact host, its route with tunnel_ports (the last one written).
    std::unordered_map<std::string, RoutePtr, StringHash, std::equal_to<>> tunnel_routes;
  };
  struct IdShard {
    std::unordered_map<std::string, RoutePtr, StringHash, std::equal_to<>> routes;
  };
  struct RouteShard {
    // Key: 'E' or 'W' (exact or wildcard), the host (without "*."), ' ', the prefix.
    std::unordered_map<std::string, RoutePtr, StringHash, std::equal_to<>> routes;
  };

  static size_t shardOf(std::string_view key) { return StringHash()(key) % kShardCount; }
  // The host a route is filed under ("*." removed) and whether it is a wildcard.
  static std::string_view hostKey(const Route& route, bool& wildcard);
  static std::string routeKey(bool wildcard, std::string_view host, std::string_view prefix);
  const Route* longestPrefix(bool wildcard, std::string_view host, const PrefixLengths& lengths,
                             std::string_view path) const;

  std::array<std::shared_ptr<const HostShard>, kShardCount> host_shards_;
  std::array<std::shared_ptr<const RouteShard>, kShardCount> route_shards_;
  std::array<std::shared_ptr<const IdShard>, kShardCount> id_shards_;
  size_t size_ = 0;
  uint64_t version_ = 0;
  bool has_wildcards_ = false;
};

using RouteTableSnapshot = std::shared_ptr<const RouteTable>;

}  // namespace spacegate
