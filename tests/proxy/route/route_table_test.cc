#include "route/route_table.h"

#include <gtest/gtest.h>

#include "route/route_json.h"

namespace spacegate {
namespace {

Route makeRoute(std::string id, std::string host, std::string prefix = "/", bool strip = false) {
  Route route;
  route.id = std::move(id);
  route.host = std::move(host);
  route.path_prefix = std::move(prefix);
  route.strip_prefix = strip;
  route.upstream_text = "127.0.0.1:1";
  route.access = RouteAccess::kPublic;
  return route;
}

RouteTable sampleTable() {
  return RouteTable({makeRoute("ide", "gs-x.example"), makeRoute("api", "gs-x.example", "/api"),
                     makeRoute("api-v2", "gs-x.example", "/api/v2/"), makeRoute("any", "*.example"),
                     makeRoute("path-form", "gw.example", "/gs/gs-x", true)});
}

const char* matchId(const RouteTable& table, std::string_view host, std::string_view path) {
  const Route* route = table.match(host, path);
  return route ? route->id.c_str() : "none";
}

TEST(RouteTableTest, ExactHostAnyCaseAndPort) {
  RouteTable table = sampleTable();
  EXPECT_STREQ(matchId(table, "gs-x.example", "/"), "ide");
  EXPECT_STREQ(matchId(table, "GS-X.Example:443", "/index.html"), "ide");
  EXPECT_STREQ(matchId(table, "gs-x.example.", "/"), "ide");
}

TEST(RouteTableTest, TunnelRouteWhateverItsPrefix) {
  // code-server's IDE route sits under /gs/<gs> with the prefix stripped;
  // CONNECT and the tunnel endpoint still find it by host.
  Route ide = makeRoute("gs-y", "gs-y.example", "/gs/gs-y", true);
  ide.tunnel_ports = {22};
  RouteTable table({ide, makeRoute("ide", "gs-x.example"), makeRoute("any", "*.example")});
  const Route* tunnel = table.matchTunnel("GS-Y.example:22");
  ASSERT_NE(tunnel, nullptr);
  EXPECT_EQ(tunnel->id, "gs-y");
  EXPECT_EQ(table.match("gs-y.example", "/"), nullptr);
  // Without tunnel_ports: the host's "/" route (refused later, port not allowed).
  ASSERT_NE(table.matchTunnel("gs-x.example"), nullptr);
  EXPECT_EQ(table.matchTunnel("gs-x.example")->id, "ide");
  // Deleted, or replaced without tunnel_ports: gone from the tunnel index.
  auto without = table.withChanges({}, {"gs-y"}, 2);
  EXPECT_EQ(without->matchTunnel("gs-y.example")->id, "any");
  Route plain = ide;
  plain.tunnel_ports.clear();
  auto replaced = table.withChanges({plain}, {}, 3);
  EXPECT_EQ(replaced->matchTunnel("gs-y.example"), nullptr);
}

TEST(RouteTableTest, LongestPrefixOnSegmentBoundary) {
  RouteTable table = sampleTable();
  EXPECT_STREQ(matchId(table, "gs-x.example", "/api"), "api");
  EXPECT_STREQ(matchId(table, "gs-x.example", "/api/users"), "api");
  EXPECT_STREQ(matchId(table, "gs-x.example", "/api?x=1"), "api");
  EXPECT_STREQ(matchId(table, "gs-x.example", "/apiary"), "ide");
  EXPECT_STREQ(matchId(table, "gs-x.example", "/api/v2/things"), "api-v2");
  EXPECT_STREQ(matchId(table, "gs-x.example", "/api/v2"), "api");
}

TEST(RouteTableTest, WildcardMatchesOneLabel) {
  RouteTable table = sampleTable();
  EXPECT_STREQ(matchId(table, "3000--gs-y.example", "/"), "any");
  EXPECT_STREQ(matchId(table, "a.b.example", "/"), "none");
  EXPECT_STREQ(matchId(table, "example", "/"), "none");
}

TEST(RouteTableTest, NoMatch) {
  RouteTable table = sampleTable();
  EXPECT_STREQ(matchId(table, "other.test", "/"), "none");
  EXPECT_STREQ(matchId(table, "gw.example", "/gs/gs-y/"), "none");
  EXPECT_STREQ(matchId(RouteTable(), "gs-x.example", "/"), "none");
}

TEST(RouteTableTest, StripPrefix) {
  EXPECT_EQ(RouteTable::stripPrefix("/gs/gs-x", "/gs/gs-x/a/b?c"), "/a/b?c");
  EXPECT_EQ(RouteTable::stripPrefix("/gs/gs-x", "/gs/gs-x"), "/");
  EXPECT_EQ(RouteTable::stripPrefix("/gs/gs-x", "/gs/gs-x?q=1"), "/?q=1");
  EXPECT_EQ(RouteTable::stripPrefix("/gs/gs-x/", "/gs/gs-x/a"), "/a");
  EXPECT_EQ(RouteTable::stripPrefix("/", "/a"), "/a");
}

TEST(RouteTableTest, LookupCostDoesNotDependOnOtherHosts) {
  std::vector<Route> routes;
  for (int i = 0; i < 20000; ++i)
    routes.push_back(makeRoute("r" + std::to_string(i), "gs-" + std::to_string(i) + ".example"));
  RouteTable table(std::move(routes));
  EXPECT_STREQ(matchId(table, "gs-19999.example", "/"), "r19999");
  EXPECT_STREQ(matchId(table, "gs-20000.example", "/"), "none");
}

TEST(RouteJsonTest, ParsesAndValidatesRoutes) {
  auto json = nlohmann::json::parse(R"([
    {"id": "gs-abc-ide", "host": "gs-abc.example", "upstream": "10.0.0.5:8089",
     "gitspace": "gs-abc", "owner": "user-1", "access": "owner"},
    {"id": "preview", "host": "*.example", "path_prefix": "/p", "strip_prefix": true,
     "upstream": "unix:/run/ide.sock", "access": "public"}])");
  std::vector<Route> routes;
  ValidationError error;
  ASSERT_TRUE(parseRouteList(json, "routes", routes, error))
      << error.field << ": " << error.message;
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].access, RouteAccess::kOwner);
  EXPECT_EQ(routes[1].upstream.kind, SocketAddress::Kind::kUnix);
  EXPECT_EQ(routeToJson(routes[1])["path_prefix"], "/p");
}

