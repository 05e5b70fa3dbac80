// desiredRoutesFor: the route table of docs/control-plane.md ("Routes") for
// every state, and every route it makes is one the gateway's own route
// parser accepts (so a PUT /routes with it cannot be refused).
#include "control/server/desired_routes.h"

#include <gtest/gtest.h>

#include "common/validation_error.h"
#include "route/route_json.h"

namespace spacegate {
namespace {

InfraRecord infra() {
  InfraRecord infra;
  infra.id = "inf-1";
  infra.gateway_domain = "gs.example.com";
  infra.url_scheme = "https";
  infra.gateway_port = 8443;
  return infra;
}

GitspaceRecord running() {
  GitspaceRecord gitspace;
  gitspace.id = "gs-0123abcd";
  gitspace.owner = "u-1";
  gitspace.ide = "jupyter";
  gitspace.state = GitspaceState::kRunning;
  gitspace.machine_id = "m-1";
  gitspace.address = "10.0.0.5";
  gitspace.agent_port = 8090;
  gitspace.ide_port = 8888;
  gitspace.forwarded_ports = {3000};
  return gitspace;
}

const nlohmann::json* findRoute(const std::vector<nlohmann::json>& routes, const std::string& id) {
  for (const nlohmann::json& route : routes) {
    if (route["id"] == id) return &route;
  }
  return nullptr;
}

void expectGatewayAccepts(const std::vector<nlohmann::json>& routes) {
  std::vector<Route> parsed;
  ValidationError error;
  EXPECT_TRUE(parseRouteList(nlohmann::json(routes), "routes", parsed, error))
      << error.field << ": " << error.message;
}

TEST(DesiredRoutesTest, RunningGitspaceHasAgentIdePortAndPathRoutes) {
  std::vector<nlohmann::json> routes = desiredRoutesFor(running(), infra());
  ASSERT_EQ(routes.size(), 4u);
  const nlohmann::json* agent = findRoute(routes, "agent--gs-0123abcd");
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ((*agent)["host"], "agent--gs-0123abcd.gs.example.com");
  EXPECT_EQ((*agent)["upstream"], "10.0.0.5:8090");
  EXPECT_EQ((*agent)["access"], "agent");
  EXPECT_EQ((*agent)["gitspace"], "gs-0123abcd");
  EXPECT_FALSE(agent->contains("owner"));

  const nlohmann::json* ide = findRoute(routes, "gs-0123abcd");
  ASSERT_NE(ide, nullptr);
  EXPECT_EQ((*ide)["host"], "gs-0123abcd.gs.example.com");
  EXPECT_EQ((*ide)["path_prefix"], "/");
  EXPECT_EQ((*ide)["strip_prefix"], false);
  EXPECT_EQ((*ide)["upstream"], "10.0.0.5:8888");
  EXPECT_EQ((*ide)["access"], "owner");
  EXPECT_EQ((*ide)["owner"], "u-1");

  const nlohmann::json* port = findRoute(routes, "gs-0123abcd--3000");
  ASSERT_NE(port, nullptr);
  EXPECT_EQ((*port)["host"], "3000--gs-0123abcd.gs.example.com");
  EXPECT_EQ((*port)["upstream"], "10.0.0.5:3000");
  EXPECT_EQ((*port)["access"], "owner");

  const nlohmann::json* path = findRoute(routes, "gs-0123abcd--path");
  ASSERT_NE(path, nullptr);
  EXPECT_EQ((*path)["host"], "gs.example.com");
  EXPECT_EQ((*path)["path_prefix"], "/gs/gs-0123abcd");
  EXPECT_EQ((*path)["strip_prefix"], false);  // Jupyter serves under its base_url
  EXPECT_EQ((*path)["upstream"], "10.0.0.5:8888");
  expectGatewayAccepts(routes);
}

TEST(DesiredRoutesTest, CodeServerRoutesStripTheBasePath) {
  GitspaceRecord gitspace = running();
  gitspace.ide = "vscode-web";
  std::vector<nlohmann::json> routes = desiredRoutesFor(gitspace, infra());
  const nlohmann::json* path = findRoute(routes, "gs-0123abcd--path");
  ASSERT_NE(path, nullptr);
  EXPECT_EQ((*path)["strip_prefix"], true);
  const nlohmann::json* ide = findRoute(routes, "gs-0123abcd");
  ASSERT_NE(ide, nullptr);
  EXPECT_EQ((*ide)["path_prefix"], "/gs/gs-0123abcd");
  EXPECT_EQ((*ide)["strip_prefix"], true);
  expectGatewayAccepts(routes);
}

TEST(DesiredRoutesTest, AgentRouteOnlyWhileTheGitspaceHasAMachine) {
  for (GitspaceState state :
       {GitspaceState::kStarting, GitspaceState::kStopping, GitspaceState::kCleaning}) {
    GitspaceRecord gitspace = running();
    gitspace.state = state;
    std::vector<nlohmann::json> routes = desiredRoutesFor(gitspace, infra());
    ASSERT_EQ(routes.size(), 1u) << gitspaceStateName(state);
    EXPECT_EQ(routes[0]["id"], "agent--gs-0123abcd");
    expectGatewayAccepts(routes);
  }
  for (GitspaceState state :
       {GitspaceState::kUninitialized, GitspaceState::kStopped, GitspaceState::kCleaned,
        GitspaceState::kDeleted, GitspaceState::kError}) {
    GitspaceRecord gitspace = running();
    gitspace.state = state;
    EXPECT_TRUE(desiredRoutesFor(gitspace, infra()).empty()) << gitspaceStateName(state);
  }
  // Starting, before the delegate said which machine: nothing.
  GitspaceRecord starting = running();
  starting.state = GitspaceState::kStarting;
  starting.address.clear();
  starting.agent_port = 0;
  EXPECT_TRUE(desiredRoutesFor(starting, infra()).empty());
}

TEST(DesiredRoutesTest, Ipv6UpstreamsAreBracketed) {
  GitspaceRecord gitspace = running();
  gitspace.address = "fd00::5";
  std::vector<nlohmann::json> routes = desiredRoutesFor(gitspace, infra());
  EXPECT_EQ((*findRoute(routes, "agent--gs-0123abcd"))["upstream"], "[fd00::5]:8090");
  expectGatewayAccepts(routes);
}

TEST(DesiredRoutesTest, Urls) {
  GitspaceRecord gitspace = running();
  EXPECT_EQ(gitspaceUrl(gitspace, infra()),
            "https://gs-0123abcd.gs.example.com:8443/gs/gs-0123abcd/");
  EXPECT_EQ(gitspacePathUrl(gitspace, infra()), "https://gs.example.com:8443/gs/gs-0123abcd/");
  InfraRecord standard = infra();
  standard.gateway_port = 443;
  EXPECT_EQ(gitspaceUrl(gitspace, standard), "https://gs-0123abcd.gs.example.com/gs/gs-0123abcd/");
  standard.url_scheme = "http";
  standard.gateway_port = 80;
  EXPECT_EQ(gitspacePathUrl(gitspace, standard), "http://gs.example.com/gs/gs-0123abcd/");
}

TEST(DesiredRoutesTest, SshPortBecomesTheIdeRoutesTunnelPort) {
  GitspaceRecord gitspace = running();
  EXPECT_FALSE(findRoute(desiredRoutesFor(gitspace, infra()), "gs-0123abcd")
                   ->contains("tunnel_ports"));  // no port reported: no tunnel
  gitspace.ssh_port = 2222;
  std::vector<nlohmann::json> routes = desiredRoutesFor(gitspace, infra());
  ASSERT_EQ(routes.size(), 4u);
  const nlohmann::json* ide = findRoute(routes, "gs-0123abcd");
  ASSERT_NE(ide, nullptr);
  EXPECT_EQ((*ide)["tunnel_ports"], nlohmann::json::array({2222}));
  // Only the IDE host carries tunnels.
  for (const nlohmann::json& route : routes) {
    if (route["id"] == "gs-0123abcd") continue;
    EXPECT_FALSE(route.contains("tunnel_ports")) << route["id"];
  }
  expectGatewayAccepts(routes);
  // Not running: no IDE route, so no tunnel either.
  gitspace.state = GitspaceState::kStopping;
  EXPECT_EQ(findRoute(desiredRoutesFor(gitspace, infra()), "gs-0123abcd"), nullptr);
}

TEST(DesiredRoutesTest, GatewayAndTunnelUrls) {
  GitspaceRecord gitspace = running();
  EXPECT_EQ(gitspaceHost(gitspace, infra()), "gs-0123abcd.gs.example.com");
  EXPECT_EQ(gatewayUrl(infra()), "https://gs.example.com:8443");
  EXPECT_EQ(tunnelWebSocketUrl(gitspace, infra(), 2222),
            "wss://gs-0123abcd.gs.example.com:8443/.spacegate/tunnel/2222");
  InfraRecord plain = infra();
  plain.url_scheme = "http";
  plain.gateway_port = 80;
  EXPECT_EQ(gatewayUrl(plain), "http://gs.example.com");
  EXPECT_EQ(tunnelWebSocketUrl(gitspace, plain, 22),
            "ws://gs-0123abcd.gs.example.com/.spacegate/tunnel/22");
  plain.url_scheme = "https";
  plain.gateway_port = 443;
  EXPECT_EQ(tunnelWebSocketUrl(gitspace, plain, 22),
            "wss://gs-0123abcd.gs.example.com/.spacegate/tunnel/22");
}

}  // namespace
}  // namespace spacegate
