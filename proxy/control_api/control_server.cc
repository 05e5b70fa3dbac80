#include "control_api/control_server.h"

namespace spacegate {

namespace {

ServiceServerConfig serviceConfig(const ControlServerConfig& config) {
  ServiceServerConfig service;
  service.name = "control";
  service.socket_path = config.socket_path;
  service.tcp_enabled = config.tcp_enabled;
  service.tcp_address = config.tcp_address;
  service.max_body_size = config.max_body_size;
  service.tls = config.tls;
  return service;
}

}  // namespace

ControlServer::ControlServer(ControlApi& api, ControlServerConfig config, const Limits& limits)
    : api_(api), config_(std::move(config)), server_(*this, serviceConfig(config_), limits) {}

bool ControlServer::open(std::string& error) {
  if (config_.tcp_enabled && config_.token.empty()) {
    error = "control.address needs control.token_file";
    return false;
  }
  return server_.open(error);
}

void ControlServer::handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) {
  if (request.over_tcp && !request.hasBearerToken(config_.token)) {
    exchange->respond(ServiceResponse::error(401, "a valid bearer token is required"));
    return;
  }
  ControlRequest control_request;
  control_request.method = std::move(request.method);
  control_request.path = std::move(request.path);
  control_request.query = std::move(request.query);
  control_request.body = std::move(request.body);
  ControlResponse answer = api_.handle(control_request);
  ServiceResponse response;
  response.status = answer.status;
  response.content_type = std::move(answer.content_type);
  response.body = std::move(answer.body);
  if (!answer.allow.empty()) response.headers.emplace_back("Allow", std::move(answer.allow));
  exchange->respond(std::move(response));
}

}  // namespace spacegate
