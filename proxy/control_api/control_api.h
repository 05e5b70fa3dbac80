// ControlApi: the control API's endpoints, sans-IO: a request in, a response
// out. ControlServer feeds it from the unix socket and the TCP listener; the
// unit tests call it directly. Every write goes through RouteStore, which
// validates the whole body before anything changes.
#pragma once

#include <string>
#include <string_view>

#include "control_api/gateway_control.h"
#include "control_api/key_ring_store.h"
#include "control_api/route_store.h"

namespace spacegate {

struct ControlRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // after '?', may be empty
  std::string body;
};

struct ControlResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string allow;  // for 405
};

class ControlApi {
 public:
  ControlApi(RouteStore& routes, KeyRingStore& keys, GatewayControl& gateway)
      : routes_(routes), keys_(keys), gateway_(gateway) {}

  ControlResponse handle(const ControlRequest& request);
  // A route write refused before it reached the API (body over the limit).
  void noteRefusedWrite(const std::string& method);

  // {"error": message, "field": field} (field left out when empty).
  static ControlResponse errorResponse(int status, std::string_view message,
                                       std::string_view field = {});

 private:
  ControlResponse route(const ControlRequest& request);
  ControlResponse getRoutes();
  ControlResponse writeResult(bool ok, const RouteWriteError& error);
  ControlResponse stats();
  ControlResponse metrics();
  ControlResponse activity();

  RouteStore& routes_;
  KeyRingStore& keys_;
  GatewayControl& gateway_;
};

}  // namespace spacegate
