// A route: which requests (host, path prefix) go to which upstream, and how.
// The same object is read from the config file, the control API and the
// snapshot file (see ../../docs/routes.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/socket_address.h"
#include "tls/tls_config.h"

namespace spacegate {

enum class UpstreamProtocol { kHttp1, kH2c };

enum class RouteAccess {
  kOwner,          // a token for this Gitspace and its owner
  kAuthenticated,  // any valid token of the deployment
  kPublic,         // no token (shared preview ports)
  kAgent,          // a token with scope "agent" for this Gitspace
};

// Traffic counters of one route, shared by every worker (relaxed atomics)
// and carried over from table to table while the route's id lives on, so
// activity survives any number of updates.
struct RouteStats {
  std::atomic<uint64_t> requests_by_class[6] = {};  // [0] other, [1..5] = 1xx..5xx
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<int64_t> open_connections{0};  // exchanges and tunnels in progress
  std::atomic<int64_t> open_tunnels{0};
  std::atomic<uint64_t> last_activity_unix_ms{0};  // last byte either way

  void countStatus(int status) {
    size_t index = status >= 100 && status < 600 ? static_cast<size_t>(status / 100) : 0;
    requests_by_class[index].fetch_add(1, std::memory_order_relaxed);
  }
  void touch(uint64_t now_unix_ms) {
    // Monotonic enough: a racing older write can only lower it by a few ms.
    last_activity_unix_ms.store(now_unix_ms, std::memory_order_relaxed);
  }
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
  UpstreamTlsOptions upstream_tls_options;  // with upstream_tls
  // What the upstream pool shares connections by: the upstream, and with
  // TLS the name and trust it was verified with.
  std::string upstream_key;
  const std::string& poolKey() const { return upstream_key.empty() ? upstream_text : upstream_key; }
  std::vector<uint16_t> tunnel_ports;   // ports CONNECT and the tunnel endpoint may reach
  uint64_t tunnel_idle_timeout_ms = 0;  // 0: the gateway's limits.tunnel_idle_timeout
  std::string gitspace;
  std::string owner;
  RouteAccess access = RouteAccess::kOwner;
  std::shared_ptr<RouteStats> stats = std::make_shared<RouteStats>();

  // Same destination and behaviour (everything but the counters).
  bool sameDefinition(const Route& other) const;
};

using RoutePtr = std::shared_ptr<const Route>;

const char* upstreamProtocolName(UpstreamProtocol protocol);
const char* routeAccessName(RouteAccess access);

}  // namespace spacegate
