#include "route/route_json.h"

#include <set>
#include <unordered_set>

#include "route/route_table.h"

namespace spacegate {

namespace {

bool readString(const nlohmann::json& object, const char* key, const std::string& path,
                std::string& out, ValidationError& error, bool required) {
  auto it = object.find(key);
  if (it == object.end()) {
    if (required) return rejectField(error, path + "." + key, "is required");
    return true;
  }
  if (!it->is_string()) return rejectField(error, path + "." + key, "must be a string");
  out = it->get<std::string>();
  return true;
}

bool readBool(const nlohmann::json& object, const char* key, const std::string& path, bool& out,
              ValidationError& error) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_boolean()) return rejectField(error, path + "." + key, "must be true or false");
  out = it->get<bool>();
  return true;
}

bool isValidRouteHost(const std::string& host) {
  std::string_view name = host;
  if (name.starts_with("*.")) name.remove_prefix(2);
  if (!isValidHostname(name)) return false;
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') return false;
  }
  return true;
}

bool isValidPathPrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.front() != '/' || prefix.size() > 1024) return false;
  for (unsigned char c : prefix) {
    // Visible ASCII, no query or fragment.
    if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#') return false;
  }
  return true;
}

bool isValidIdentifier(const std::string& text) {
  if (text.empty() || text.size() > 128) return false;
  for (char c : text) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@';
    if (!ok) return false;
  }
  return true;
}

const std::set<std::string>& knownRouteKeys() {
  static const std::set<std::string> keys = {"id",
                                             "host",
                                             "path_prefix",
                                             "strip_prefix",
                                             "upstream",
                                             "protocol",
                                             "upstream_tls",
                                             "tunnel_ports",
                                             "tunnel_idle_timeout_ms",
                                             "gitspace",
                                             "owner",
                                             "access",
                                             "upstream_tls_server_name",
                                             "upstream_tls_ca_file",
                                             "upstream_tls_verify"};
  return keys;
}

}  // namespace

