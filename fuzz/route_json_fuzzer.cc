// Fuzz target: route objects as JSON, the form the control API and the
// snapshot file take them in, into the validator. The bytes are parsed with
// nlohmann::json (a parse error is an ordinary refusal); an array goes to
// parseRouteList(), a {"version": N, "routes": [...]} body's list likewise,
// anything else to parseRoute(). A refusal must name the field and say why,
// in a form that serialises as the JSON error body; every route that
// validated must survive the routeToJson() round trip and be found in a
// table built from the list (route_checks.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/validation_error.h"
#include "route/route_json.h"
#include "route_checks.h"
#include "split_reader.h"

namespace {

void checkRefusal(const spacegate::ValidationError& error) {
  FUZZ_CHECK(!error.field.empty() && !error.message.empty(), "a refusal without field or reason");
  // The control API's 400 body; strict UTF-8 handling throws on bad bytes.
  nlohmann::json body = {{"error", error.message}, {"field", error.field}};
  (void)body.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spacegate;
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  ValidationError error;
  const nlohmann::json* list = nullptr;
  if (json.is_array()) {
    list = &json;
  } else if (json.is_object() && json.contains("routes")) {
    list = &json["routes"];
  }
  if (list) {
    std::vector<Route> routes;
    if (!parseRouteList(*list, "routes", routes, error)) {
      checkRefusal(error);
      return 0;
    }
    FUZZ_CHECK(routes.size() == list->size(), "routes lost or added");
    for (const Route& route : routes) fuzz::checkRouteRoundTrip(route);
    fuzz::checkTableFindsEveryRoute(routes);
    return 0;
  }
  Route route;
  if (!parseRoute(json, "route", route, error)) {
    checkRefusal(error);
    return 0;
  }
  fuzz::checkRouteRoundTrip(route);
  fuzz::checkTableFindsEveryRoute({route});
  return 0;
}
