// A route: which requests (host, path prefix) go to which upstream, and how.
// The same object is read from the config file, the control API and the
// snapshot file (see ../../docs/routes.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "net/socket_address.h"

namespace spacegate {

enum class UpstreamProtocol { kHttp1, kH2c };

enum class RouteAccess {
  kOwner,          // a token for this Gitspace and its owner
  kAuthenticated,  // any valid token of the deployment
  kPublic,         // no token (shared preview ports)
  kAgent,          // a token with scope "agent" for this Gitspace
};

struct Route {
  std::string id;
  std::string host;         // lower case; exact, or "*.domain" (one label)
  std::string path_prefix;  // starts with '/'
  bool strip_prefix = false;
  std::string upstream_text;
  SocketAddress upstream;
  UpstreamProtocol protocol = UpstreamProtocol::kHttp1;
  bool upstream_tls = false;
  std::vector<uint16_t> tunnel_ports;
  std::string gitspace;
  std::string owner;
  RouteAccess access = RouteAccess::kOwner;
};

const char* upstreamProtocolName(UpstreamProtocol protocol);
const char* routeAccessName(RouteAccess access);

}  // namespace spacegate
