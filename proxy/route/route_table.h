// RouteTable: an immutable snapshot of all routes, read by every worker
// without locks. Lookup hashes the host (exact, then the one-label wildcard,
// only for hosts without exact routes), then picks the longest matching path
// prefix among that host's few routes: the cost does not grow with the
// number of routes.
//
// The table is split into shards by host (and, for lookups by id, by id).
// An update copies only the shards it touches and shares the rest with the
// previous table, so a single upsert into a table of 100,000 routes costs
// microseconds, not a rebuild.
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
  const Route* findById(std::string_view id) const;
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
  // Routes of one host, longest prefix first.
  using HostRoutes = std::vector<RoutePtr>;
  using HostMap = std::unordered_map<std::string, HostRoutes, StringHash, std::equal_to<>>;
  struct HostShard {
    HostMap exact;
    HostMap wildcard;  // keyed by the part after "*."
  };
  struct IdShard {
    std::unordered_map<std::string, RoutePtr, StringHash, std::equal_to<>> routes;
  };

  static size_t shardOf(std::string_view key) { return StringHash()(key) % kShardCount; }
  // The key a route is filed under in the host shards.
  static std::string_view hostKey(const Route& route, bool& wildcard);
  static const Route* longestPrefix(const HostRoutes& candidates, std::string_view path);
  static void insertSorted(HostRoutes& candidates, RoutePtr route);

  std::array<std::shared_ptr<const HostShard>, kShardCount> host_shards_;
  std::array<std::shared_ptr<const IdShard>, kShardCount> id_shards_;
  size_t size_ = 0;
  uint64_t version_ = 0;
  bool has_wildcards_ = false;
};

using RouteTableSnapshot = std::shared_ptr<const RouteTable>;

}  // namespace spacegate
