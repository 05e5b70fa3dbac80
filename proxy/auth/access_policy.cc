#include "auth/access_policy.h"

#include <algorithm>

#include <llhttp.h>

#include "route/route_table.h"

namespace spacegate {

namespace {

std::string percentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '.' || c == '_' || c == '~';
    if (plain) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

bool isBrowserNavigation(const RequestHead& request) {
  if (request.method != HTTP_GET && request.method != HTTP_HEAD) return false;
  if (const HeaderField* mode = findHeader(request.headers, "sec-fetch-mode")) {
    return equalsIgnoringCase(mode->value, "navigate");
  }
  const HeaderField* accept = findHeader(request.headers, "accept");
  return accept && accept->value.find("text/html") != std::string_view::npos;
}

// "http://host:port" -> "host:port", lower case; "" if not a URL origin.
std::string originAuthority(std::string_view origin) {
  size_t scheme_end = origin.find("://");
  if (scheme_end == std::string_view::npos) return {};
  std::string authority(origin.substr(scheme_end + 3));
  if (authority.find('/') != std::string::npos) authority.erase(authority.find('/'));
  for (char& c : authority) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return authority;
}

std::string lowerCase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

// Whether a valid token admits this request to this route.
bool tokenAdmits(const AccessToken& token, const Route& route, const RequestHead& request,
                 bool from_bearer_header, const char*& reason) {
  if (!token.aud.empty() && token.aud != route.id &&
      token.aud != RouteTable::normaliseHost(request.host)) {
    reason = "token audience does not match";
    return false;
  }
  bool agent = token.hasScope("agent");
  switch (route.access) {
    case RouteAccess::kPublic: return true;
    case RouteAccess::kAgent:
      // The task path to the agent: only an agent token, only as a header.
      if (!agent || !from_bearer_header || token.gs != route.gitspace) {
        reason = "not an agent token for this Gitspace";
        return false;
      }
      return true;
    case RouteAccess::kAuthenticated:
      // A user's IDE token; not an agent token, not a one-port share link.
      if (agent || !token.hasScope("ide")) {
        reason = "not a user token";
        return false;
      }
      return true;
    case RouteAccess::kOwner: {
      if (agent) {
        reason = "agent tokens do not open user routes";
        return false;
      }
      bool gitspace_matches = token.gs == route.gitspace || token.gs == "*";
      if (token.hasScope("ide") && gitspace_matches && token.sub == route.owner) return true;
      // A share link: this one port of this Gitspace, for whoever holds it.
      uint16_t port = routePort(route);
      if (port != 0 && token.gs == route.gitspace &&
          token.hasScope("port:" + std::to_string(port))) {
        return true;
      }
      reason = "token is not for this Gitspace, owner or port";
      return false;
    }
  }
  return false;
}

}  // namespace

uint16_t routePort(const Route& route) {
  return route.upstream.kind == SocketAddress::Kind::kUnix ? 0 : route.upstream.port;
}

std::string_view findCookieInValue(std::string_view cookie_value, std::string_view name) {
  std::string_view rest = cookie_value;
  while (!rest.empty()) {
    size_t semicolon = rest.find(';');
    std::string_view pair = trim(rest.substr(0, semicolon));
    rest = semicolon == std::string_view::npos ? std::string_view() : rest.substr(semicolon + 1);
    size_t equals = pair.find('=');
    if (equals != std::string_view::npos && trim(pair.substr(0, equals)) == name) {
      std::string_view value = trim(pair.substr(equals + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      // An empty one must not hide a real one behind it.
      if (!value.empty()) return value;
    }
  }
  return {};
}

bool hasCookie(const HeaderList& headers, std::string_view name) {
  for (const HeaderField& field : headers) {
    if (!equalsIgnoringCase(field.name, "cookie")) continue;
    std::string_view rest = field.value;
    while (!rest.empty()) {
      size_t semicolon = rest.find(';');
      std::string_view pair = trim(rest.substr(0, semicolon));
      rest = semicolon == std::string_view::npos ? std::string_view() : rest.substr(semicolon + 1);
      if (trim(pair.substr(0, pair.find('='))) == name) return true;
    }
  }
  return false;
}

std::string_view findCookie(const HeaderList& headers, std::string_view name) {
  for (const HeaderField& field : headers) {
    if (!equalsIgnoringCase(field.name, "cookie")) continue;
    std::string_view value = findCookieInValue(field.value, name);
    if (!value.empty()) return value;
  }
  return {};
}

std::string removeCookie(std::string_view cookie_value, std::string_view name) {
  std::string out;
  std::string_view rest = cookie_value;
  while (!rest.empty()) {
    size_t semicolon = rest.find(';');
    std::string_view pair = rest.substr(0, semicolon);
    rest = semicolon == std::string_view::npos ? std::string_view() : rest.substr(semicolon + 1);
    std::string_view trimmed = trim(pair);
    size_t equals = trimmed.find('=');
    std::string_view pair_name = trim(trimmed.substr(0, equals));
    if (pair_name == name) continue;
    if (trimmed.empty()) continue;
    if (!out.empty()) out.append("; ");
    out.append(trimmed);
  }
  return out;
}

bool extractQueryParameter(std::string_view path, std::string_view name, std::string& value,
                           std::string& path_without) {
  size_t question = path.find('?');
  if (question == std::string_view::npos) return false;
  std::string_view query = path.substr(question + 1);
  std::string kept;
  bool found = false;
  while (true) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t equals = pair.find('=');
    std::string_view pair_name = pair.substr(0, equals);
    if (pair_name == name) {
      // Every occurrence goes; the first one is the value.
      if (!found) {
        value = std::string(equals == std::string_view::npos ? std::string_view()
                                                             : pair.substr(equals + 1));
      }
      found = true;
    } else if (!pair.empty()) {
      if (!kept.empty()) kept.push_back('&');
      kept.append(pair);
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  if (!found) return false;
  path_without = std::string(path.substr(0, question));
  if (!kept.empty()) path_without += "?" + kept;
  return true;
}

AccessDecision decideAccess(const RequestHead& request, const Route& route,
                            const AccessContext& context) {
  AccessDecision decision;
  const AuthConfig& config = context.config;
  std::string_view cookie_token = findCookie(request.headers, config.cookie_name);
  decision.strip_cookie = hasCookie(request.headers, config.cookie_name);
  std::string query_token;
  std::string path_without_token;
  bool has_query_token =
      extractQueryParameter(request.path, config.query_parameter, query_token, path_without_token);
  if (has_query_token) decision.rewritten_path = path_without_token;

  if (route.access == RouteAccess::kPublic) {
    // Nothing to check; the gateway's own credentials still never go upstream.
    decision.outcome = AccessDecision::Outcome::kAllow;
    return decision;
  }

  std::string_view bearer;
  if (const HeaderField* authorization = findHeader(request.headers, "authorization")) {
    if (authorization->value.size() > 7 &&
        equalsIgnoringCase(authorization->value.substr(0, 7), "bearer ")) {
      bearer = trim(authorization->value.substr(7));
    }
  }
  auto refuse = [&](const char* reason) {
    decision.reason = reason;
    if (!config.login_url.empty() && isBrowserNavigation(request) && bearer.empty()) {
      decision.outcome = AccessDecision::Outcome::kLoginRedirect;
      std::string return_to =
          (context.tls ? "https://" : "http://") + lowerCase(request.host) +
          std::string(decision.rewritten_path.empty() ? request.path : decision.rewritten_path);
      decision.location = config.login_url +
                          (config.login_url.find('?') == std::string::npos ? "?" : "&") +
                          "return_to=" + percentEncode(return_to);
    } else {
      decision.outcome = AccessDecision::Outcome::kUnauthorized;
    }
    return decision;
  };

  // The browser's first visit: a token in the query becomes a cookie.
  if (has_query_token) {
    const AccessToken* token = nullptr;
    if (query_token.empty() || query_token.size() > kMaxTokenLength)
      return refuse("malformed token");
    TokenCheck check = context.cache.check(query_token, context.keys, context.now_unix, token);
    if (check != TokenCheck::kValid) return refuse(tokenCheckName(check));
    const char* reason = "";
    if (!tokenAdmits(*token, route, request, /*from_bearer_header=*/false, reason))
      return refuse(reason);
    decision.subject = token->sub;
    decision.outcome = AccessDecision::Outcome::kRedirectWithCookie;
    // "//evil.example/x" or "/\\evil.example" would send the browser to another
    // host: the Location is always a path on this one.
    size_t first = path_without_token.find_first_not_of("/\\");
    decision.location =
        "/" + (first == std::string::npos ? std::string() : path_without_token.substr(first));
    int64_t max_age = std::max<int64_t>(0, token->exp - context.now_unix);
    decision.set_cookie = config.cookie_name + "=" + query_token +
                          "; Path=/; Max-Age=" + std::to_string(max_age) +
                          "; HttpOnly; SameSite=Lax" + (context.tls ? "; Secure" : "");
    return decision;
  }

  // The Authorization header wins over the cookie, with no fallback: one
  // request, one credential.
  bool from_header = !bearer.empty();
  std::string_view credential = from_header ? bearer : cookie_token;
  if (credential.empty()) return refuse("no credentials");
  if (credential.size() > kMaxTokenLength) return refuse("malformed token");
  // An agent route forwards the bearer token: the agent checks it again
  // itself (a machine trusts no one on the network, the gateway included).
  // Everywhere else the gateway's token stops at the gateway.
  decision.strip_authorization = from_header && route.access != RouteAccess::kAgent;
  const AccessToken* token = nullptr;
  TokenCheck check = context.cache.check(credential, context.keys, context.now_unix, token);
  if (check != TokenCheck::kValid) return refuse(tokenCheckName(check));
  const char* reason = "";
  if (!tokenAdmits(*token, route, request, from_header, reason)) return refuse(reason);
  decision.subject = token->sub;

  if (request.upgrade) {
    // Cross-site WebSocket hijacking: a browser sends the cookie with a
    // WebSocket opened by any page. The Origin must be this host; only a
    // client with a bearer header may leave it out.
    const HeaderField* origin = findHeader(request.headers, "origin");
    if (origin) {
      if (originAuthority(origin->value) != lowerCase(request.host)) {
        decision.outcome = AccessDecision::Outcome::kForbidden;
        decision.reason = "WebSocket Origin does not match the host";
        return decision;
      }
    } else if (!from_header) {
      decision.outcome = AccessDecision::Outcome::kForbidden;
      decision.reason = "WebSocket without Origin authenticated by cookie";
      return decision;
    }
  }
  decision.outcome = AccessDecision::Outcome::kAllow;
  return decision;
}

TunnelAccessDecision decideTunnelAccess(const RequestHead& request, const Route& route,
                                        uint16_t port, const AccessContext& context) {
  TunnelAccessDecision decision;
  std::string_view bearer;
  for (const char* name : {"proxy-authorization", "authorization"}) {
    const HeaderField* field = findHeader(request.headers, name);
    if (field && field->value.size() > 7 &&
        equalsIgnoringCase(field->value.substr(0, 7), "bearer ")) {
      bearer = trim(field->value.substr(7));
      break;
    }
  }
  if (bearer.empty()) {
    decision.reason = "no bearer token";
    return decision;
  }
  if (bearer.size() > kMaxTokenLength) {
    decision.reason = "malformed token";
    return decision;
  }
  const AccessToken* token = nullptr;
  TokenCheck check = context.cache.check(bearer, context.keys, context.now_unix, token);
  if (check != TokenCheck::kValid) {
    decision.reason = tokenCheckName(check);
    return decision;
  }
  decision.subject = token->sub;
  decision.outcome = TunnelAccessDecision::Outcome::kForbidden;
  if (route.access == RouteAccess::kAgent || route.access == RouteAccess::kPublic) {
    // A shared preview port or the delegate's task path: no way in to ssh.
    decision.reason = "this route opens no tunnels";
  } else if (route.gitspace.empty() || token->gs != route.gitspace) {
    decision.reason = "token is not for this Gitspace";
  } else if (!token->hasScope("ssh")) {
    decision.reason = "token lacks scope ssh";
  } else if (route.access == RouteAccess::kOwner && token->sub != route.owner) {
    decision.reason = "token is not the owner's";
  } else if (route.upstream.kind == SocketAddress::Kind::kUnix) {
    decision.reason = "no tunnels to a unix-socket upstream";
  } else if (std::find(route.tunnel_ports.begin(), route.tunnel_ports.end(), port) ==
             route.tunnel_ports.end()) {
    decision.reason = "port not allowed";
  } else {
    decision.outcome = TunnelAccessDecision::Outcome::kAllow;
  }
  return decision;
}

}  // namespace spacegate
