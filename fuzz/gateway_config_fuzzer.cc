// Fuzz target: a config file into the gateway's validator. The text goes
// through loadYamlText() (yaml-cpp, then the conversion to nlohmann::json
// with a line for every field) and parseGatewayConfig(), as
// `spacegate --config FILE` reads it. A refused file must name a field or
// say why; an accepted one must hold limits inside their documented ranges,
// and each of its routes must survive the routeToJson() round trip and be
// found in a table built from them (route_checks.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/validation_error.h"
#include "config/gateway_config.h"
#include "config/yaml_document.h"
#include "route_checks.h"
#include "split_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spacegate;
  std::string text(reinterpret_cast<const char*>(data), size);
  YamlDocument document;
  std::string load_error;
  if (!loadYamlText(text, document, load_error)) {
    FUZZ_CHECK(!load_error.empty(), "a refused YAML text without a reason");
    return 0;
  }
  GatewayConfig config;
  ValidationError error;
  if (!parseGatewayConfig(document.root, config, error)) {
    FUZZ_CHECK(!error.message.empty(), "a refused config without a reason");
    FUZZ_CHECK(document.lineOf(error.field) >= 0, "line of the refused field");
    return 0;
  }
  const Limits& limits = config.limits;
  FUZZ_CHECK(limits.header_block_size >= 1024 && limits.header_block_size <= 1024 * 1024,
             "header_block_size range");
  FUZZ_CHECK(limits.header_field_count >= 1 && limits.header_field_count <= 10'000,
             "header_field_count range");
  FUZZ_CHECK(limits.write_low_water < limits.write_high_water, "write water marks");
  FUZZ_CHECK(limits.header_read_timeout_ms > 0 && limits.keepalive_idle_timeout_ms > 0 &&
                 limits.client_body_timeout_ms > 0 && limits.upstream_connect_timeout_ms > 0 &&
                 limits.upstream_response_timeout_ms > 0 && limits.tunnel_idle_timeout_ms > 0,
             "zero timeout accepted");
  FUZZ_CHECK(config.workers <= 256, "workers range");
  for (const Route& route : config.routes) fuzz::checkRouteRoundTrip(route);
  fuzz::checkTableFindsEveryRoute(config.routes);
  return 0;
}
