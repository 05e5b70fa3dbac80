// The runner's config file: a file with every field, the defaults, and each
// refusal with the "file:line: field: reason" it prints.
#include "runner/runner_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace spacegate {
namespace {

std::string load(const std::string& text, RunnerConfig& config) {
  std::string message;
  if (loadRunnerConfigText(text, config, message)) return {};
  EXPECT_FALSE(message.empty());
  return message;
}

// The error for `text`, which must be refused.
std::string refusal(const std::string& text) {
  RunnerConfig config;
  std::string message = load(text, config);
  EXPECT_FALSE(message.empty()) << "accepted:\n" << text;
  return message;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A valid head for files whose pools part is under test.
const char kHead[] =
    "listen: 127.0.0.1:7700\n"
    "state_dir: /var/lib/sg\n";

std::string withPool(const std::string& pool_body) {
  return std::string(kHead) + "pools:\n  - name: default\n" + pool_body;
}

class RunnerConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char folder[] = "/tmp/runner-config-test-XXXXXX";
    ASSERT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
  }
  void TearDown() override { std::filesystem::remove_all(folder_); }
  std::string write(const std::string& name, const std::string& content) {
    std::string path = folder_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
  std::string folder_;
};

TEST_F(RunnerConfigFileTest, GoodFileWithEveryField) {
  std::string token = write("runner.token", "0123456789abcdef-token \r\nignored second line\n");
  std::string text =
      "listen: 127.0.0.1:7700\n"
      "socket: /run/spacegate/runner.sock\n"
      "state_dir: /var/lib/sg\n"
      "token_file: " +
      token +
      "\n"
      "control_plane_keys: /etc/spacegate/keys.json\n"
      "agent_binary: /usr/local/bin/spacegate-agent\n"
      "code_server: /opt/code-server/bin/code-server\n"
      "health_interval: 500ms\n"
      "provision_timeout: 2m\n"
      "pools:\n"
      "  - name: default\n"
      "    driver: process\n"
      "    min: 2\n"
      "    max: 10\n"
      "    process:\n"
      "      sandbox: namespaces\n"
      "      subnet: 10.213.0.0/24\n"
      "      bridge: sg-main\n"
      "      port_base: 42000\n"
      "      memory: 4096\n"
      "      cpus: 1.5\n"
      "      max_processes: 512\n"
      "      max_open_files: 4096\n"
      "  - name: small-2\n"
      "    max: 5\n"
      "    process:\n"
      "      sandbox: processes\n"
      "      subnet: 10.214.0.0/29\n"
      "      port_base: 43000\n";
  RunnerConfig config;
  ASSERT_EQ(load(text, config), "");
  EXPECT_EQ(config.listen, "127.0.0.1:7700");
  EXPECT_EQ(config.socket, "/run/spacegate/runner.sock");
  EXPECT_EQ(config.state_dir, "/var/lib/sg");
  EXPECT_EQ(config.token_file, token);
  EXPECT_EQ(config.token, "0123456789abcdef-token");  // first line, trailing space and CR cut
  EXPECT_EQ(config.control_plane_keys, "/etc/spacegate/keys.json");
  EXPECT_EQ(config.agent_binary, "/usr/local/bin/spacegate-agent");
  EXPECT_EQ(config.code_server, "/opt/code-server/bin/code-server");
  EXPECT_EQ(config.health_interval_ms, 500u);
  EXPECT_EQ(config.provision_timeout_ms, 120'000u);
  ASSERT_EQ(config.pools.size(), 2u);

  const PoolConfig& first = config.pools[0];
  EXPECT_EQ(first.name, "default");
  EXPECT_EQ(first.driver, "process");
  EXPECT_EQ(first.min, 2);
  EXPECT_EQ(first.max, 10);
  EXPECT_EQ(first.process.sandbox, SandboxMode::kNamespaces);
  EXPECT_EQ(first.process.subnet_text, "10.213.0.0/24");
  EXPECT_EQ(first.process.subnet_address, 0x0AD50000u);
  EXPECT_EQ(first.process.subnet_prefix, 24);
  EXPECT_EQ(first.process.subnetCapacity(), 253);
  EXPECT_EQ(first.process.bridge, "sg-main");
  EXPECT_EQ(first.process.port_base, 42000);
  EXPECT_EQ(first.process.memory_mib, 4096u);
  EXPECT_DOUBLE_EQ(first.process.cpus, 1.5);
  EXPECT_EQ(first.process.max_processes, 512u);
  EXPECT_EQ(first.process.max_open_files, 4096u);

  // The second pool takes the defaults it does not set.
  const PoolConfig& second = config.pools[1];
  EXPECT_EQ(second.name, "small-2");
  EXPECT_EQ(second.driver, "process");
  EXPECT_EQ(second.min, 0);
  EXPECT_EQ(second.max, 5);
  EXPECT_EQ(second.process.sandbox, SandboxMode::kProcesses);
  EXPECT_EQ(second.process.subnet_address, 0x0AD60000u);
  EXPECT_EQ(second.process.subnet_prefix, 29);
  EXPECT_EQ(second.process.subnetCapacity(), 5);
  EXPECT_EQ(second.process.bridge, "sg-small-2");
  EXPECT_EQ(second.process.memory_mib, 2048u);
  EXPECT_DOUBLE_EQ(second.process.cpus, 0);
  EXPECT_EQ(second.process.max_processes, 1024u);
  EXPECT_EQ(second.process.max_open_files, 65536u);
}

TEST_F(RunnerConfigFileTest, RunnerConfigFileTestMustBeReadableAndLongEnough) {
  std::string text =
      std::string(kHead) + "token_file: " + folder_ + "/missing.token\npools:\n  - name: default\n";
  EXPECT_EQ(refusal(text), "<text>:3: token_file: cannot read " + folder_ + "/missing.token");
  std::string short_token = write("short.token", "tooshort\n");
  text = std::string(kHead) + "token_file: " + short_token + "\npools:\n  - name: default\n";
  EXPECT_EQ(refusal(text), "<text>:3: token_file: the token must be at least 16 characters");
}

TEST(RunnerConfigTest, MinimalFileGetsTheDefaults) {
  RunnerConfig config;
  ASSERT_EQ(load("socket: /run/sg/runner.sock\npools:\n  - name: default\n", config), "");
  EXPECT_EQ(config.listen, "");
  EXPECT_EQ(config.state_dir, "/var/lib/spacegate-runner");
  EXPECT_EQ(config.token, "");
  EXPECT_EQ(config.health_interval_ms, 1000u);
  EXPECT_EQ(config.provision_timeout_ms, 60'000u);
  ASSERT_EQ(config.pools.size(), 1u);
  EXPECT_EQ(config.pools[0].min, 0);
  EXPECT_EQ(config.pools[0].max, 10);
  EXPECT_EQ(config.pools[0].process.sandbox, SandboxMode::kAuto);
  EXPECT_EQ(config.pools[0].process.subnet_address, 0x0AD50000u);
  EXPECT_EQ(config.pools[0].process.subnet_prefix, 24);
  EXPECT_EQ(config.pools[0].process.bridge, "sg-default");
  EXPECT_EQ(config.pools[0].process.port_base, 20000);
}

TEST(RunnerConfigTest, JsonWorksToo) {
  RunnerConfig config;
  ASSERT_EQ(
      load(R"({"listen": "127.0.0.1:1", "pools": [{"name": "a", "min": 1, "max": 2}]})", config),
      "");
  EXPECT_EQ(config.pools[0].name, "a");
  EXPECT_EQ(config.pools[0].max, 2);
}

TEST(RunnerConfigTest, EmptyFile) {
  EXPECT_TRUE(contains(refusal(""), "the file is empty"));
}

TEST(RunnerConfigTest, NeedsListenOrSocket) {
  EXPECT_EQ(refusal("state_dir: /var/lib/sg\npools:\n  - name: default\n"),
            "<text>:1: listen: give `listen` (host:port) or `socket` (a unix socket)");
}

TEST(RunnerConfigTest, StateDirMustBeAbsolute) {
  EXPECT_EQ(refusal("listen: 127.0.0.1:1\nstate_dir: var/lib/sg\npools:\n  - name: default\n"),
            "<text>:2: state_dir: must be an absolute path");
  EXPECT_EQ(refusal("listen: 127.0.0.1:1\nstate_dir: \"\"\npools:\n  - name: default\n"),
            "<text>:2: state_dir: must be a non-empty string");
}

TEST(RunnerConfigTest, HealthIntervalAtLeast100ms) {
  EXPECT_EQ(refusal(std::string(kHead) + "health_interval: 99ms\npools:\n  - name: default\n"),
            "<text>:3: health_interval: must be at least 100ms");
  RunnerConfig config;
  EXPECT_EQ(
      load(std::string(kHead) + "health_interval: 100ms\npools:\n  - name: default\n", config), "");
  EXPECT_EQ(config.health_interval_ms, 100u);
  EXPECT_TRUE(contains(refusal(std::string(kHead) + "health_interval: soon\npools:\n  - name: a\n"),
                       "<text>:3: health_interval: must be a duration"));
  EXPECT_TRUE(contains(refusal(std::string(kHead) + "provision_timeout: 5\npools:\n  - name: a\n"),
                       "<text>:3: provision_timeout: must be a duration"));
}

TEST(RunnerConfigTest, PoolsMustBeANonEmptyList) {
  EXPECT_EQ(refusal(kHead), "<text>:1: pools: must be a list of at least one pool");
  EXPECT_EQ(refusal(std::string(kHead) + "pools: []\n"),
            "<text>:3: pools: must be a list of at least one pool");
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n  default: {}\n"),
            "<text>:3: pools: must be a list of at least one pool");
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n  - just-a-name\n"),
            "<text>:4: pools[0]: must be a mapping");
}

TEST(RunnerConfigTest, PoolNames) {
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n  - min: 1\n"),
            "<text>:4: pools[0].name: required");
  for (const char* name : {"Default", "under_score", "-dash", "dash-", "thirteen-long", "a b"}) {
    EXPECT_EQ(refusal(std::string(kHead) + "pools:\n  - name: \"" + name + "\"\n"),
              "<text>:4: pools[0].name: must be 1 to 12 of [a-z0-9-], starting and ending with "
              "a letter or digit")
        << name;
  }
  RunnerConfig config;
  for (const char* name : {"a", "0", "a-b", "twelve-long1"}) {
    EXPECT_EQ(load(std::string(kHead) + "pools:\n  - name: \"" + name + "\"\n", config), "")
        << name;
  }
}

