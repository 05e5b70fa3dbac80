// The order of the checks is the order of the questions a caller needs
// answered: does this path exist (404), with this method (405), who are you
// (401), may you (403), is the machine ready for it (409), is the body right
// (400). A follow stream reads the state before it reads the log, so the
// lines written before setup ended are always sent before the stream ends.
// Nothing the handler calls on the loop thread appends to the setup log
// (the controller logs from its own threads), which keeps a follower's
// chunks in order (see LogFollower::begin).
#include "runner/agent/agent_api.h"

#include <ctime>
#include <mutex>

#include <nlohmann/json.hpp>

namespace spacegate {

namespace {

constexpr size_t kLogChunkSize = 64 * 1024;

ServiceResponse jsonResponse(int status, const nlohmann::json& body) {
  return ServiceResponse::json(
      status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

ServiceResponse unauthorized(std::string_view message, bool invalid_token) {
  ServiceResponse response = ServiceResponse::error(401, message);
  response.headers.emplace_back("WWW-Authenticate",
                                invalid_token
                                    ? "Bearer realm=\"spacegate-agent\", error=\"invalid_token\""
                                    : "Bearer realm=\"spacegate-agent\"");
  return response;
}

std::string tokenProblem(TokenCheck check) {
  switch (check) {
    case TokenCheck::kMalformed: return "access token is malformed";
    case TokenCheck::kUnknownKey: return "access token is signed with an unknown key";
    case TokenCheck::kBadSignature: return "access token signature is not valid";
    case TokenCheck::kExpired: return "access token has expired";
    case TokenCheck::kNotYetValid: return "access token is not valid yet";
    case TokenCheck::kValid: break;
  }
  return std::string("access token is not valid: ") + tokenCheckName(check);
}

// The server's exchange behind the AgentReply seam.
class ExchangeReply : public AgentReply {
 public:
  explicit ExchangeReply(std::shared_ptr<ServiceExchange> exchange)
      : exchange_(std::move(exchange)) {}
  void respond(ServiceResponse response) override { exchange_->respond(std::move(response)); }
  void startStream(int status, std::string content_type) override {
    exchange_->startStream(status, std::move(content_type));
  }
  void sendChunk(std::string bytes) override { exchange_->sendChunk(std::move(bytes)); }
  void finishStream() override { exchange_->finishStream(); }
  void setOnClientGone(std::function<void()> callback) override {
    exchange_->setOnClientGone(std::move(callback));
  }

 private:
  std::shared_ptr<ServiceExchange> exchange_;
};

// One `?follow=true` client: sends what the log gains, and ends when setup
// is over, the log is cleared (a delete) or the client goes. The log's
// watcher list holds it; the client-gone callback only refers to it.
class LogFollower : public std::enable_shared_from_this<LogFollower> {
 public:
  LogFollower(SetupLog& log, const GitspaceController& controller,
              std::shared_ptr<AgentReply> reply, size_t offset)
      : log_(log), controller_(controller), reply_(std::move(reply)), offset_(offset) {}

  // On the server's loop thread, where sendChunk() writes at once; every
  // later pump runs on a thread that appends to the log, where sendChunk()
  // queues to the loop. Holding the lock from the watch to the first send
  // keeps the bytes in order: no queued chunk can hold older bytes than
  // the ones written here.
  void begin() {
    reply_->startStream(200, "text/plain; charset=utf-8");
    std::weak_ptr<LogFollower> weak = weak_from_this();
    reply_->setOnClientGone([weak] {
      if (auto self = weak.lock()) self->clientGone();
    });
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_) return;  // gone already
    generation_ = log_.generation();
    watch_id_ = log_.watch([self = shared_from_this()] { self->pump(); });
    pumpLocked();
  }

 private:
  void pump() {
    std::lock_guard<std::mutex> lock(mutex_);
    pumpLocked();
  }

  void pumpLocked() {
    if (done_) return;
    if (log_.generation() != generation_) return finishLocked();
    bool setting_up = controller_.state() == GitspaceState::kSettingUp;
    while (true) {
      std::string bytes = log_.read(offset_, kLogChunkSize);
      if (bytes.empty()) break;
      offset_ += bytes.size();
      reply_->sendChunk(std::move(bytes));
    }
    if (!setting_up) finishLocked();
  }

  void finishLocked() {
    done_ = true;
    reply_->finishStream();
    log_.unwatch(watch_id_);
  }

  void clientGone() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_) return;
    done_ = true;
    log_.unwatch(watch_id_);
  }

