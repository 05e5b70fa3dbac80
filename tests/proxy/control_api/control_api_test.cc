#include "control_api/control_api.h"

#include <gtest/gtest.h>

namespace spacegate {
namespace {

class FakeGateway : public GatewayControl {
 public:
  std::vector<WorkerCountersSnapshot> workerCounters() const override {
    WorkerCountersSnapshot counters;
    counters.requests_by_class[2] = 7;
    return {counters, counters};
  }
  void drain() override { draining_ = true; }
  bool draining() const override { return draining_; }
  std::string tlsListing() const override { return "{\"certificates\": []}"; }
  bool reloadTls(spacegate::ValidationError& error) override {
    return spacegate::rejectField(error, "tls.certificates", "no TLS listener");
  }
  bool draining_ = false;
};

class ControlApiTest : public ::testing::Test {
 protected:
  ControlResponse call(std::string method, std::string path, std::string body = "",
                       std::string query = "") {
    return api_.handle({std::move(method), std::move(path), std::move(query), std::move(body)});
  }
  RouteTablePublisher publisher_;
  RouteStore store_{publisher_, 1000};
  FakeGateway gateway_;
  KeyRingPublisher key_publisher_;
  KeyRingStore keys_{key_publisher_};
  ControlApi api_{store_, keys_, gateway_};
};

TEST_F(ControlApiTest, RoutesRoundTrip) {
  auto put =
      call("PUT", "/routes",
           R"({"version": 1, "routes": [{"id": "a", "host": "a.test", "upstream": "127.0.0.1:1",
                      "gitspace": "gs-a", "access": "public"}]})");
  EXPECT_EQ(put.status, 200) << put.body;
  auto list = nlohmann::json::parse(call("GET", "/routes").body);
  EXPECT_EQ(list["version"], 1);
  EXPECT_EQ(list["routes"][0]["id"], "a");
  auto one = call("GET", "/routes/a");
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(nlohmann::json::parse(one.body)["gitspace"], "gs-a");
  EXPECT_EQ(call("GET", "/routes/zzz").status, 404);
  EXPECT_EQ(call("DELETE", "/routes/a", "", "version=0").status, 400);
  EXPECT_EQ(call("DELETE", "/routes/a", "", "version=9").status, 200);
  EXPECT_EQ(store_.version(), 9u);
}

TEST_F(ControlApiTest, ErrorsNameTheField) {
  auto bad_json = call("PUT", "/routes", "{not json");
  EXPECT_EQ(bad_json.status, 400);
  EXPECT_NE(nlohmann::json::parse(bad_json.body)["error"].get<std::string>().find("invalid JSON"),
            std::string::npos);
  auto bad_field =
      call("PUT", "/routes", R"({"version": 1, "routes": [{"id": "a", "host": "a.test"}]})");
  EXPECT_EQ(bad_field.status, 400);
  EXPECT_EQ(nlohmann::json::parse(bad_field.body)["field"], "routes[0].upstream");
  auto wrong_method = call("POST", "/routes");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.allow, "GET, PUT, PATCH");
  EXPECT_EQ(call("GET", "/nowhere").status, 404);
}

TEST_F(ControlApiTest, HealthStatsMetricsDrain) {
  EXPECT_EQ(call("GET", "/healthz").status, 200);
  auto stats = nlohmann::json::parse(call("GET", "/stats").body);
  EXPECT_EQ(stats["totals"]["requests"]["2xx"], 14);
  EXPECT_EQ(stats["workers"].size(), 2u);
  auto metrics = call("GET", "/metrics");
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4");
  EXPECT_NE(metrics.body.find("spacegate_requests_total{class=\"2xx\"} 14\n"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("spacegate_route_update_apply_seconds_bucket{le=\"+Inf\"}"),
            std::string::npos);
  EXPECT_EQ(call("POST", "/drain").status, 202);
  EXPECT_EQ(call("GET", "/healthz").status, 503);
}

TEST_F(ControlApiTest, ActivityGroupsRoutesByGitspace) {
  call("PUT", "/routes",
       R"({"version": 1, "routes": [
         {"id": "ide", "host": "gs-a.test", "upstream": "127.0.0.1:1", "gitspace": "gs-a", "access": "public"},
         {"id": "port", "host": "3000--gs-a.test", "upstream": "127.0.0.1:2", "gitspace": "gs-a", "access": "public"},
         {"id": "other", "host": "x.test", "upstream": "127.0.0.1:3", "access": "public"}]})");
  RouteTableSnapshot table = store_.current();
  table->findById("ide")->stats->bytes_in = 10;
  table->findById("port")->stats->bytes_in = 5;
  table->findById("port")->stats->last_activity_unix_ms = 1'700'000'000'000;
  auto activity = nlohmann::json::parse(call("GET", "/activity").body);
  ASSERT_EQ(activity["gitspaces"].size(), 1u);
  EXPECT_EQ(activity["gitspaces"][0]["gitspace"], "gs-a");
  EXPECT_EQ(activity["gitspaces"][0]["bytes_in"], 15);
  EXPECT_EQ(activity["gitspaces"][0]["last_activity"], "2023-11-14T22:13:20.000Z");
}

}  // namespace
}  // namespace spacegate
