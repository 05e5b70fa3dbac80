// AccessPolicy: who may use a route. Decides, for one request and its route,
// whether it is forwarded, answered with the cookie exchange (a good
// `sg_token` in the query: 302 to the same URL without it, and a host-only
// cookie), refused (401, or a 302 to the login page for a browser
// navigation), or forbidden (403: a WebSocket from another site). It also
// says which credentials the gateway consumed, so that none reaches the
// Gitspace. Sans-IO: a RequestHead and a Route in, a decision out.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "auth/access_token.h"
#include "auth/token_cache.h"
#include "http/message.h"
#include "route/route.h"

namespace spacegate {

struct AuthConfig {
  std::string cookie_name = "sg_token";
  std::string query_parameter = "sg_token";
  std::string login_url;  // empty: browsers get 401 like tools
};

struct AccessDecision {
  enum class Outcome {
    kAllow,               // forward, without the consumed credentials
    kRedirectWithCookie,  // 302 to `location` with `set_cookie`
    kUnauthorized,        // 401 with WWW-Authenticate: Bearer
    kLoginRedirect,       // 302 to `location` (the login page)
    kForbidden,           // 403
  };
  Outcome outcome = Outcome::kUnauthorized;
  bool strip_authorization = false;  // the Authorization header held the gateway's token
  bool strip_cookie = false;         // a Cookie field holds the gateway's cookie
  std::string rewritten_path;        // the path without the token parameter ("" = unchanged)
  std::string location;
  std::string set_cookie;
  const char* reason = "";  // for the log only, never for the client
  std::string subject;      // the token's sub, for the log
};

struct AccessContext {
  const AuthConfig& config;
  const KeyRingSnapshot& keys;
  TokenCache& cache;
  int64_t now_unix;
  bool tls;  // the listener is TLS: cookies get Secure
};

AccessDecision decideAccess(const RequestHead& request, const Route& route,
                            const AccessContext& context);

// Who may open a tunnel (CONNECT, or the WebSocket tunnel endpoint) to
// `port` of a route's Gitspace: a bearer token (Proxy-Authorization first,
// then Authorization; never a cookie or a query parameter) for the route's
// Gitspace with scope "ssh" (and the owner's, on owner routes), and a port
// among the route's tunnel_ports. Agent and public routes open no tunnels.
struct TunnelAccessDecision {
  enum class Outcome {
    kAllow,
    kUnauthorized,  // no token, or not a valid one: 407 (CONNECT) or 401
    kForbidden,     // a valid token that does not open this tunnel: 403
  };
  Outcome outcome = Outcome::kUnauthorized;
  const char* reason = "";  // for the log, and the client's short reason on 403
  std::string subject;
};

TunnelAccessDecision decideTunnelAccess(const RequestHead& request, const Route& route,
                                        uint16_t port, const AccessContext& context);

// Helpers, exposed for tests and the header rewriter.
// The value of cookie `name` in the request's Cookie fields, or "".
std::string_view findCookie(const HeaderList& headers, std::string_view name);
// Whether any Cookie field names cookie `name` (even with an empty value).
bool hasCookie(const HeaderList& headers, std::string_view name);
// The first non-empty value of cookie `name` within one Cookie field value.
std::string_view findCookieInValue(std::string_view cookie_value, std::string_view name);
// A Cookie field value without cookie `name`, other cookies byte for byte.
std::string removeCookie(std::string_view cookie_value, std::string_view name);
// The value of query parameter `name` in `path`, and the path without it.
bool extractQueryParameter(std::string_view path, std::string_view name, std::string& value,
                           std::string& path_without);
// The port a route serves: its upstream's port (0 for unix sockets).
uint16_t routePort(const Route& route);

}  // namespace spacegate
