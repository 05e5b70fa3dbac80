#include "config/gateway_config.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "config/yaml_document.h"

namespace spacegate {
namespace {

std::string writeTemporaryFile(const std::string& contents) {
  char path[] = "/tmp/spacegate-config-test-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << contents;
  return path;
}

std::string loadError(const std::string& contents) {
  std::string file = writeTemporaryFile(contents);
  GatewayConfig config;
  std::string message;
  bool ok = loadGatewayConfigFile(file, config, message);
  std::remove(file.c_str());
  return ok ? "" : message.substr(file.size());
}

TEST(GatewayConfigTest, DefaultsForEmptyFile) {
  std::string file = writeTemporaryFile("");
  GatewayConfig config;
  std::string message;
  ASSERT_TRUE(loadGatewayConfigFile(file, config, message)) << message;
  std::remove(file.c_str());
  EXPECT_EQ(config.limits.header_block_size, 64u * 1024);
  EXPECT_EQ(config.limits.header_field_count, 100u);
  EXPECT_EQ(config.limits.header_read_timeout_ms, 10'000u);
  EXPECT_EQ(config.limits.keepalive_idle_timeout_ms, 75'000u);
  EXPECT_EQ(config.limits.upstream_connect_timeout_ms, 5'000u);
  EXPECT_EQ(config.limits.upstream_response_timeout_ms, 60'000u);
  EXPECT_EQ(config.limits.tunnel_idle_timeout_ms, 3'600'000u);
  EXPECT_EQ(config.limits.request_body_size, 0u);
}

TEST(GatewayConfigTest, ReadsYamlAndJson) {
  std::string yaml =
      "listen: [127.0.0.1:9000, '[::1]:9001']\nworkers: 3\nlimits:\n  header_read_timeout: 2s\n"
      "  request_body_size: 1048576\nroutes:\n  - {id: a, host: a.test, upstream: 127.0.0.1:1}\n";
  std::string file = writeTemporaryFile(yaml);
  GatewayConfig config;
  std::string message;
  ASSERT_TRUE(loadGatewayConfigFile(file, config, message)) << message;
  std::remove(file.c_str());
  ASSERT_EQ(config.listeners.size(), 2u);
  EXPECT_EQ(config.listeners[1].address.text(), "[::1]:9001");
  EXPECT_EQ(config.workers, 3u);
  EXPECT_EQ(config.limits.header_read_timeout_ms, 2000u);
  EXPECT_EQ(config.limits.request_body_size, 1048576u);
  ASSERT_EQ(config.routes.size(), 1u);

  std::string json_file = writeTemporaryFile(
      R"({"listen": "127.0.0.1:9000", "routes": [{"id": "b", "host": "b.test", "upstream": "localhost:80"}]})");
  GatewayConfig json_config;
  ASSERT_TRUE(loadGatewayConfigFile(json_file, json_config, message)) << message;
  std::remove(json_file.c_str());
  EXPECT_EQ(json_config.routes[0].upstream.kind, SocketAddress::Kind::kHostname);
}

TEST(GatewayConfigTest, ErrorsNameLineFieldAndReason) {
  EXPECT_EQ(loadError("listen: 127.0.0.1:9000\ncolour: blue\n"), ":2: colour: unknown key");
  EXPECT_EQ(
      loadError("limits:\n  header_read_timeout: 10\n"),
      ":2: limits.header_read_timeout: must be a duration such as \"500ms\", \"10s\", \"5m\", "
      "\"1h\"");
  EXPECT_EQ(loadError("workers: -1\n"), ":1: workers: must be a whole number from 0 to 256");
  EXPECT_EQ(loadError("listen: nowhere\n"), ":1: listen: expected host:port or unix:/path");
  std::string routes =
      "routes:\n  - id: a\n    host: a.test\n    upstream: 127.0.0.1:1\n"
      "  - id: b\n    host: b.test\n    upstream: 127.0.0.1\n";
  EXPECT_EQ(loadError(routes), ":7: routes[1].upstream: expected host:port or unix:/path");
  EXPECT_NE(loadError("routes: [\n"), "");  // not YAML at all
  EXPECT_EQ(loadError("routes:\n  - {id: a, host: a.test, upstream: '127.0.0.1:1', protocol: h2c,"
                      " upstream_tls: true}\n"),
            ":2: routes[0].upstream_tls: h2c is HTTP/2 in the clear: TLS upstreams use protocol "
            "http1");
  EXPECT_EQ(loadError("listen:\n  - {address: '127.0.0.1:1', tls: true}\n"),
            ":1: tls.certificates: a listener has \"tls\": true but no certificate is configured");
  EXPECT_EQ(loadError("http2:\n  max_concurrent_streams: 0\n"),
            ":2: http2.max_concurrent_streams: must be a whole number from 1 to 10000");
  EXPECT_EQ(loadError("limits:\n  write_low_water: 100000\n  write_high_water: 50000\n"),
            ":2: limits.write_low_water: must be below limits.write_high_water");
}

TEST(GatewayConfigTest, Durations) {
  uint64_t ms = 0;
  EXPECT_TRUE(parseDuration("500ms", ms));
  EXPECT_EQ(ms, 500u);
  EXPECT_TRUE(parseDuration("1h", ms));
  EXPECT_EQ(ms, 3'600'000u);
  EXPECT_FALSE(parseDuration("10", ms));
  EXPECT_FALSE(parseDuration("s", ms));
  EXPECT_FALSE(parseDuration("10 s", ms));
  EXPECT_FALSE(parseDuration("99999999999999999999h", ms));
}

TEST(YamlDocumentTest, ScalarsFollowTheCoreSchema) {
  YamlDocument document;
  std::string error;
  ASSERT_TRUE(loadYamlText("a: 1\nb: '1'\nc: true\nd: ~\ne: text\nf: 1.5\n", document, error));
  EXPECT_TRUE(document.root["a"].is_number_integer());
  EXPECT_TRUE(document.root["b"].is_string());
  EXPECT_TRUE(document.root["c"].is_boolean());
  EXPECT_TRUE(document.root["d"].is_null());
  EXPECT_EQ(document.root["e"], "text");
  EXPECT_TRUE(document.root["f"].is_number_float());
  EXPECT_FALSE(loadYamlText("a: 1\na: 2\n", document, error));
}

}  // namespace
}  // namespace spacegate
