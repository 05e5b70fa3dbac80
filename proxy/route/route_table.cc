#include "route/route_table.h"

#include <algorithm>
#include <unordered_set>

namespace spacegate {

const char* upstreamProtocolName(UpstreamProtocol protocol) {
  return protocol == UpstreamProtocol::kH2c ? "h2c" : "http1";
}

const char* routeAccessName(RouteAccess access) {
  switch (access) {
    case RouteAccess::kOwner: return "owner";
    case RouteAccess::kAuthenticated: return "authenticated";
    case RouteAccess::kPublic: return "public";
    case RouteAccess::kAgent: return "agent";
  }
  return "owner";
}

bool Route::sameDefinition(const Route& other) const {
  return id == other.id && host == other.host && path_prefix == other.path_prefix &&
         strip_prefix == other.strip_prefix && upstream_text == other.upstream_text &&
         protocol == other.protocol && upstream_tls == other.upstream_tls &&
         tunnel_ports == other.tunnel_ports && gitspace == other.gitspace &&
         owner == other.owner && access == other.access;
}

RouteTable::RouteTable() {
  auto empty_hosts = std::make_shared<const HostShard>();
  auto empty_ids = std::make_shared<const IdShard>();
  host_shards_.fill(empty_hosts);
  id_shards_.fill(empty_ids);
}

RouteTable::RouteTable(std::vector<Route> routes, uint64_t version) : RouteTable() {
  auto table = RouteTable().withChanges(std::move(routes), {}, version);
  *this = *table;
}

std::string_view RouteTable::hostKey(const Route& route, bool& wildcard) {
  std::string_view host = route.host;
  wildcard = host.starts_with("*.");
  if (wildcard) host.remove_prefix(2);
  return host;
}

void RouteTable::insertSorted(HostRoutes& candidates, RoutePtr route) {
  auto position = std::find_if(candidates.begin(), candidates.end(), [&](const RoutePtr& other) {
    return other->path_prefix.size() < route->path_prefix.size();
  });
  candidates.insert(position, std::move(route));
}

std::shared_ptr<const RouteTable> RouteTable::withChanges(std::vector<Route> upserts,
                                                          const std::vector<std::string>& deletes,
                                                          uint64_t version) const {
  auto next = std::make_shared<RouteTable>(*this);  // shares every shard
  next->version_ = version;
  // Shards copied for this update, writable until the table is published.
  std::unordered_map<size_t, std::shared_ptr<HostShard>> host_copies;
  std::unordered_map<size_t, std::shared_ptr<IdShard>> id_copies;
  auto writable_hosts = [&](size_t index) -> HostShard& {
    auto& copy = host_copies[index];
    if (!copy) {
      copy = std::make_shared<HostShard>(*next->host_shards_[index]);
      next->host_shards_[index] = copy;
    }
    return *copy;
  };
  auto writable_ids = [&](size_t index) -> IdShard& {
    auto& copy = id_copies[index];
    if (!copy) {
      copy = std::make_shared<IdShard>(*next->id_shards_[index]);
      next->id_shards_[index] = copy;
    }
    return *copy;
  };
  auto remove = [&](const std::string& id) -> RoutePtr {
    size_t id_index = shardOf(id);
    auto found = next->id_shards_[id_index]->routes.find(id);
    if (found == next->id_shards_[id_index]->routes.end()) return nullptr;
    RoutePtr old = found->second;
    writable_ids(id_index).routes.erase(id);
    bool wildcard;
    std::string_view key = hostKey(*old, wildcard);
    HostShard& shard = writable_hosts(shardOf(key));
    HostMap& map = wildcard ? shard.wildcard : shard.exact;
    auto host = map.find(key);
    if (host != map.end()) {
      auto& candidates = host->second;
      candidates.erase(std::remove(candidates.begin(), candidates.end(), old), candidates.end());
      if (candidates.empty()) map.erase(host);
    }
    --next->size_;
    return old;
  };
  for (const std::string& id : deletes) remove(id);
  for (Route& route : upserts) {
    RoutePtr old = remove(route.id);
    if (old) route.stats = old->stats;  // counters follow the id
    auto stored = std::make_shared<const Route>(std::move(route));
    writable_ids(shardOf(stored->id)).routes.emplace(stored->id, stored);
    bool wildcard;
    std::string_view key = hostKey(*stored, wildcard);
    HostShard& shard = writable_hosts(shardOf(key));
    insertSorted((wildcard ? shard.wildcard : shard.exact)[std::string(key)], stored);
    if (wildcard) next->has_wildcards_ = true;
    ++next->size_;
  }
  return next;
}

bool RouteTable::normaliseHost(std::string_view host, char* buffer, size_t capacity,
                               std::string_view& normalised) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    host = host.substr(0, close == std::string_view::npos ? host.size() : close + 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.size() > capacity) return false;
  for (size_t i = 0; i < host.size(); ++i) {
    char c = host[i];
    buffer[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  }
  normalised = std::string_view(buffer, host.size());
  return true;
}

std::string RouteTable::normaliseHost(std::string_view host) {
  std::string buffer(host.size(), '\0');
  std::string_view normalised;
  normaliseHost(host, buffer.data(), buffer.size(), normalised);
  return std::string(normalised);
}

bool RouteTable::prefixMatches(std::string_view prefix, std::string_view path) {
  if (!path.starts_with(prefix)) return false;
  if (prefix.back() == '/' || path.size() == prefix.size()) return true;
  char next = path[prefix.size()];
  return next == '/' || next == '?';
}

std::string RouteTable::stripPrefix(std::string_view prefix, std::string_view path) {
  // Keep the slash that starts the remainder: "/gs/x/" and "/gs/x" both turn
  // "/gs/x/a" into "/a".
  if (prefix.back() == '/') prefix.remove_suffix(1);
  std::string_view rest = path.substr(prefix.size());
  if (rest.empty() || rest.front() != '/') return "/" + std::string(rest);
  return std::string(rest);
}

const Route* RouteTable::longestPrefix(const HostRoutes& candidates, std::string_view path) {
  for (const RoutePtr& route : candidates) {
    if (prefixMatches(route->path_prefix, path)) return route.get();
  }
  return nullptr;
}

const Route* RouteTable::match(std::string_view host, std::string_view path) const {
  char buffer[256];
  std::string_view name;
  if (!normaliseHost(host, buffer, sizeof buffer, name)) return nullptr;
  {
    const HostShard& shard = *host_shards_[shardOf(name)];
    if (auto exact = shard.exact.find(name); exact != shard.exact.end()) {
      // A host with routes of its own is never served by a wildcard route:
      // its unmatched paths are a 404, not another Gitspace's traffic.
      return longestPrefix(exact->second, path);
    }
  }
  if (!has_wildcards_) return nullptr;
  size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return nullptr;
  std::string_view parent = name.substr(dot + 1);
  const HostShard& shard = *host_shards_[shardOf(parent)];
  if (auto wildcard = shard.wildcard.find(parent); wildcard != shard.wildcard.end()) {
    return longestPrefix(wildcard->second, path);
  }
  return nullptr;
}

const Route* RouteTable::findById(std::string_view id) const {
  const IdShard& shard = *id_shards_[shardOf(id)];
  auto found = shard.routes.find(id);
  return found == shard.routes.end() ? nullptr : found->second.get();
}

const Route* RouteTable::findByHostAndPrefix(std::string_view host, std::string_view prefix) const {
  bool wildcard = host.starts_with("*.");
  if (wildcard) host.remove_prefix(2);
  const HostShard& shard = *host_shards_[shardOf(host)];
  const HostMap& map = wildcard ? shard.wildcard : shard.exact;
  auto found = map.find(host);
  if (found == map.end()) return nullptr;
  for (const RoutePtr& route : found->second) {
    if (route->path_prefix == prefix) return route.get();
  }
  return nullptr;
}

std::vector<RoutePtr> RouteTable::sortedRoutes() const {
  std::vector<RoutePtr> routes;
  routes.reserve(size_);
  for (const auto& shard : id_shards_) {
    for (const auto& [id, route] : shard->routes) routes.push_back(route);
  }
  std::sort(routes.begin(), routes.end(),
            [](const RoutePtr& a, const RoutePtr& b) { return a->id < b->id; });
  return routes;
}

}  // namespace spacegate
