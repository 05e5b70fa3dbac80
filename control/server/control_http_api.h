// ControlHttpApi: the control plane's HTTP routes (docs/control-plane.md):
// the user API under /api/v1 and the delegate API under /api/v1/delegate.
// It authenticates the bearer token, parses bodies and query parameters, and
// hands each call to ControlPlane; answers are JSON, errors
// {"error", "field"}. Runs on the server's loop thread and never blocks
// there: long polls and event streams are answered later by ControlPlane.
#pragma once

#include <memory>
#include <string>

#include "control/server/control_plane.h"
#include "service/service_server.h"

namespace spacegate {

class ControlHttpApi : public ServiceHandler {
 public:
  explicit ControlHttpApi(ControlPlane& plane) : plane_(plane) {}

  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override;

 private:
  ApiOutcome route(const ServiceRequest& request, const std::shared_ptr<ServiceExchange>& exchange);
  ApiOutcome userApi(const ServiceRequest& request, const Caller& caller,
                     const std::shared_ptr<ServiceExchange>& exchange);
  ApiOutcome delegateApi(const ServiceRequest& request, const std::string& rest,
                         const std::shared_ptr<ServiceExchange>& exchange);

  ControlPlane& plane_;
};

}  // namespace spacegate