struct BadRoute {
  const char* json;
  const char* field;
};

TEST(RouteJsonTest, RejectsBadFieldsNamingThem) {
  const BadRoute cases[] = {
      {R"([{"id": "A", "host": "a.test", "upstream": "1.2.3.4:80"}])", "routes[0].id"},
      {R"([{"id": "a", "host": "a test", "upstream": "1.2.3.4:80"}])", "routes[0].host"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4"}])", "routes[0].upstream"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:99999"}])", "routes[0].upstream"},
      {R"([{"id": "a", "host": "a.test", "upstream": "unix:relative"}])", "routes[0].upstream"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80", "colour": 1}])",
       "routes[0].colour"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80", "path_prefix": "x"}])",
       "routes[0].path_prefix"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80", "protocol": "h3"}])",
       "routes[0].protocol"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80", "access": "owner"}])",
       "routes[0].access"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80"},
           {"id": "a", "host": "b.test", "upstream": "1.2.3.4:80"}])",
       "routes[1].id"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80"},
           {"id": "b", "host": "a.test", "upstream": "1.2.3.4:81"}])",
       "routes[1].path_prefix"},
      {R"([{"host": "a.test", "upstream": "1.2.3.4:80"}])", "routes[0].id"},
      {R"([{"id": "a", "host": "a.test", "upstream": "1.2.3.4:80", "tunnel_ports": [0]}])",
       "routes[0].tunnel_ports[0]"},
  };
  for (const BadRoute& bad : cases) {
    std::vector<Route> routes;
    ValidationError error;
    EXPECT_FALSE(parseRouteList(nlohmann::json::parse(bad.json), "routes", routes, error))
        << bad.json;
    EXPECT_EQ(error.field, bad.field) << bad.json << " -> " << error.message;
    EXPECT_FALSE(error.message.empty());
  }
}

}  // namespace
}  // namespace spacegate

namespace spacegate {
namespace {

TEST(RouteTableTest, WithChangesSharesUntouchedRoutesAndKeepsCounters) {
  RouteTable base(
      {makeRoute("a", "a.example"), makeRoute("b", "b.example"), makeRoute("c", "*.wild.example")},
      1);
  base.findById("a")->stats->bytes_in = 42;
  Route moved = makeRoute("a", "a.example");
  moved.upstream_text = "127.0.0.1:2";
  auto next = base.withChanges({moved, makeRoute("d", "d.example", "/d")}, {"b"}, 2);
  EXPECT_EQ(next->version(), 2u);
  EXPECT_EQ(next->size(), 3u);
  EXPECT_EQ(next->findById("a")->upstream_text, "127.0.0.1:2");
  EXPECT_EQ(next->findById("a")->stats->bytes_in.load(), 42u) << "counters follow the id";
  EXPECT_EQ(next->findById("b"), nullptr);
  EXPECT_STREQ(matchId(*next, "b.example", "/"), "none");
  EXPECT_STREQ(matchId(*next, "d.example", "/d/x"), "d");
  EXPECT_STREQ(matchId(*next, "x.wild.example", "/"), "c");
  // The old table is untouched.
  EXPECT_EQ(base.size(), 3u);
  EXPECT_EQ(base.findById("a")->upstream_text, "127.0.0.1:1");
  EXPECT_STREQ(matchId(base, "b.example", "/"), "b");
  EXPECT_NE(base.findByHostAndPrefix("b.example", "/"), nullptr);
  auto sorted = next->sortedRoutes();
  ASSERT_EQ(sorted.size(), 3u);
  EXPECT_EQ(sorted[0]->id, "a");
  EXPECT_EQ(sorted[2]->id, "d");
}

TEST(RouteTableTest, LongHostIsNoMatchNotACrash) {
  RouteTable table = sampleTable();
  EXPECT_STREQ(matchId(table, std::string(300, 'a'), "/"), "none");
}

}  // namespace
}  // namespace spacegate

namespace spacegate {
namespace {

TEST(RouteTableTest, RouteTakingAPlaceBeforeItsHolderLeavesIsKept) {
  RouteTable base({makeRoute("holder", "a.test")}, 1);
  // The newcomer is listed before the holder moves away: the holder's
  // removal must not take the newcomer's entry with it.
  auto next =
      base.withChanges({makeRoute("newcomer", "a.test"), makeRoute("holder", "a2.test")}, {}, 2);
  EXPECT_STREQ(matchId(*next, "a.test", "/"), "newcomer");
  EXPECT_STREQ(matchId(*next, "a2.test", "/"), "holder");
  // Two routes swapping hosts.
  RouteTable pair({makeRoute("x", "x.test"), makeRoute("y", "y.test")}, 1);
  auto swapped = pair.withChanges({makeRoute("x", "y.test"), makeRoute("y", "x.test")}, {}, 2);
  EXPECT_STREQ(matchId(*swapped, "x.test", "/"), "y");
  EXPECT_STREQ(matchId(*swapped, "y.test", "/"), "x");
}

}  // namespace
}  // namespace spacegate
