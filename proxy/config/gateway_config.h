// The gateway's configuration: listeners, workers, logs, limits and static
// routes. Every key has a default (docs/configuration.md); a bad value is
// refused with the field path and the reason.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "auth/access_policy.h"
#include "auth/access_token.h"
#include "common/validation_error.h"
#include "config/limits.h"
#include "net/socket_address.h"
#include "route/route.h"
#include "tls/tls_config.h"

namespace spacegate {

// The control API (docs/control-api.md).
struct ControlConfig {
  std::string socket;   // unix socket path; empty: none
  std::string address;  // TCP "host:port"; empty: none (needs token_file)
  SocketAddress tcp_address;
  bool tls = false;        // TCP with TLS (the tls: section's certificates)
  std::string token_file;  // bearer token for TCP, one line
  uint64_t max_body_size = 256u << 20;
  uint64_t route_limit = 1'000'000;
  uint64_t route_close_grace_ms = 0;  // before closing a retired route's connections
};

// A listening address. Plaintext listeners speak HTTP/1.1 and HTTP/2 with
// prior knowledge (h2c); TLS listeners choose by ALPN (h2, http/1.1).
struct ListenerConfig {
  SocketAddress address;
  bool tls = false;
};

struct GatewayConfig {
  std::vector<ListenerConfig> listeners;  // default 127.0.0.1:8080
  unsigned workers = 0;                   // 0: one per core
  std::string access_log = "stdout";      // a file path, "stdout", or "off"
  std::string log_level = "info";
  Limits limits;
  Http2Limits http2;
  TlsConfig tls;
  UpstreamPoolLimits upstream_pool;
  std::vector<Route> routes;
  bool routes_given = false;  // the file has a routes: key
  ControlConfig control;
  AuthConfig auth;
  KeyRing public_keys;    // auth.public_keys
  std::string state_dir;  // where routes.json (the applied table) is kept; empty: nowhere
};

// Validates and applies a parsed config document over the defaults.
// True when a listener, or the TCP control API, terminates TLS.
bool needsTlsCertificates(const GatewayConfig& config);

bool parseGatewayConfig(const nlohmann::json& root, GatewayConfig& config, ValidationError& error);

// Loads a YAML/JSON config file. On failure `message` is
// "FILE:LINE: field: reason".
bool loadGatewayConfigFile(const std::string& file, GatewayConfig& config, std::string& message);

// "10s", "75s", "500ms", "1h", "2m" -> milliseconds.
bool parseDuration(const std::string& text, uint64_t& milliseconds);

}  // namespace spacegate
