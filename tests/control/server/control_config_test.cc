// The control plane's config file: every field, the defaults, and each
// refusal with the "file:line: field: reason" it prints.
#include "control/server/control_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace spacegate {
namespace {

std::string refusal(const std::string& text) {
  ControlPlaneConfig config;
  std::string message;
  EXPECT_FALSE(loadControlConfigText(text, config, message)) << "accepted:\n" << text;
  return message;
}

TEST(ControlConfigTest, Defaults) {
  ControlPlaneConfig config;
  std::string message;
  ASSERT_TRUE(loadControlConfigText("", config, message)) << message;
  ASSERT_TRUE(checkControlConfig(config, message)) << message;
  EXPECT_EQ(config.listen, "127.0.0.1:7600");
  EXPECT_EQ(config.public_url, "http://127.0.0.1:7600");
  EXPECT_EQ(config.token_ttl_ms, 8 * 3'600'000u);
  EXPECT_EQ(config.agent_token_ttl_ms, 15 * 60'000u);
  EXPECT_EQ(config.task_lease_ms, 60'000u);
  EXPECT_EQ(config.starting_deadline_ms, 10 * 60'000u);
  EXPECT_EQ(config.stopping_deadline_ms, 5 * 60'000u);
  EXPECT_EQ(config.cleaning_deadline_ms, 5 * 60'000u);
  EXPECT_EQ(config.default_idle_timeout_ms, 30 * 60'000u);
  EXPECT_EQ(config.limits.max_gitspaces_per_user, 100u);
  EXPECT_EQ(config.limits.max_body_size, 1u << 20);
  EXPECT_EQ(config.limits.max_task_attempts, 5u);
  EXPECT_EQ(config.limits.gateway_report_max_age_ms, 5 * 60'000u);
}

TEST(ControlConfigTest, EveryField) {
  ControlPlaneConfig config;
  std::string message;
  ASSERT_TRUE(
      loadControlConfigText("listen: 127.0.0.1:9000\n"
                            "state_dir: /srv/control\n"
                            "public_url: https://control.example/\n"
                            "token_ttl: 1h\n"
                            "agent_token_ttl: 5m\n"
                            "task_lease: 30s\n"
                            "deadlines: {starting: 2m, stopping: 1m, cleaning: 90s}\n"
                            "default_idle_timeout: 45m\n"
                            "log_level: debug\n"
                            "limits:\n"
                            "  max_body_size: 65536\n"
                            "  max_gitspaces_per_user: 3\n"
                            "  max_event_streams: 10\n"
                            "  events_per_gitspace: 500\n"
                            "  max_task_attempts: 2\n"
                            "  gateway_report_max_age: 1m\n"
                            "  stream_keepalive: 5s\n"
                            "  max_polls_per_delegate: 4\n",
                            config, message))
      << message;
  ASSERT_TRUE(checkControlConfig(config, message));
  EXPECT_EQ(config.listen, "127.0.0.1:9000");
  EXPECT_EQ(config.state_dir, "/srv/control");
  EXPECT_EQ(config.public_url, "https://control.example");
  EXPECT_EQ(config.token_ttl_ms, 3'600'000u);
  EXPECT_EQ(config.agent_token_ttl_ms, 300'000u);
  EXPECT_EQ(config.task_lease_ms, 30'000u);
  EXPECT_EQ(config.starting_deadline_ms, 120'000u);
  EXPECT_EQ(config.stopping_deadline_ms, 60'000u);
  EXPECT_EQ(config.cleaning_deadline_ms, 90'000u);
  EXPECT_EQ(config.default_idle_timeout_ms, 45 * 60'000u);
  EXPECT_EQ(config.log_level, "debug");
  EXPECT_EQ(config.limits.max_body_size, 65536u);
  EXPECT_EQ(config.limits.max_gitspaces_per_user, 3u);
  EXPECT_EQ(config.limits.max_event_streams, 10u);
  EXPECT_EQ(config.limits.events_per_gitspace, 500u);
  EXPECT_EQ(config.limits.max_task_attempts, 2u);
  EXPECT_EQ(config.limits.gateway_report_max_age_ms, 60'000u);
  EXPECT_EQ(config.limits.stream_keepalive_ms, 5'000u);
  EXPECT_EQ(config.limits.max_polls_per_delegate, 4u);
}

TEST(ControlConfigTest, RefusalsNameTheLineAndField) {
  EXPECT_EQ(refusal("listen: 127.0.0.1:7600\nlisten_port: 3\n"),
            "<text>:2: listen_port: unknown key");
  EXPECT_EQ(refusal("token_ttl: forever\n"),
            "<text>:1: token_ttl: must be a duration such as \"500ms\", \"10s\", \"5m\", \"1h\"");
  EXPECT_EQ(refusal("task_lease: 10ms\n"), "<text>:1: task_lease: must be at least 1000ms");
  EXPECT_EQ(refusal("deadlines:\n  starting: 2m\n  running: 3m\n"),
            "<text>:3: deadlines.running: unknown key");
  EXPECT_EQ(refusal("limits:\n  max_gitspaces_per_user: 0\n"),
            "<text>:2: limits.max_gitspaces_per_user: must be a whole number from 1 to 100000");
  EXPECT_EQ(refusal("log_level: loud\n"),
            "<text>:1: log_level: must be debug, info, warning or error");
  EXPECT_EQ(refusal("state_dir: relative/path\n"), "<text>:1: state_dir: must be an absolute path");
  EXPECT_EQ(refusal("public_url: ftp://x\n"),
            "<text>:1: public_url: must be an http:// or https:// URL");
  std::string listen = refusal("listen: nowhere\n");
  EXPECT_EQ(listen.rfind("<text>:1: listen: ", 0), 0u) << listen;
  EXPECT_EQ(refusal("- a list\n"), "<text>:1: must be a mapping");
}

TEST(ControlConfigTest, FileErrorsNameTheFile) {
  char folder[] = "/tmp/control-config-test-XXXXXX";
  ASSERT_NE(::mkdtemp(folder), nullptr);
  std::string path = std::string(folder) + "/control.yaml";
  std::ofstream(path) << "listen: 127.0.0.1:7600\n\ndeadlines: {starting: soon}\n";
  ControlPlaneConfig config;
  std::string message;
  EXPECT_FALSE(loadControlConfigFile(path, config, message));
  EXPECT_EQ(message, path +
                         ":3: deadlines.starting: must be a duration such as \"500ms\", "
                         "\"10s\", \"5m\", \"1h\"");
  EXPECT_FALSE(loadControlConfigFile(std::string(folder) + "/missing.yaml", config, message));
  EXPECT_NE(message.find("missing.yaml"), std::string::npos);
  std::filesystem::remove_all(folder);
}

}  // namespace
}  // namespace spacegate