  SetupLog& log_;
  const GitspaceController& controller_;
  std::shared_ptr<AgentReply> reply_;
  std::mutex mutex_;
  size_t offset_;
  uint64_t generation_ = 0;
  SetupLog::WatchId watch_id_ = 0;
  bool done_ = false;
};

struct Route {
  const char* path;
  const char* allow;  // methods, as the Allow field lists them
};

constexpr Route kRoutes[] = {
    {"/healthz", "GET"},
    {"/v1/machine/assignment", "PUT"},
    {"/v1/gitspace", "GET, PUT, DELETE"},
    {"/v1/gitspace/logs", "GET"},
    {"/v1/gitspace/stop", "POST"},
    {"/v1/gitspace/start", "POST"},
};

bool allows(std::string_view allow, std::string_view method) {
  while (!allow.empty()) {
    size_t comma = allow.find(", ");
    if (allow.substr(0, comma) == method) return true;
    if (comma == std::string_view::npos) break;
    allow.remove_prefix(comma + 2);
  }
  return false;
}

}  // namespace

bool isGitspaceId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

AgentApi::AgentApi(GitspaceController& controller, SetupLog& log, std::function<int64_t()> now_unix)
    : controller_(controller),
      log_(log),
      keys_(controller.config().keyRing()),
      now_unix_(std::move(now_unix)) {
  if (!now_unix_) now_unix_ = [] { return static_cast<int64_t>(::time(nullptr)); };
}

void AgentApi::handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) {
  serve(request, std::make_shared<ExchangeReply>(std::move(exchange)));
}

ServiceResponse AgentApi::status(int http_status) const {
  return jsonResponse(http_status, controller_.statusJson());
}

std::unique_ptr<ServiceResponse> AgentApi::checkAccessToken(const ServiceRequest& request) const {
  std::string_view token = request.bearerToken();
  if (token.empty()) {
    bool other_scheme = request.header("authorization") != nullptr;
    return std::make_unique<ServiceResponse>(
        unauthorized(other_scheme ? "authorization must be a bearer token"
                                  : "missing bearer token (an agent access token is required)",
                     other_scheme));
  }
  AccessToken parsed;
  TokenCheck check = token.size() > kMaxTokenLength
                         ? TokenCheck::kMalformed
                         : verifyAccessToken(token, keys_, now_unix_(), parsed);
  if (check != TokenCheck::kValid) {
    return std::make_unique<ServiceResponse>(unauthorized(tokenProblem(check), true));
  }
  if (!parsed.hasScope("agent")) {
    return std::make_unique<ServiceResponse>(
        ServiceResponse::error(403, "token scope does not include agent"));
  }
  std::string gitspace_id = controller_.gitspaceId();
  if (gitspace_id.empty()) {
    return std::make_unique<ServiceResponse>(
        ServiceResponse::error(409, "machine is not assigned to a Gitspace"));
  }
  // "*" (the deployment-wide kind) is not accepted: an agent serves one
  // Gitspace, and only its own tokens may drive it.
  if (parsed.gs != gitspace_id) {
    return std::make_unique<ServiceResponse>(
        ServiceResponse::error(403, "token is for another Gitspace"));
  }
  return nullptr;
}

void AgentApi::serve(const ServiceRequest& request, std::shared_ptr<AgentReply> reply) {
  const Route* route = nullptr;
  for (const Route& candidate : kRoutes) {
    if (request.path == candidate.path) route = &candidate;
  }
  if (!route) {
    reply->respond(ServiceResponse::error(404, "no such endpoint"));
    return;
  }
  if (!allows(route->allow, request.method)) {
    ServiceResponse response = ServiceResponse::error(405, "method not allowed");
    response.headers.emplace_back("Allow", route->allow);
    reply->respond(std::move(response));
    return;
  }
  std::string_view path = request.path;
  if (path == "/healthz") {
    AgentState state = controller_.snapshot();
    reply->respond(jsonResponse(200, {{"status", "ok"},
                                      {"machine_id", controller_.config().machine_id},
                                      {"gitspace_id", state.gitspace_id},
                                      {"gitspace_state", gitspaceStateName(state.state)}}));
    return;
  }
  if (path == "/v1/machine/assignment") {
    putAssignment(request, *reply);
    return;
  }
  if (auto refusal = checkAccessToken(request)) {
    reply->respond(std::move(*refusal));
    return;
  }
  if (path == "/v1/gitspace") {
    if (request.method == "GET") {
      reply->respond(status(200));
    } else if (request.method == "PUT") {
      putGitspace(request, *reply);
    } else {
      controller_.remove(
          [this, reply](GitspaceController::Result result, const std::string& error) {
            if (result == GitspaceController::Result::kDone) {
              reply->respond(status(200));
            } else {
              reply->respond(ServiceResponse::error(500, "delete failed: " + error));
            }
          });
    }
    return;
  }
  if (path == "/v1/gitspace/logs") {
    getLogs(request, reply);
    return;
  }
  if (path == "/v1/gitspace/stop") {
    controller_.stop([this, reply](GitspaceController::Result result, const std::string& error) {
      if (result == GitspaceController::Result::kDone) {
        reply->respond(status(200));
      } else {
        reply->respond(ServiceResponse::error(409, error));
      }
    });
    return;
  }
  // POST /v1/gitspace/start
  std::string error;
  switch (controller_.start(error)) {
    case GitspaceController::Result::kAccepted: reply->respond(status(202)); return;
    case GitspaceController::Result::kDone:
    case GitspaceController::Result::kUnchanged: reply->respond(status(200)); return;
    case GitspaceController::Result::kConflict:
      reply->respond(ServiceResponse::error(409, error));
      return;
    case GitspaceController::Result::kFailed:
      reply->respond(ServiceResponse::error(500, error));
      return;
  }
}