TEST(RunnerConfigTest, DuplicatePoolNames) {
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: twin\n"
                                         "    process: {subnet: 10.1.0.0/24, port_base: 40000}\n"
                                         "  - name: twin\n"
                                         "    process: {subnet: 10.2.0.0/24, port_base: 50000}\n"),
            "<text>:6: pools[1].name: another pool has this name");
}

TEST(RunnerConfigTest, UnknownDriver) {
  EXPECT_EQ(refusal(withPool("    driver: qemu\n")),
            "<text>:5: pools[0].driver: unknown driver (this runner has: process)");
}

TEST(RunnerConfigTest, MinAndMax) {
  EXPECT_EQ(refusal(withPool("    min: 5\n    max: 2\n")),
            "<text>:5: pools[0].min: must not exceed max");
  EXPECT_EQ(refusal(withPool("    max: 0\n")),
            "<text>:5: pools[0].max: must be a whole number from 1 to 4096");
  EXPECT_EQ(refusal(withPool("    min: -1\n")),
            "<text>:5: pools[0].min: must be a whole number from 0 to 4096");
  EXPECT_EQ(refusal(withPool("    min: two\n")),
            "<text>:5: pools[0].min: must be a whole number from 0 to 4096");
}

TEST(RunnerConfigTest, MaxBeyondTheSubnetCapacity) {
  EXPECT_EQ(refusal(withPool("    max: 6\n    process:\n      subnet: 10.9.0.0/29\n")),
            "<text>:5: pools[0].max: the subnet 10.9.0.0/29 holds only 5 machines");
  RunnerConfig config;
  EXPECT_EQ(load(withPool("    max: 5\n    process:\n      subnet: 10.9.0.0/29\n"), config), "");
  // The default subnet (/24) holds 253.
  EXPECT_EQ(refusal(withPool("    max: 254\n")),
            "<text>:5: pools[0].max: the subnet 10.213.0.0/24 holds only 253 machines");
}