bool isValidRouteId(const std::string& id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool parseRoute(const nlohmann::json& object, const std::string& path, Route& route,
                ValidationError& error) {
  if (!object.is_object()) return rejectField(error, path, "must be an object");
  for (const auto& [key, value] : object.items()) {
    if (!knownRouteKeys().count(key)) return rejectField(error, path + "." + key, "unknown field");
  }
  route = Route{};
  if (!readString(object, "id", path, route.id, error, true)) return false;
  if (!isValidRouteId(route.id)) {
    return rejectField(error, path + ".id", "must be 1..128 characters of [a-z0-9._-]");
  }
  if (!readString(object, "host", path, route.host, error, true)) return false;
  if (!isValidRouteHost(route.host)) {
    return rejectField(error, path + ".host",
                       "must be a lower-case host name, or *.domain for a wildcard");
  }
  route.path_prefix = "/";
  if (!readString(object, "path_prefix", path, route.path_prefix, error, false)) return false;
  if (!isValidPathPrefix(route.path_prefix)) {
    return rejectField(error, path + ".path_prefix",
                       "must start with '/' and hold visible ASCII without '?' or '#'");
  }
  if (!readBool(object, "strip_prefix", path, route.strip_prefix, error)) return false;
  if (!readString(object, "upstream", path, route.upstream_text, error, true)) return false;
  std::string reason;
  if (!parseSocketAddress(route.upstream_text, route.upstream, reason)) {
    return rejectField(error, path + ".upstream", reason);
  }
  std::string protocol = "http1";
  if (!readString(object, "protocol", path, protocol, error, false)) return false;
  if (protocol == "http1") {
    route.protocol = UpstreamProtocol::kHttp1;
  } else if (protocol == "h2c") {
    route.protocol = UpstreamProtocol::kH2c;
  } else {
    return rejectField(error, path + ".protocol", "must be \"http1\" or \"h2c\"");
  }
  if (!readBool(object, "upstream_tls", path, route.upstream_tls, error)) return false;
  UpstreamTlsOptions& tls = route.upstream_tls_options;
  if (!readString(object, "upstream_tls_server_name", path, tls.server_name, error, false) ||
      !readString(object, "upstream_tls_ca_file", path, tls.ca_file, error, false) ||
      !readBool(object, "upstream_tls_verify", path, tls.verify, error)) {
    return false;
  }
  bool tls_detail = object.contains("upstream_tls_server_name") ||
                    object.contains("upstream_tls_ca_file") ||
                    object.contains("upstream_tls_verify");
  if (tls_detail && !route.upstream_tls) {
    return rejectField(error, path + ".upstream_tls", "must be true with upstream_tls_* fields");
  }
  if (!tls.server_name.empty() && !isValidRouteHost(tls.server_name)) {
    return rejectField(error, path + ".upstream_tls_server_name", "must be a lower-case host name");
  }
  if (!tls.ca_file.empty() && tls.ca_file.front() != '/') {
    return rejectField(error, path + ".upstream_tls_ca_file", "must be an absolute path");
  }
  if (route.upstream_tls && route.upstream.kind == SocketAddress::Kind::kUnix &&
      tls.server_name.empty()) {
    return rejectField(error, path + ".upstream_tls_server_name",
                       "a unix-socket upstream with TLS needs the name to verify");
  }
  route.upstream_key = route.upstream_text;
  if (route.upstream_tls) {
    route.upstream_key = "tls|" + tls.server_name + "|" + tls.ca_file + "|" +
                         (tls.verify ? "verify" : "any") + "|" + route.upstream_text;
  }
  if (auto ports = object.find("tunnel_ports"); ports != object.end()) {
    if (!ports->is_array())
      return rejectField(error, path + ".tunnel_ports", "must be a list of ports");
    for (size_t i = 0; i < ports->size(); ++i) {
      const auto& port = (*ports)[i];
      if (!port.is_number_integer() || port.get<int64_t>() < 1 || port.get<int64_t>() > 65535) {
        return rejectField(error, path + ".tunnel_ports[" + std::to_string(i) + "]",
                           "must be a port from 1 to 65535");
      }
      route.tunnel_ports.push_back(static_cast<uint16_t>(port.get<int64_t>()));
    }
  }
  if (auto timeout = object.find("tunnel_idle_timeout_ms"); timeout != object.end()) {
    // From a tenth of a second (tests) to a week.
    if (!timeout->is_number_integer() || timeout->get<int64_t>() < 100 ||
        timeout->get<int64_t>() > 7LL * 24 * 3600 * 1000) {
      return rejectField(error, path + ".tunnel_idle_timeout_ms",
                         "must be milliseconds from 100 to 604800000 (a week)");
    }
    route.tunnel_idle_timeout_ms = static_cast<uint64_t>(timeout->get<int64_t>());
  }
  if (!readString(object, "gitspace", path, route.gitspace, error, false)) return false;
  if (!route.gitspace.empty() && !isValidIdentifier(route.gitspace)) {
    return rejectField(error, path + ".gitspace", "must be 1..128 characters of [A-Za-z0-9._@-]");
  }
  if (!readString(object, "owner", path, route.owner, error, false)) return false;
  if (!route.owner.empty() && !isValidIdentifier(route.owner)) {
    return rejectField(error, path + ".owner", "must be 1..128 characters of [A-Za-z0-9._@-]");
  }
  // Without an access field a route is public only if it names no Gitspace:
  // a Gitspace's route is closed unless said otherwise.
  std::string access = route.gitspace.empty() ? "public" : "owner";
  if (!readString(object, "access", path, access, error, false)) return false;
  if (access == "owner") {
    route.access = RouteAccess::kOwner;
    if (route.gitspace.empty() || route.owner.empty()) {
      return rejectField(error, path + ".access", "\"owner\" needs both gitspace and owner");
    }
  } else if (access == "authenticated") {
    route.access = RouteAccess::kAuthenticated;
  } else if (access == "public") {
    route.access = RouteAccess::kPublic;
  } else if (access == "agent") {
    route.access = RouteAccess::kAgent;
    if (route.gitspace.empty())
      return rejectField(error, path + ".access", "\"agent\" needs gitspace");
  } else {
    return rejectField(error, path + ".access",
                       "must be one of \"owner\", \"authenticated\", \"public\", \"agent\"");
  }
  return true;
}

bool parseRouteList(const nlohmann::json& array, const std::string& path,
                    std::vector<Route>& routes, ValidationError& error) {
  if (!array.is_array()) return rejectField(error, path, "must be a list of route objects");
  routes.clear();
  routes.reserve(array.size());
  std::unordered_set<std::string> ids;
  std::unordered_set<std::string> host_prefixes;
  for (size_t i = 0; i < array.size(); ++i) {
    std::string item_path = path + "[" + std::to_string(i) + "]";
    Route route;
    if (!parseRoute(array[i], item_path, route, error)) return false;
    if (!ids.insert(route.id).second) {
      return rejectField(error, item_path + ".id", "duplicate route id \"" + route.id + "\"");
    }
    if (!host_prefixes.insert(route.host + " " + route.path_prefix).second) {
      return rejectField(
          error, item_path + ".path_prefix",
          "another route already has host \"" + route.host + "\" and this path_prefix");
    }
    routes.push_back(std::move(route));
  }
  return true;
}

bool checkRouteServable(const Route& route, const std::string& path, ValidationError& error) {
  if (route.protocol == UpstreamProtocol::kH2c && route.upstream_tls) {
    return rejectField(error, path + ".upstream_tls",
                       "h2c is HTTP/2 in the clear: TLS upstreams use protocol http1");
  }
  return true;
}

bool checkRoutesServable(const std::vector<Route>& routes, const std::string& path,
                         ValidationError& error) {
  for (size_t i = 0; i < routes.size(); ++i) {
    if (!checkRouteServable(routes[i], path + "[" + std::to_string(i) + "]", error)) return false;
  }
  return true;
}

nlohmann::json routeToJson(const Route& route) {
  nlohmann::json object = {{"id", route.id},
                           {"host", route.host},
                           {"path_prefix", route.path_prefix},
                           {"strip_prefix", route.strip_prefix},
                           {"upstream", route.upstream_text},
                           {"protocol", upstreamProtocolName(route.protocol)},
                           {"upstream_tls", route.upstream_tls},
                           {"access", routeAccessName(route.access)}};
  if (route.upstream_tls) {
    const UpstreamTlsOptions& tls = route.upstream_tls_options;
    if (!tls.server_name.empty()) object["upstream_tls_server_name"] = tls.server_name;
    if (!tls.ca_file.empty()) object["upstream_tls_ca_file"] = tls.ca_file;
    if (!tls.verify) object["upstream_tls_verify"] = false;
  }
  if (!route.tunnel_ports.empty()) object["tunnel_ports"] = route.tunnel_ports;
  if (route.tunnel_idle_timeout_ms != 0) {
    object["tunnel_idle_timeout_ms"] = route.tunnel_idle_timeout_ms;
  }
  if (!route.gitspace.empty()) object["gitspace"] = route.gitspace;
  if (!route.owner.empty()) object["owner"] = route.owner;
  return object;
}

}  // namespace spacegate