void AgentApi::putAssignment(const ServiceRequest& request, AgentReply& reply) {
  if (!request.hasBearerToken(controller_.config().runner_secret)) {
    reply.respond(unauthorized("the runner's secret is required",
                               request.header("authorization") != nullptr));
    return;
  }
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded()) {
    reply.respond(ServiceResponse::error(400, "body is not valid JSON"));
    return;
  }
  if (!body.is_object()) {
    reply.respond(ServiceResponse::error(400, "body must be a JSON object"));
    return;
  }
  for (const auto& [key, value] : body.items()) {
    if (key != "gitspace_id") {
      reply.respond(
          ServiceResponse::error(400, "unknown field: " + key.substr(0, 80), key.substr(0, 80)));
      return;
    }
  }
  if (!body.contains("gitspace_id") || !body["gitspace_id"].is_string() ||
      !isGitspaceId(body["gitspace_id"].get<std::string>())) {
    reply.respond(ServiceResponse::error(400, "must be 1 to 128 characters of [A-Za-z0-9._-]",
                                         "gitspace_id"));
    return;
  }
  std::string gitspace_id = body["gitspace_id"].get<std::string>();
  std::string error;
  switch (controller_.assign(gitspace_id, error)) {
    case GitspaceController::Result::kConflict:
      reply.respond(ServiceResponse::error(409, error));
      return;
    default:
      reply.respond(jsonResponse(
          200, {{"gitspace_id", gitspace_id}, {"machine_id", controller_.config().machine_id}}));
      return;
  }
}

void AgentApi::putGitspace(const ServiceRequest& request, AgentReply& reply) {
  GitspaceSpec spec;
  SpecError spec_error;
  if (!parseGitspaceSpec(request.body, spec, spec_error)) {
    reply.respond(ServiceResponse::error(400, spec_error.message, spec_error.field));
    return;
  }
  std::string error;
  switch (controller_.applySpec(spec, error)) {
    case GitspaceController::Result::kAccepted: reply.respond(status(202)); return;
    case GitspaceController::Result::kDone:
    case GitspaceController::Result::kUnchanged: reply.respond(status(200)); return;
    case GitspaceController::Result::kConflict:
      reply.respond(ServiceResponse::error(409, error));
      return;
    case GitspaceController::Result::kFailed:
      reply.respond(ServiceResponse::error(500, error));
      return;
  }
}

void AgentApi::getLogs(const ServiceRequest& request, std::shared_ptr<AgentReply> reply) {
  size_t offset = 0;
  std::string text;
  if (request.queryParameter("offset", text)) {
    bool digits = !text.empty() && text.size() <= 15 &&
                  text.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) {
      reply->respond(
          ServiceResponse::error(400, "must be a byte offset (a whole number)", "offset"));
      return;
    }
    offset = static_cast<size_t>(std::stoull(text));
  }
  bool follow = false;
  if (request.queryParameter("follow", text)) {
    if (text == "true" || text == "1") {
      follow = true;
    } else if (text != "false" && text != "0") {
      reply->respond(ServiceResponse::error(400, "must be true or false", "follow"));
      return;
    }
  }
  if (!follow) {
    ServiceResponse response;
    response.content_type = "text/plain; charset=utf-8";
    response.body = log_.read(offset);
    reply->respond(std::move(response));
    return;
  }
  auto follower = std::make_shared<LogFollower>(log_, controller_, std::move(reply), offset);
  follower->begin();
}

}  // namespace spacegate
