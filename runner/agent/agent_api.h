// AgentApi: the agent's HTTP+JSON API, as a ServiceHandler: routing (404
// for an unknown path, 405 with Allow for a known one with the wrong
// method), the three kinds of caller (anyone for /healthz, the runner with
// its per-machine secret for the assignment, the control plane's agent
// tokens for everything else), request bodies to GitspaceSpec, and the
// controller's answers to JSON. The setup log is served whole, from an
// offset, or followed as a chunked stream while setup runs.
//
// Answers go through AgentReply rather than straight to ServiceExchange:
// that is the seam the unit tests use to call the handler with requests of
// their own and read what it answered, without a socket.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "auth/access_token.h"
#include "runner/agent/gitspace_controller.h"
#include "runner/agent/setup_log.h"
#include "service/service_server.h"

namespace spacegate {

class AgentReply {
 public:
  virtual ~AgentReply() = default;
  virtual void respond(ServiceResponse response) = 0;
  virtual void startStream(int status, std::string content_type) = 0;
  virtual void sendChunk(std::string bytes) = 0;
  virtual void finishStream() = 0;
  // Runs (once) when the client goes before the answer is complete; at once
  // if it has gone already.
  virtual void setOnClientGone(std::function<void()> callback) = 0;
};

class AgentApi : public ServiceHandler {
 public:
  // `now_unix` is the clock tokens are checked against.
  AgentApi(GitspaceController& controller, SetupLog& log,
           std::function<int64_t()> now_unix = nullptr);

  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override;
  // The handler proper; `reply` may be answered later, from another thread.
  void serve(const ServiceRequest& request, std::shared_ptr<AgentReply> reply);

 private:
  // nullptr when the request carries a valid agent token for this machine's
  // Gitspace; otherwise the refusal to send.
  std::unique_ptr<ServiceResponse> checkAccessToken(const ServiceRequest& request) const;
  void putAssignment(const ServiceRequest& request, AgentReply& reply);
  void putGitspace(const ServiceRequest& request, AgentReply& reply);
  void getLogs(const ServiceRequest& request, std::shared_ptr<AgentReply> reply);
  ServiceResponse status(int http_status) const;

  GitspaceController& controller_;
  SetupLog& log_;
  const KeyRing keys_;
  std::function<int64_t()> now_unix_;
};

// 1..128 characters of [A-Za-z0-9._-].
bool isGitspaceId(std::string_view id);

}  // namespace spacegate
