#include "route/route_table.h"

#include <algorithm>

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

RouteTable::RouteTable(std::vector<Route> routes, uint64_t version)
    : routes_(std::move(routes)), version_(version) {
  for (const Route& route : routes_) {
    if (route.host.starts_with("*.")) {
      wildcard_[route.host.substr(2)].push_back(&route);
    } else {
      exact_[route.host].push_back(&route);
    }
  }
  auto longest_first = [](const Route* a, const Route* b) {
    return a->path_prefix.size() > b->path_prefix.size();
  };
  for (auto& [host, candidates] : exact_) std::stable_sort(candidates.begin(), candidates.end(), longest_first);
  for (auto& [host, candidates] : wildcard_) std::stable_sort(candidates.begin(), candidates.end(), longest_first);
}

std::string RouteTable::normaliseHost(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    host = host.substr(0, close == std::string_view::npos ? host.size() : close + 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  std::string normalised(host);
  for (char& c : normalised) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return normalised;
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
  for (const Route* route : candidates) {
    if (prefixMatches(route->path_prefix, path)) return route;
  }
  return nullptr;
}

const Route* RouteTable::match(std::string_view host, std::string_view path) const {
  std::string name = normaliseHost(host);
  if (auto exact = exact_.find(name); exact != exact_.end()) {
    // A host with routes of its own is never served by a wildcard route:
    // its unmatched paths are a 404, not another Gitspace's traffic.
    return longestPrefix(exact->second, path);
  }
  size_t dot = name.find('.');
  if (dot != std::string::npos && dot > 0 && !wildcard_.empty()) {
    if (auto wildcard = wildcard_.find(name.substr(dot + 1)); wildcard != wildcard_.end()) {
      return longestPrefix(wildcard->second, path);
    }
  }
  return nullptr;
}

}  // namespace spacegate
