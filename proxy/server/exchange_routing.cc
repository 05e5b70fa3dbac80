#include "server/exchange_routing.h"

#include "auth/access_policy.h"
#include "server/worker.h"

namespace spacegate {

ExchangeDecision decideExchange(Worker& worker, const RouteTable& routes,
                                const RequestHead& request, bool tls) {
  ExchangeDecision decision;
  decision.route = routes.match(request.host, request.path);
  if (!decision.route) {
    decision.status = 404;
    decision.detail = "no route for this host and path";
    decision.error = "no route";
    return decision;
  }
  const Route& route = *decision.route;
  AccessContext access{worker.authConfig(), worker.keys(), worker.tokenCache(),
                       static_cast<int64_t>(worker.nowUnixMs() / 1000), tls};
  AccessDecision verdict = decideAccess(request, route, access);
  decision.error = verdict.reason;
  switch (verdict.outcome) {
    case AccessDecision::Outcome::kAllow: break;
    case AccessDecision::Outcome::kRedirectWithCookie:
      // Never a hint of the token in logs or caches: the URL drops it.
      decision.status = 302;
      decision.error = "token exchanged for a cookie";
      decision.fields = {{"Location", verdict.location},
                         {"Set-Cookie", verdict.set_cookie},
                         {"Cache-Control", "no-store"}};
      return decision;
    case AccessDecision::Outcome::kUnauthorized:
      decision.status = 401;
      decision.detail = "authentication required";
      decision.fields = {{"WWW-Authenticate", "Bearer realm=\"spacegate\""}};
      return decision;
    case AccessDecision::Outcome::kLoginRedirect:
      decision.status = 302;
      decision.fields = {{"Location", verdict.location}, {"Cache-Control", "no-store"}};
      return decision;
    case AccessDecision::Outcome::kForbidden:
      decision.status = 403;
      decision.detail = "forbidden";
      return decision;
  }
  decision.kind = ExchangeDecision::Kind::kForward;
  decision.drop_authorization = verdict.strip_authorization;
  decision.strip_cookie = verdict.strip_cookie;
  std::string_view path =
      verdict.rewritten_path.empty() ? request.path : std::string_view(verdict.rewritten_path);
  if (route.strip_prefix) {
    decision.rewritten_path = RouteTable::stripPrefix(route.path_prefix, path);
  } else if (!verdict.rewritten_path.empty()) {
    decision.rewritten_path = std::move(verdict.rewritten_path);
  }
  return decision;
}

void recordExchange(Worker& worker, const Route* route, AccessLogEntry& entry) {
  WorkerCounters& counters = worker.mutableCounters();
  int status_class = entry.status >= 100 && entry.status < 600 ? entry.status / 100 : 0;
  WorkerCounters::add(counters.requests_by_class[status_class]);
  if (route) route->stats->countStatus(entry.status);
  std::string redacted;
  const std::string& parameter = worker.authConfig().query_parameter;
  if (entry.path.find(parameter) != std::string_view::npos) {
    // A token in the URL never reaches the log.
    std::string ignored;
    if (extractQueryParameter(entry.path, parameter, ignored, redacted)) entry.path = redacted;
  }
  worker.accessLog().append(entry);
}

std::string fieldLines(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string lines;
  for (const auto& [name, value] : fields) {
    lines.append(name).append(": ").append(value).append("\r\n");
  }
  return lines;
}

}  // namespace spacegate