TEST(RunnerConfigTest, PortBaseLeavesRoomForEveryMachine) {
  EXPECT_EQ(refusal(withPool("    max: 200\n    process:\n      port_base: 65000\n")),
            "<text>:7: pools[0].process.port_base: too high: each machine needs 4 ports above it");
  EXPECT_EQ(refusal(withPool("    process:\n      port_base: 80\n")),
            "<text>:6: pools[0].process.port_base: must be a whole number from 1024 to 65000");
}

TEST(RunnerConfigTest, BadSubnets) {
  auto subnet = [](const std::string& value) {
    return refusal(withPool("    process:\n      subnet: \"" + value + "\"\n"));
  };
  const std::string kNotANetwork =
      "<text>:6: pools[0].process.subnet: must be an IPv4 network such as 10.213.0.0/24";
  EXPECT_EQ(subnet("garbage"), kNotANetwork);
  EXPECT_EQ(subnet("10.213.0.0"), kNotANetwork);
  EXPECT_EQ(subnet("10.213.0/24"), kNotANetwork);
  EXPECT_EQ(subnet("300.1.0.0/24"), kNotANetwork);
  EXPECT_EQ(subnet("10.213.0.0/"), kNotANetwork);
  EXPECT_EQ(subnet("10.213.0.0/x4"), kNotANetwork);
  EXPECT_EQ(subnet("10.213.0.0/024"), kNotANetwork);
  EXPECT_EQ(subnet("fd00::/64"), kNotANetwork);
  EXPECT_EQ(subnet("10.213.0.1/24"),
            "<text>:6: pools[0].process.subnet: host bits must be zero (the network address, "
            "e.g. 10.213.0.0/24)");
  EXPECT_EQ(subnet("10.0.0.0/15"),
            "<text>:6: pools[0].process.subnet: the prefix must be from "
            "/16 to /29");
  EXPECT_EQ(subnet("10.0.0.0/30"),
            "<text>:6: pools[0].process.subnet: the prefix must be from "
            "/16 to /29");
}

