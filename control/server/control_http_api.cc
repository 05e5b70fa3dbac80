#include "control/server/control_http_api.h"

#include <charconv>

#include "common/log.h"

namespace spacegate {

namespace {

constexpr std::string_view kApi = "/api/v1/";
constexpr int kMaxWaitSeconds = 30;

bool validGitspaceId(std::string_view id) {
  if (id.size() != 11 || !id.starts_with("gs-")) return false;
  for (char c : id.substr(3)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool validTaskId(std::string_view id) {
  if (id.size() < 3 || id.size() > 40 || !id.starts_with("t-")) return false;
  for (char c : id.substr(2)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool parseWhole(std::string_view text, int64_t maximum, int64_t& value) {
  if (text.empty() || text.size() > 19) return false;
  auto [end, code] = std::from_chars(text.data(), text.data() + text.size(), value);
  return code == std::errc() && end == text.data() + text.size() && value >= 0 && value <= maximum;
}

// The body as a JSON object; an empty body counts as {} where allowed.
bool parseBody(const ServiceRequest& request, bool empty_allowed, nlohmann::json& body,
               ApiOutcome& error) {
  if (request.body.empty() && empty_allowed) {
    body = nlohmann::json::object();
    return true;
  }
  body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded()) {
    error = ApiOutcome::fail(400, "the body is not valid JSON");
    return false;
  }
  if (!body.is_object()) {
    error = ApiOutcome::fail(400, "the body must be a JSON object");
    return false;
  }
  return true;
}

std::vector<std::string_view> splitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

}  // namespace

void ControlHttpApi::handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) {
  ApiOutcome outcome = route(request, exchange);
  if (Log::enabled(LogLevel::kDebug)) {
    logEvent(LogLevel::kDebug, "request")
        .with("method", request.method)
        .with("path", request.path)
        .with("status", static_cast<int64_t>(outcome.handled ? 0 : outcome.status))
        .emit();
  }
  if (outcome.handled) return;
  ServiceResponse response;
  if (!outcome.error.empty()) {
    response = ServiceResponse::error(outcome.status, outcome.error, outcome.field);
    if (outcome.status == 401) response.headers.emplace_back("WWW-Authenticate", "Bearer");
    if (outcome.status == 405) response.headers.emplace_back("Allow", outcome.allow);
  } else if (outcome.status == 204) {
    response.status = 204;
  } else {
    response = ServiceResponse::json(
        outcome.status,
        outcome.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }
  exchange->respond(std::move(response));
}

ApiOutcome ControlHttpApi::route(const ServiceRequest& request,
                                 const std::shared_ptr<ServiceExchange>& exchange) {
  const std::string& path = request.path;
  if (path == "/healthz") {
    if (request.method != "GET") return ApiOutcome::methodNotAllowed("GET");
    return ApiOutcome::ok(200, {{"status", "ok"}});
  }
  if (path == "/api/v1/public-key") {
    if (request.method != "GET") return ApiOutcome::methodNotAllowed("GET");
    return ApiOutcome::ok(200, plane_.publicKeyJson());
  }
  if (!path.starts_with(kApi)) return ApiOutcome::fail(404, "not found");
  Caller caller = plane_.authenticate(request.bearerToken());
  if (caller.kind == Caller::Kind::kNone) {
    return ApiOutcome::fail(401, request.bearerToken().empty() ? "a bearer token is required"
                                                               : "the bearer token is not valid");
  }
  std::string rest = path.substr(kApi.size());
  if (rest == "delegate" || rest.starts_with("delegate/")) {
    if (caller.kind != Caller::Kind::kDelegate) {
      return ApiOutcome::fail(403, "the delegate API needs a delegate token");
    }
    return delegateApi(request, rest.size() > 9 ? rest.substr(9) : "", exchange);
  }
  if (caller.kind != Caller::Kind::kUser) {
    return ApiOutcome::fail(403, "a delegate token is only good for the delegate API");
  }
  return userApi(request, caller, exchange);
}

ApiOutcome ControlHttpApi::userApi(const ServiceRequest& request, const Caller& caller,
                                   const std::shared_ptr<ServiceExchange>& exchange) {
  std::vector<std::string_view> parts = splitPath(std::string_view(request.path).substr(8));
  const std::string& method = request.method;
  nlohmann::json body;
  ApiOutcome error;
  std::string_view first = parts.empty() ? "" : parts[0];

  if (first == "users") {
    if (parts.size() == 1) {
      if (method != "POST") return ApiOutcome::methodNotAllowed("POST");
      if (!parseBody(request, false, body, error)) return error;
      return plane_.createUser(caller, body);
    }
    if (parts.size() == 2 && parts[1] == "me") {
      if (method != "GET") return ApiOutcome::methodNotAllowed("GET");
      return plane_.me(caller);
    }
    if (parts.size() == 3 && parts[1] == "me" && parts[2] == "ssh-keys") {
      if (method == "GET") return plane_.sshKeys(caller);
      if (method != "PUT") return ApiOutcome::methodNotAllowed("GET, PUT");
      if (!parseBody(request, false, body, error)) return error;
      return plane_.setSshKeys(caller, body);
    }
    return ApiOutcome::fail(404, "not found");
  }
  if (first == "infra" && parts.size() == 1) {
    if (method == "GET") return plane_.listInfra(caller);
    if (method != "POST") return ApiOutcome::methodNotAllowed("GET, POST");
    if (!parseBody(request, false, body, error)) return error;
    return plane_.createInfra(caller, body);
  }
  if (first == "gateways" && parts.size() == 1) {
    if (method != "GET") return ApiOutcome::methodNotAllowed("GET");
    return plane_.gateways(caller);
  }
  if (first != "gitspaces") return ApiOutcome::fail(404, "not found");
  if (parts.size() == 1) {
    if (method == "GET") return plane_.listGitspaces(caller);
    if (method != "POST") return ApiOutcome::methodNotAllowed("GET, POST");
    if (!parseBody(request, false, body, error)) return error;
    return plane_.createGitspace(caller, body);
  }
  std::string id(parts[1]);
  if (!validGitspaceId(id)) return ApiOutcome::fail(404, "no such Gitspace");
  if (parts.size() == 2) {
    if (method == "GET") return plane_.getGitspace(caller, id);
    if (method == "DELETE") return plane_.gitspaceAction(caller, id, "delete");
    return ApiOutcome::methodNotAllowed("GET, DELETE");
  }
  if (parts.size() == 4 && parts[2] == "actions") {
    if (method != "POST") return ApiOutcome::methodNotAllowed("POST");
    if (parts[3] != "start" && parts[3] != "stop" && parts[3] != "reset") {
      return ApiOutcome::fail(404, "no such action (start, stop, reset)");
    }
    return plane_.gitspaceAction(caller, id, std::string(parts[3]));
  }
  if (parts.size() == 3 && parts[2] == "token") {
    if (method != "POST") return ApiOutcome::methodNotAllowed("POST");
    if (!parseBody(request, true, body, error)) return error;
    return plane_.issueToken(caller, id, body);
  }
  if (parts.size() == 3 && parts[2] == "events") {
    if (method != "GET") return ApiOutcome::methodNotAllowed("GET");
    int64_t after = 0;
    std::string text;
    if (request.queryParameter("after", text)) {
      if (!parseWhole(text, INT64_MAX / 2, after)) {
        return ApiOutcome::fail(400, "must be an event id (a whole number)", "after");
      }
    } else if (const std::string* last = request.header("last-event-id")) {
      if (!parseWhole(*last, INT64_MAX / 2, after)) {
        return ApiOutcome::fail(400, "must be an event id (a whole number)", "Last-Event-ID");
      }
    }
    return plane_.openEventStream(caller, id, after, exchange);
  }
  return ApiOutcome::fail(404, "not found");
}

ApiOutcome ControlHttpApi::delegateApi(const ServiceRequest& request, const std::string& rest,
                                       const std::shared_ptr<ServiceExchange>& exchange) {
  const std::string& method = request.method;
  nlohmann::json body;
  ApiOutcome error;
  if (rest == "register") {
    if (method != "POST") return ApiOutcome::methodNotAllowed("POST");
    if (!parseBody(request, false, body, error)) return error;
    return plane_.registerDelegate(body);
  }
  std::vector<std::string_view> parts = splitPath(rest);
  bool known =
      (parts.size() == 1 &&
       (parts[0] == "tasks" || parts[0] == "routes" || parts[0] == "report")) ||
      (parts.size() == 3 && parts[0] == "tasks" && (parts[2] == "events" || parts[2] == "result"));
  if (!known) return ApiOutcome::fail(404, "not found");
  std::string delegate_id;
  const std::string* header = request.header("x-spacegate-delegate");
  ApiOutcome resolved = plane_.resolveDelegate(header, delegate_id);
  if (!resolved.error.empty()) return resolved;

  if (parts[0] == "tasks" && parts.size() == 1) {
    if (method != "GET") return ApiOutcome::methodNotAllowed("GET");
    int64_t wait = 0;
    std::string text;
    if (request.queryParameter("wait", text) && !parseWhole(text, kMaxWaitSeconds, wait)) {
      return ApiOutcome::fail(400, "must be a whole number of seconds from 0 to 30", "wait");
    }
    return plane_.pollTask(delegate_id, static_cast<int>(wait), exchange);
  }
  if (parts[0] == "routes") {
    if (method != "GET") return ApiOutcome::methodNotAllowed("GET");
    return plane_.routes(delegate_id);
  }
  if (parts[0] == "report") {
    if (method != "POST") return ApiOutcome::methodNotAllowed("POST");
    if (!parseBody(request, false, body, error)) return error;
    return plane_.report(delegate_id, body);
  }
  std::string task_id(parts[1]);
  if (!validTaskId(task_id)) return ApiOutcome::fail(404, "no such task");
  if (method != "POST") return ApiOutcome::methodNotAllowed("POST");
  if (!parseBody(request, false, body, error)) return error;
  if (parts[2] == "events") return plane_.taskEvents(delegate_id, task_id, body);
  return plane_.taskResult(delegate_id, task_id, body);
}

}  // namespace spacegate
