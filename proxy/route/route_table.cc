#include "route/route_table.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
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
         upstream_key == other.upstream_key && tunnel_ports == other.tunnel_ports &&
         tunnel_idle_timeout_ms == other.tunnel_idle_timeout_ms && gitspace == other.gitspace &&
         owner == other.owner && access == other.access;
}

RouteTable::RouteTable() {
  host_shards_.fill(std::make_shared<const HostShard>());
  route_shards_.fill(std::make_shared<const RouteShard>());
  id_shards_.fill(std::make_shared<const IdShard>());
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

std::string RouteTable::routeKey(bool wildcard, std::string_view host, std::string_view prefix) {
  std::string key;
  key.reserve(2 + host.size() + prefix.size());
  key.push_back(wildcard ? 'W' : 'E');
  key.append(host);
  key.push_back(' ');
  key.append(prefix);
  return key;
}

std::shared_ptr<const RouteTable> RouteTable::withChanges(std::vector<Route> upserts,
                                                          const std::vector<std::string>& deletes,
                                                          uint64_t version) const {
  auto next = std::make_shared<RouteTable>(*this);  // shares every shard
  next->version_ = version;
  // Shards copied for this update, writable until the table is published.
  std::unordered_map<size_t, std::shared_ptr<HostShard>> host_copies;
  std::unordered_map<size_t, std::shared_ptr<RouteShard>> route_copies;
  std::unordered_map<size_t, std::shared_ptr<IdShard>> id_copies;
  auto writable = [](auto& copies, auto& shards, size_t index) -> auto& {
    auto& copy = copies[index];
    if (!copy) {
      using Shard = typename std::remove_reference_t<decltype(copy)>::element_type;
      copy = std::make_shared<Shard>(*shards[index]);
      shards[index] = copy;
    }
    return *copy;
  };
  auto remove = [&](const std::string& id) -> RoutePtr {
    size_t id_index = shardOf(id);
    auto found = next->id_shards_[id_index]->routes.find(id);
    if (found == next->id_shards_[id_index]->routes.end()) return nullptr;
    RoutePtr old = found->second;
    writable(id_copies, next->id_shards_, id_index).routes.erase(id);
    bool wildcard;
    std::string_view host = hostKey(*old, wildcard);
    std::string key = routeKey(wildcard, host, old->path_prefix);
    {
      // Only if the key is still this route's: a route upserted earlier in
      // the same batch may have taken the place this one is leaving.
      size_t route_index = shardOf(key);
      const auto& routes = next->route_shards_[route_index]->routes;
      auto holder = routes.find(key);
      if (holder != routes.end() && holder->second == old) {
        writable(route_copies, next->route_shards_, route_index).routes.erase(key);
      }
    }
    HostShard& hosts = writable(host_copies, next->host_shards_, shardOf(host));
    if (auto tunnel = hosts.tunnel_routes.find(host);
        !wildcard && tunnel != hosts.tunnel_routes.end() && tunnel->second == old) {
      hosts.tunnel_routes.erase(tunnel);
    }
    LengthMap& lengths_by_host = wildcard ? hosts.wildcard : hosts.exact;
    if (auto entry = lengths_by_host.find(host); entry != lengths_by_host.end()) {
      PrefixLengths& lengths = entry->second;
      uint32_t length = static_cast<uint32_t>(old->path_prefix.size());
      for (auto it = lengths.begin(); it != lengths.end(); ++it) {
        if (it->first == length) {
          if (--it->second == 0) lengths.erase(it);
          break;
        }
      }
      if (lengths.empty()) lengths_by_host.erase(entry);
    }
    --next->size_;
    return old;
  };
  for (const std::string& id : deletes) remove(id);
  for (Route& route : upserts) {
    RoutePtr old = remove(route.id);
    if (old) route.stats = old->stats;  // counters follow the id
    auto stored = std::make_shared<const Route>(std::move(route));
    writable(id_copies, next->id_shards_, shardOf(stored->id)).routes.emplace(stored->id, stored);
    bool wildcard;
    std::string_view host = hostKey(*stored, wildcard);
    std::string key = routeKey(wildcard, host, stored->path_prefix);
    writable(route_copies, next->route_shards_, shardOf(key)).routes[key] = stored;
    HostShard& hosts = writable(host_copies, next->host_shards_, shardOf(host));
    PrefixLengths& lengths = (wildcard ? hosts.wildcard : hosts.exact)[std::string(host)];
    uint32_t length = static_cast<uint32_t>(stored->path_prefix.size());
    auto position = lengths.begin();
    while (position != lengths.end() && position->first > length) ++position;
    if (position != lengths.end() && position->first == length) {
      ++position->second;
    } else {
      lengths.insert(position, {length, 1});
    }
    if (!wildcard && !stored->tunnel_ports.empty()) hosts.tunnel_routes[std::string(host)] = stored;
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

const Route* RouteTable::longestPrefix(bool wildcard, std::string_view host,
                                       const PrefixLengths& lengths, std::string_view path) const {
  // Key buffer on the stack: no allocation per request.
  char key[1 + 256 + 1 + 1024];
  if (host.size() > 256) return nullptr;
  key[0] = wildcard ? 'W' : 'E';
  std::memcpy(key + 1, host.data(), host.size());
  key[1 + host.size()] = ' ';
  size_t key_base = 2 + host.size();
  for (const auto& [length, count] : lengths) {
    if (length > path.size() || length > 1024) continue;
    // Only a prefix that ends on a segment boundary of the path matches.
    bool boundary = path[length - 1] == '/' || length == path.size() || path[length] == '/' ||
                    path[length] == '?';
    if (!boundary) continue;
    std::memcpy(key + key_base, path.data(), length);
    std::string_view probe(key, key_base + length);
    const RouteShard& shard = *route_shards_[shardOf(probe)];
    if (auto found = shard.routes.find(probe); found != shard.routes.end()) {
      return found->second.get();
    }
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
      return longestPrefix(false, name, exact->second, path);
    }
  }
  if (!has_wildcards_) return nullptr;
  size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return nullptr;
  std::string_view parent = name.substr(dot + 1);
  const HostShard& shard = *host_shards_[shardOf(parent)];
  if (auto wildcard = shard.wildcard.find(parent); wildcard != shard.wildcard.end()) {
    return longestPrefix(true, parent, wildcard->second, path);
  }
  return nullptr;
}

const Route* RouteTable::matchTunnel(std::string_view host) const {
  char buffer[256];
  std::string_view name;
  if (!normaliseHost(host, buffer, sizeof buffer, name)) return nullptr;
  const HostShard& shard = *host_shards_[shardOf(name)];
  if (auto tunnel = shard.tunnel_routes.find(name); tunnel != shard.tunnel_routes.end()) {
    return tunnel->second.get();
  }
  return match(host, "/");
}

const Route* RouteTable::findById(std::string_view id) const {
  const IdShard& shard = *id_shards_[shardOf(id)];
  auto found = shard.routes.find(id);
  return found == shard.routes.end() ? nullptr : found->second.get();
}

RoutePtr RouteTable::findPointerById(std::string_view id) const {
  const IdShard& shard = *id_shards_[shardOf(id)];
  auto found = shard.routes.find(id);
  return found == shard.routes.end() ? nullptr : found->second;
}

const Route* RouteTable::findByHostAndPrefix(std::string_view host, std::string_view prefix) const {
  bool wildcard = host.starts_with("*.");
  if (wildcard) host.remove_prefix(2);
  std::string key = routeKey(wildcard, host, prefix);
  const RouteShard& shard = *route_shards_[shardOf(key)];
  auto found = shard.routes.find(key);
  return found == shard.routes.end() ? nullptr : found->second.get();
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