TEST(RunnerConfigTest, ParseIpv4SubnetDirectly) {
  uint32_t address = 0;
  int prefix = 0;
  std::string error;
  ASSERT_TRUE(parseIpv4Subnet("10.213.0.0/24", address, prefix, error)) << error;
  EXPECT_EQ(address, 0x0AD50000u);
  EXPECT_EQ(prefix, 24);
  ASSERT_TRUE(parseIpv4Subnet("172.16.0.0/16", address, prefix, error)) << error;
  EXPECT_EQ(prefix, 16);
  ASSERT_TRUE(parseIpv4Subnet("192.168.1.8/29", address, prefix, error)) << error;
  EXPECT_EQ(address, 0xC0A80108u);
  EXPECT_EQ(prefix, 29);
  EXPECT_FALSE(parseIpv4Subnet("192.168.1.4/29", address, prefix, error));
  EXPECT_EQ(error, "host bits must be zero (the network address, e.g. 192.168.1.0/29)");
  EXPECT_FALSE(parseIpv4Subnet("10.0.0.0/15", address, prefix, error));
  EXPECT_EQ(error, "the prefix must be from /16 to /29");
  EXPECT_FALSE(parseIpv4Subnet("10.0.0.0/30", address, prefix, error));
  EXPECT_FALSE(parseIpv4Subnet("10.0.0.0/99", address, prefix, error));
  EXPECT_FALSE(parseIpv4Subnet("", address, prefix, error));
  EXPECT_EQ(error, "must be an IPv4 network such as 10.213.0.0/24");
}

TEST(RunnerConfigTest, FormatIpv4) {
  EXPECT_EQ(formatIpv4(0x0AD50001u), "10.213.0.1");
  EXPECT_EQ(formatIpv4(0), "0.0.0.0");
  EXPECT_EQ(formatIpv4(0xFFFFFFFFu), "255.255.255.255");
  EXPECT_EQ(formatIpv4(0xC0A80108u), "192.168.1.8");
}

TEST(RunnerConfigTest, UnknownKeysNameThePathAndLine) {
  EXPECT_EQ(refusal(std::string(kHead) + "colour: blue\npools:\n  - name: default\n"),
            "<text>:3: colour: unknown key");
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: default\n"
                                         "    min: 1\n"
                                         "    max: 2\n"
                                         "    mini: 1\n"),
            "<text>:7: pools[0].mini: unknown key");
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: default\n"
                                         "    process:\n"
                                         "      sandbox: auto\n"
                                         "      subnett: 10.1.0.0/24\n"),
            "<text>:7: pools[0].process.subnett: unknown key");
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: a\n"
                                         "    process: {subnet: 10.1.0.0/24, port_base: 40000}\n"
                                         "  - name: b\n"
                                         "    extra: true\n"),
            "<text>:7: pools[1].extra: unknown key");
  EXPECT_EQ(refusal(withPool("    process: fast\n")),
            "<text>:5: pools[0].process: must be a mapping");
}

