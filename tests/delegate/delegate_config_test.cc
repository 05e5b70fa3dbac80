// The delegate's config file: every field, the defaults, token files, and
// each refusal with the "file:line: field: reason" it prints.
#include "delegate/delegate_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace spacegate {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class DelegateConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char folder[] = "/tmp/delegate-config-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    token_ = write("delegate.token", "0123456789abcdef0123456789abcdef\n");
  }
  void TearDown() override { std::filesystem::remove_all(folder_); }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = folder_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }

  // A valid file with `extra` lines appended (top-level keys).
  std::string minimal(const std::string& extra = "") const {
    return "name: delegate-1\n"
           "control_url: http://127.0.0.1:7600\n"
           "token_file: " +
           token_ +
           "\n"
           "runner: {url: http://127.0.0.1:7700}\n"
           "gateways:\n"
           "  - name: local\n"
           "    control_socket: /run/spacegate/control.sock\n"
           "    data_url: http://127.0.0.1:8080\n" +
           extra;
  }

  std::string refusal(const std::string& text) {
    DelegateConfig config;
    std::string message;
    EXPECT_FALSE(loadDelegateConfigText(text, config, message)) << "accepted:\n" << text;
    return message;
  }

  std::string folder_;
  std::string token_;
};

TEST_F(DelegateConfigTest, EveryField) {
  std::string runner_token = write("runner.token", "runner-token-0123456789\n");
  std::string gateway_token = write("gw.token", "gateway-token-0123456789  \n");
  std::string text =
      "name: delegate-1\n"
      "control_url: http://127.0.0.1:7600/\n"
      "token_file: " +
      token_ +
      "\n"
      "selectors: [default, gpu]\n"
      "state_file: /var/lib/sg-delegate/state.json\n"
      "runner: {url: http://127.0.0.1:7700, token_file: " +
      runner_token +
      "}\n"
      "gateways:\n"
      "  - name: local\n"
      "    control_socket: /run/spacegate/control.sock\n"
      "    data_url: http://127.0.0.1:8080\n"
      "  - name: edge\n"
      "    control_url: http://10.0.0.2:9090\n"
      "    control_token_file: " +
      gateway_token +
      "\n"
      "    data_url: http://10.0.0.2:80\n"
      "route_sync_interval: 30s\n"
      "report_interval: 5s\n"
      "limits:\n"
      "  max_concurrent_tasks: 4\n"
      "  call_timeout: 3s\n"
      "  agent_call_timeout: 90s\n"
      "  machine_ready_timeout: 3m\n"
      "  gitspace_setup_timeout: 5m\n"
      "  machine_stop_timeout: 1m\n"
      "  machine_delete_timeout: 2m\n"
      "  shutdown_grace: 10s\n";
  DelegateConfig config;
  std::string message;
  ASSERT_TRUE(loadDelegateConfigText(text, config, message)) << message;
  EXPECT_EQ(config.name, "delegate-1");
  EXPECT_EQ(config.control_plane.url, "http://127.0.0.1:7600");  // trailing slash dropped
  EXPECT_EQ(config.control_plane.token, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(config.selectors, (std::vector<std::string>{"default", "gpu"}));
  EXPECT_EQ(config.state_file, "/var/lib/sg-delegate/state.json");
  EXPECT_EQ(config.runner.url, "http://127.0.0.1:7700");
  EXPECT_EQ(config.runner.token, "runner-token-0123456789");
  ASSERT_EQ(config.gateways.size(), 2u);
  EXPECT_EQ(config.gateways[0].name, "local");
  EXPECT_EQ(config.gateways[0].control.socket, "/run/spacegate/control.sock");
  EXPECT_EQ(config.gateways[0].data_url, "http://127.0.0.1:8080");
  EXPECT_EQ(config.gateways[1].control.url, "http://10.0.0.2:9090");
  EXPECT_EQ(config.gateways[1].control.token, "gateway-token-0123456789");
  EXPECT_EQ(config.route_sync_interval_ms, 30'000u);
  EXPECT_EQ(config.report_interval_ms, 5'000u);
  EXPECT_EQ(config.limits.max_concurrent_tasks, 4);
  EXPECT_EQ(config.limits.call_timeout_ms, 3'000u);
  EXPECT_EQ(config.limits.agent_call_timeout_ms, 90'000u);
  EXPECT_EQ(config.limits.machine_ready_timeout_ms, 180'000u);
  EXPECT_EQ(config.limits.gitspace_setup_timeout_ms, 300'000u);
  EXPECT_EQ(config.limits.machine_stop_timeout_ms, 60'000u);
  EXPECT_EQ(config.limits.machine_delete_timeout_ms, 120'000u);
  EXPECT_EQ(config.limits.shutdown_grace_ms, 10'000u);
}

TEST_F(DelegateConfigTest, Defaults) {
  DelegateConfig config;
  std::string message;
  ASSERT_TRUE(loadDelegateConfigText(minimal(), config, message)) << message;
  EXPECT_EQ(config.selectors, (std::vector<std::string>{"default"}));
  EXPECT_EQ(config.state_file, "/var/lib/spacegate-delegate/state.json");
  EXPECT_EQ(config.route_sync_interval_ms, 60'000u);
  EXPECT_EQ(config.report_interval_ms, 10'000u);
  EXPECT_EQ(config.limits.max_concurrent_tasks, 8);
  EXPECT_EQ(config.limits.machine_ready_timeout_ms, 120'000u);
  EXPECT_EQ(config.limits.shutdown_grace_ms, 20'000u);
  EXPECT_TRUE(config.runner.token.empty());
}

TEST_F(DelegateConfigTest, RunnerOnAUnixSocket) {
  std::string text = minimal();
  text.replace(text.find("runner: {url: http://127.0.0.1:7700}"),
               std::string("runner: {url: http://127.0.0.1:7700}").size(),
               "runner: {socket: /run/spacegate/runner.sock}");
  DelegateConfig config;
  std::string message;
  ASSERT_TRUE(loadDelegateConfigText(text, config, message)) << message;
  EXPECT_EQ(config.runner.socket, "/run/spacegate/runner.sock");
  EXPECT_TRUE(config.runner.url.empty());
}

TEST_F(DelegateConfigTest, RefusalsNameTheLineAndField) {
  EXPECT_EQ(refusal(minimal("colour: blue\n")), "<text>:9: colour: unknown key");
  std::string message = refusal(minimal("route_sync_interval: soon\n"));
  EXPECT_TRUE(contains(message, "<text>:9: route_sync_interval: must be a duration")) << message;
  message = refusal(minimal("report_interval: 10ms\n"));
  EXPECT_TRUE(contains(message, "<text>:9: report_interval: must be at least 1000ms")) << message;
  message = refusal(minimal("limits: {max_concurrent_tasks: 0}\n"));
  EXPECT_TRUE(contains(message, "limits.max_concurrent_tasks: must be a whole number from 1"))
      << message;
  message = refusal(minimal("selectors: []\n"));
  EXPECT_TRUE(contains(message, "<text>:9: selectors: must be a list")) << message;
  message = refusal(minimal("state_file: state.json\n"));
  EXPECT_TRUE(contains(message, "state_file: must be an absolute path")) << message;
}

TEST_F(DelegateConfigTest, RequiredFields) {
  EXPECT_TRUE(contains(refusal(""), "the file is empty"));
  std::string text = minimal();
  std::string without_name = text.substr(text.find('\n') + 1);
  EXPECT_TRUE(contains(refusal(without_name), "name: required"));
  std::string no_gateways = text.substr(0, text.find("gateways:"));
  EXPECT_TRUE(contains(refusal(no_gateways), "gateways: must be a list of at least one gateway"));
  std::string no_runner = text;
  no_runner.erase(no_runner.find("runner:"),
                  std::string("runner: {url: http://127.0.0.1:7700}\n").size());
  EXPECT_TRUE(contains(refusal(no_runner), "runner: required"));
}

TEST_F(DelegateConfigTest, UrlsMustBePlainHttp) {
  std::string text = minimal();
  std::string https = text;
  https.replace(https.find("http://127.0.0.1:7600"), 21, "https://127.0.0.1:7600");
  EXPECT_EQ(refusal(https),
            "<text>:2: control_url: https is not supported yet: give an http:// URL on a private "
            "network");
  std::string with_path = text;
  with_path.replace(with_path.find("http://127.0.0.1:7600"), 21, "http://127.0.0.1:7600/api");
  EXPECT_TRUE(contains(refusal(with_path), "control_url: must be http://host:port only"));
  std::string data = text;
  data.replace(data.find("http://127.0.0.1:8080"), 21, "127.0.0.1:8080");
  EXPECT_EQ(refusal(data),
            "<text>:8: gateways[0].data_url: must be a URL such as http://127.0.0.1:7600");
}

TEST_F(DelegateConfigTest, GatewayRules) {
  std::string both = minimal();
  both.insert(both.find("    data_url"), "    control_url: http://127.0.0.1:9\n");
  EXPECT_TRUE(contains(refusal(both), "gateways[0].control_socket: give exactly one of"));
  std::string no_token =
      minimal().replace(minimal().find("control_socket: /run/spacegate/control.sock"),
                        std::string("control_socket: /run/spacegate/control.sock").size(),
                        "control_url: http://127.0.0.1:9");
  EXPECT_TRUE(contains(refusal(no_token), "gateways[0].control_token_file: required"));
  std::string no_data = minimal();
  no_data.erase(no_data.find("    data_url"));
  EXPECT_TRUE(contains(refusal(no_data), "gateways[0].data_url: required"));
  std::string twice = minimal(
      "  - name: local\n"
      "    control_socket: /run/b.sock\n"
      "    data_url: http://127.0.0.1:8081\n");
  EXPECT_EQ(refusal(twice), "<text>:9: gateways[1].name: another gateway has this name");
  std::string runner_both = minimal();
  runner_both.replace(runner_both.find("{url: http://127.0.0.1:7700}"), 28,
                      "{url: http://127.0.0.1:7700, socket: /r.sock}");
  EXPECT_TRUE(contains(refusal(runner_both), "runner: give exactly one of `url` and `socket`"));
}

TEST_F(DelegateConfigTest, TokenFiles) {
  std::string missing = minimal();
  missing.replace(missing.find(token_), token_.size(), folder_ + "/nope.token");
  EXPECT_EQ(refusal(missing), "<text>:3: token_file: cannot read " + folder_ + "/nope.token");
  std::string short_token = write("short.token", "abc\n");
  std::string text = minimal();
  text.replace(text.find(token_), token_.size(), short_token);
  EXPECT_EQ(refusal(text),
            "<text>:3: token_file: " + short_token + ": the token must be at least 16 characters");
  std::string gateway = minimal();
  gateway.replace(gateway.find("control_socket: /run/spacegate/control.sock"),
                  std::string("control_socket: /run/spacegate/control.sock").size(),
                  "control_url: http://127.0.0.1:9\n    control_token_file: " + short_token);
  EXPECT_TRUE(contains(refusal(gateway), "<text>:8: gateways[0].control_token_file: "))
      << refusal(gateway);
}

TEST_F(DelegateConfigTest, FileErrorsNameTheFile) {
  std::string path = write("delegate.yaml", minimal("bogus: 1\n"));
  DelegateConfig config;
  std::string message;
  EXPECT_FALSE(loadDelegateConfigFile(path, config, message));
  EXPECT_EQ(message, path + ":9: bogus: unknown key");
  EXPECT_FALSE(loadDelegateConfigFile(folder_ + "/absent.yaml", config, message));
  EXPECT_TRUE(contains(message, "absent.yaml")) << message;
}

TEST(ServiceUrlTest, Forms) {
  std::string reason;
  EXPECT_TRUE(checkServiceUrl("http://127.0.0.1:7600", reason));
  EXPECT_TRUE(checkServiceUrl("http://control.internal:7600/", reason));
  EXPECT_TRUE(checkServiceUrl("http://[::1]:7600", reason));
  EXPECT_FALSE(checkServiceUrl("http://", reason));
  EXPECT_FALSE(checkServiceUrl("http://a:1/x", reason));
  EXPECT_FALSE(checkServiceUrl("http://user@a:1", reason));
  EXPECT_FALSE(checkServiceUrl("ftp://a:1", reason));
}

}  // namespace
}  // namespace spacegate
