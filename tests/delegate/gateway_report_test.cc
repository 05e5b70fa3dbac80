// The gateways' report: health and route version per gateway, activity
// merged over gateways (latest time, summed connections and tunnels), and
// what observeGateway reads from a gateway's control API.
#include "delegate/gateway_report.h"

#include <gtest/gtest.h>

#include "tests/delegate/fake_service.h"

namespace spacegate {
namespace {

using testing::FakeService;
using testing::jsonAnswer;

TEST(GatewayReportTest, ActivityIsMergedOverGateways) {
  GatewayObservation a;
  a.name = "a";
  a.healthy = true;
  a.version = 12;
  a.activity = {{{"gitspace", "gs-1"},
                 {"last_activity_unix_ms", 5000},
                 {"open_connections", 2},
                 {"open_tunnels", 1},
                 {"bytes_in", 10}},
                {{"gitspace", "gs-2"}, {"last_activity_unix_ms", 0}, {"open_connections", 0}}};
  GatewayObservation b;
  b.name = "b";
  b.healthy = false;
  b.error = "HTTP 503: draining";
  b.activity = {{{"gitspace", "gs-1"},
                 {"last_activity_unix_ms", 9000},
                 {"open_connections", 1},
                 {"open_tunnels", 0}},
                {{"not", "an entry"}}};
  nlohmann::json report = buildGatewayReport({a, b});
  EXPECT_EQ(report["gateways"],
            nlohmann::json::parse(R"([{"name":"a","version":"12","healthy":true},
                                      {"name":"b","version":"0","healthy":false}])"));
  EXPECT_EQ(report["activity"], nlohmann::json::parse(R"([
      {"gitspace":"gs-1","last_activity_unix_ms":9000,"open_connections":3,"open_tunnels":1},
      {"gitspace":"gs-2","last_activity_unix_ms":0,"open_connections":0,"open_tunnels":0}])"));
}

TEST(GatewayReportTest, ObserveReadsHealthAndActivity) {
  FakeService gateway([](const ServiceRequest& request) {
    if (request.path == "/healthz") return jsonAnswer(200, {{"status", "ok"}, {"version", 42}});
    if (request.path == "/activity") {
      return jsonAnswer(200, {{"gitspaces",
                               {{{"gitspace", "gs-1"},
                                 {"last_activity_unix_ms", 77},
                                 {"open_connections", 1},
                                 {"open_tunnels", 0}}}}});
    }
    return ServiceResponse::error(404, "no");
  });
  GatewayConfig config;
  config.name = "local";
  config.control.url = gateway.url();
  config.control.token = "gateway-token-0123456789";
  GatewayObservation seen = observeGateway(config, 2000);
  EXPECT_TRUE(seen.healthy);
  EXPECT_EQ(seen.version, 42u);
  ASSERT_EQ(seen.activity.size(), 1u);
  EXPECT_EQ(seen.activity[0]["last_activity_unix_ms"], 77);
  for (const auto& request : gateway.requests()) {
    EXPECT_EQ(request.authorization, "Bearer gateway-token-0123456789");
  }

  // Draining: not healthy, activity still read.
  gateway.setAnswer([](const ServiceRequest& request) {
    if (request.path == "/healthz") return jsonAnswer(503, {{"status", "draining"}});
    return jsonAnswer(200, {{"gitspaces", nlohmann::json::array()}});
  });
  seen = observeGateway(config, 2000);
  EXPECT_FALSE(seen.healthy);
  EXPECT_EQ(gateway.count("GET /activity"), 2u);

  config.control.url.clear();
  config.control.socket = "/nonexistent/control.sock";
  seen = observeGateway(config, 2000);
  EXPECT_FALSE(seen.healthy);
  EXPECT_NE(seen.error.find("/nonexistent/control.sock"), std::string::npos) << seen.error;
}

}  // namespace
}  // namespace spacegate
