// Route sync: the control plane's table goes to every gateway as it is; 200
// and 409 both leave a gateway current; a refusing or unreachable gateway
// is reported and the others still get the table; nothing is pushed when
// the table cannot be fetched.
#include "delegate/route_sync.h"

#include <gtest/gtest.h>

#include "tests/delegate/fake_service.h"

namespace spacegate {
namespace {

using testing::FakeService;
using testing::jsonAnswer;

const nlohmann::json kTable = {{"version", 7},
                               {"routes",
                                {{{"id", "agent--gs-1"},
                                  {"host", "agent--gs-1.gs.example"},
                                  {"upstream", "10.0.0.5:7000"},
                                  {"gitspace", "gs-1"},
                                  {"access", "agent"}},
                                 {{"id", "gs-1"},
                                  {"host", "gs-1.gs.example"},
                                  {"upstream", "10.0.0.5:8888"},
                                  {"gitspace", "gs-1"},
                                  {"owner", "u-1"},
                                  {"access", "owner"}}}}};

GatewayConfig gatewayAt(const std::string& name, const std::string& url) {
  GatewayConfig gateway;
  gateway.name = name;
  gateway.control.url = url;
  gateway.control.token = "gateway-token-0123456789";
  gateway.data_url = url;
  return gateway;
}

ServiceEndpoint controlPlaneAt(const FakeService& service) {
  return ServiceEndpoint{service.url(), "", "", "delegate-token-0123456789"};
}

TEST(RouteSyncTest, EveryGatewayGetsTheTableAndFailuresAreKeptApart) {
  FakeService control_plane([](const ServiceRequest& request) {
    if (request.path == "/api/v1/delegate/routes") return jsonAnswer(200, kTable);
    return ServiceResponse::error(404, "no");
  });
  FakeService applies([](const ServiceRequest&) {
    return jsonAnswer(200, {{"version", 7}, {"routes", 2}});
  });
  FakeService newer([](const ServiceRequest&) {
    return ServiceResponse::error(409, "version 7 is not above the current 9", "version");
  });
  FakeService refuses([](const ServiceRequest&) {
    return ServiceResponse::error(400, "must be host:port", "routes[1].upstream");
  });
  GatewayConfig gone;
  gone.name = "gone";
  gone.control.socket = "/nonexistent/spacegate-control.sock";
  gone.data_url = "http://127.0.0.1:1";

  ControlPlaneClient client(controlPlaneAt(control_plane), 5000);
  RouteSync sync(client,
                 {gatewayAt("a", applies.url()), gatewayAt("b", newer.url()), gone,
                  gatewayAt("c", refuses.url())},
                 5000);
  RouteSyncOutcome outcome = sync.syncNow("test");
  ASSERT_TRUE(outcome.fetched) << outcome.error;
  EXPECT_EQ(outcome.version, 7u);
  ASSERT_EQ(outcome.pushes.size(), 4u);
  EXPECT_TRUE(outcome.pushes[0].current);
  EXPECT_EQ(outcome.pushes[0].status, 200);
  EXPECT_TRUE(outcome.pushes[1].current);  // 409: already newer
  EXPECT_EQ(outcome.pushes[1].status, 409);
  EXPECT_FALSE(outcome.pushes[2].current);
  EXPECT_EQ(outcome.pushes[2].status, 0);
  EXPECT_FALSE(outcome.pushes[3].current);
  EXPECT_EQ(outcome.pushes[3].error, "HTTP 400: must be host:port (field routes[1].upstream)");
  EXPECT_EQ(outcome.currentGateways(), 2u);
  std::string failures = outcome.failures();
  EXPECT_NE(failures.find("gone: /nonexistent/spacegate-control.sock"), std::string::npos)
      << failures;
  EXPECT_NE(failures.find("c: HTTP 400"), std::string::npos) << failures;

  // Each gateway got one PUT /routes with the table as fetched, and the
  // gateway's token; the control plane got the delegate's.
  for (FakeService* gateway : {&applies, &newer, &refuses}) {
    auto requests = gateway->requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].line(), "PUT /routes");
    EXPECT_EQ(requests[0].authorization, "Bearer gateway-token-0123456789");
    nlohmann::json body = nlohmann::json::parse(requests[0].body);
    EXPECT_EQ(body, kTable);
  }
  auto asked = control_plane.requests();
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].line(), "GET /api/v1/delegate/routes");
  EXPECT_EQ(asked[0].authorization, "Bearer delegate-token-0123456789");
}

TEST(RouteSyncTest, NothingIsPushedWithoutATable) {
  FakeService control_plane(
      [](const ServiceRequest&) { return ServiceResponse::error(503, "starting up"); });
  FakeService gateway([](const ServiceRequest&) { return jsonAnswer(200, {}); });
  ControlPlaneClient client(controlPlaneAt(control_plane), 5000);
  RouteSync sync(client, {gatewayAt("a", gateway.url())}, 5000);
  RouteSyncOutcome outcome = sync.syncNow("test");
  EXPECT_FALSE(outcome.fetched);
  EXPECT_EQ(outcome.error, "HTTP 503: starting up");
  EXPECT_TRUE(outcome.pushes.empty());
  EXPECT_TRUE(gateway.requests().empty());

  // A table that is not {"version", "routes"} is not pushed either.
  control_plane.setAnswer([](const ServiceRequest&) { return jsonAnswer(200, {{"routes", 1}}); });
  outcome = sync.syncNow("test");
  EXPECT_FALSE(outcome.fetched);
  EXPECT_TRUE(gateway.requests().empty());
}

TEST(RouteSyncTest, AFreshControlPlanesVersionZeroIsNotPushed) {
  // Gateways start at version 0 and refuse to be set to it.
  FakeService control_plane([](const ServiceRequest&) {
    return jsonAnswer(200, {{"version", 0}, {"routes", nlohmann::json::array()}});
  });
  FakeService gateway([](const ServiceRequest&) {
    return ServiceResponse::error(400, "must be a whole number above 0", "version");
  });
  ControlPlaneClient client(controlPlaneAt(control_plane), 5000);
  RouteSync sync(client, {gatewayAt("a", gateway.url())}, 5000);
  RouteSyncOutcome outcome = sync.syncNow("test");
  ASSERT_TRUE(outcome.fetched);
  EXPECT_EQ(outcome.currentGateways(), 1u);
  EXPECT_TRUE(gateway.requests().empty());
}

TEST(RouteSyncTest, AgentRouteLookup) {
  EXPECT_TRUE(RouteSync::hasAgentRoute(kTable, "gs-1"));
  EXPECT_FALSE(RouteSync::hasAgentRoute(kTable, "gs-2"));
  nlohmann::json owner_only = {{"version", 1}, {"routes", {kTable["routes"][1]}}};
  EXPECT_FALSE(RouteSync::hasAgentRoute(owner_only, "gs-1"));
  EXPECT_FALSE(RouteSync::hasAgentRoute(nlohmann::json::object(), "gs-1"));
}

}  // namespace
}  // namespace spacegate
