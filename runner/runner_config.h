// RunnerConfig: the runner's YAML file (JSON works too). Refused at start
// with "file:line: field: reason" when anything is wrong.
//
//   listen: 127.0.0.1:7700          # TCP API (and/or `socket:` a unix socket)
//   socket: /run/spacegate/runner.sock
//   state_dir: /var/lib/spacegate-runner   # SQLite database, machine folders
//   token_file: /etc/spacegate/runner.token  # optional bearer token (TCP)
//   control_plane_keys: /etc/spacegate/control-plane.keys.json
//   agent_binary: /usr/local/bin/spacegate-agent   # default: beside the runner
//   code_server: /opt/spacegate/code-server/bin/code-server  # optional
//   health_interval: 1s
//   provision_timeout: 60s
//   pools:
//     - name: default
//       driver: process
//       min: 2
//       max: 10
//       process:
//         sandbox: auto            # namespaces | processes | auto
//         subnet: 10.213.0.0/24    # namespaces: the pool's bridge network
//         bridge: sg-default       # default: "sg-" + pool name
//         port_base: 20000         # processes: first loopback port
//         memory: 2048             # MiB per machine (cgroup), 0: no limit
//         cpus: 1.5                # CPU share (cgroup quota), 0: no limit
//         max_processes: 1024      # pids per machine (cgroup)
//         max_open_files: 65536    # rlimit per process
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/validation_error.h"

namespace spacegate {

enum class SandboxMode {
  kAuto,        // namespaces when the runner may create them, else processes
  kNamespaces,  // refuse to start without them
  kProcesses,   // plain child processes on loopback ports
};

// Loopback ports a machine of the processes sandbox takes from port_base:
// agent, IDE, SSH and one spare.
constexpr int kLoopbackPortsPerMachine = 4;

struct ProcessDriverSpec {
  SandboxMode sandbox = SandboxMode::kAuto;
  uint32_t subnet_address = 0;  // host order, network address
  int subnet_prefix = 24;
  std::string subnet_text = "10.213.0.0/24";
  std::string bridge;  // default "sg-" + pool name
  // Below Linux's default ephemeral range (32768-60999), whose ports any
  // outgoing connection may hold.
  int port_base = 20000;
  uint64_t memory_mib = 2048;
  double cpus = 0;
  uint64_t max_processes = 1024;
  uint64_t max_open_files = 65536;

  // Machines the subnet holds: its addresses minus network, bridge and
  // broadcast.
  int subnetCapacity() const { return (1 << (32 - subnet_prefix)) - 3; }
};

struct PoolConfig {
  std::string name;
  std::string driver = "process";
  int min = 0;
  int max = 10;
  ProcessDriverSpec process;
};

struct RunnerConfig {
  std::string listen;  // host:port, empty: none
  std::string socket;  // unix socket path, empty: none
  std::string state_dir = "/var/lib/spacegate-runner";
  std::string token_file;
  std::string token;  // read from token_file
  std::string control_plane_keys;
  std::string agent_binary;
  std::string code_server;
  uint64_t health_interval_ms = 1000;
  uint64_t provision_timeout_ms = 60'000;
  std::vector<PoolConfig> pools;
};

bool parseRunnerConfig(const nlohmann::json& root, RunnerConfig& config, ValidationError& error);
// Loads, validates and reads the token file. "file:line: field: reason".
bool loadRunnerConfigFile(const std::string& file, RunnerConfig& config, std::string& message);
bool loadRunnerConfigText(const std::string& text, RunnerConfig& config, std::string& message);

// "10.213.0.0/24" → network address (host order) and prefix; false when not
// an IPv4 network of /16 to /29 whose host bits are zero.
bool parseIpv4Subnet(const std::string& text, uint32_t& address, int& prefix, std::string& error);
std::string formatIpv4(uint32_t address);

}  // namespace spacegate