TEST(RunnerConfigTest, BadSandboxAndOtherProcessFields) {
  EXPECT_EQ(refusal(withPool("    process:\n      sandbox: containers\n")),
            "<text>:6: pools[0].process.sandbox: must be auto, namespaces or processes");
  EXPECT_EQ(refusal(withPool("    process:\n      sandbox: 1\n")),
            "<text>:6: pools[0].process.sandbox: must be auto, namespaces or processes");
  EXPECT_EQ(refusal(withPool("    process:\n      cpus: -1\n")),
            "<text>:6: pools[0].process.cpus: must be a number from 0 (no limit) to 1024");
  EXPECT_EQ(refusal(withPool("    process:\n      cpus: many\n")),
            "<text>:6: pools[0].process.cpus: must be a number from 0 (no limit) to 1024");
  EXPECT_EQ(refusal(withPool("    process:\n      bridge: this-name-is-too-long\n")),
            "<text>:6: pools[0].process.bridge: must be 1 to 15 of [A-Za-z0-9_-]");
  EXPECT_EQ(refusal(withPool("    process:\n      memory: -5\n")),
            "<text>:6: pools[0].process.memory: must be a whole number from 0 to 16777216");
  RunnerConfig config;
  for (const char* mode : {"auto", "namespaces", "processes"}) {
    EXPECT_EQ(load(withPool(std::string("    process:\n      sandbox: ") + mode + "\n"), config),
              "")
        << mode;
  }
}

TEST(RunnerConfigTest, PoolsMustNotShareSubnetsPortsOrBridges) {
  // Both on the default subnet.
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: a\n"
                                         "    process: {port_base: 40000}\n"
                                         "  - name: b\n"
                                         "    process: {port_base: 50000}\n"),
            "<text>:7: pools[1].process.subnet: overlaps the subnet of pool a");
  // A /16 around a /24.
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: a\n"
                                         "    process: {subnet: 10.5.7.0/24, port_base: 40000}\n"
                                         "  - name: b\n"
                                         "    process: {subnet: 10.5.0.0/16, port_base: 50000}\n"),
            "<text>:7: pools[1].process.subnet: overlaps the subnet of pool a");
  // Ports: a uses 40000..40039 (10 machines, 4 ports each); b starts inside.
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: a\n"
                                         "    process: {subnet: 10.1.0.0/24, port_base: 40000}\n"
                                         "  - name: b\n"
                                         "    process: {subnet: 10.2.0.0/24, port_base: 40036}\n"),
            "<text>:7: pools[1].process.port_base: overlaps the ports of pool a");
  // ... and b below a, reaching into it.
  EXPECT_EQ(refusal(std::string(kHead) + "pools:\n"
                                         "  - name: a\n"
                                         "    process: {subnet: 10.1.0.0/24, port_base: 40000}\n"
                                         "  - name: b\n"
                                         "    process: {subnet: 10.2.0.0/24, port_base: 39964}\n"),
            "<text>:7: pools[1].process.port_base: overlaps the ports of pool a");
  // Adjacent ranges are fine.
  RunnerConfig config;
  EXPECT_EQ(load(std::string(kHead) + "pools:\n"
                                      "  - name: a\n"
                                      "    process: {subnet: 10.1.0.0/24, port_base: 40000}\n"
                                      "  - name: b\n"
                                      "    process: {subnet: 10.2.0.0/24, port_base: 40040}\n",
                 config),
            "");
  // The same bridge.
  EXPECT_EQ(refusal(std::string(kHead) +
                    "pools:\n"
                    "  - name: a\n"
                    "    process: {subnet: 10.1.0.0/24, port_base: 40000, bridge: br0}\n"
                    "  - name: b\n"
                    "    process: {subnet: 10.2.0.0/24, port_base: 50000, bridge: br0}\n"),
            "<text>:7: pools[1].process.bridge: another pool uses this bridge");
}

TEST(RunnerConfigTest, LoadFileNamesTheFile) {
  RunnerConfig config;
  std::string message;
  EXPECT_FALSE(loadRunnerConfigFile("/nonexistent/runner.yaml", config, message));
  EXPECT_TRUE(contains(message, "/nonexistent/runner.yaml")) << message;
}

}  // namespace
}  // namespace spacegate
