// AgentConfig: what the runner hands a machine's agent at boot, as a JSON
// file (mode 0600) in the machine's folder: who the machine is, where to
// listen, the control plane's public keys (to check agent tokens), the
// runner's per-machine secret (for the runner-only assignment call), and the
// machine's disk folder, where the workspace and the agent's own state live.
// It is the contract between `spacegate-runner` and `spacegate-agent`.
#pragma once

#include <string>
#include <vector>

#include "auth/access_token.h"

namespace spacegate {

struct AgentConfig {
  std::string machine_id;
  // host:port the agent's API listens on (the machine's address, or
  // 127.0.0.1 when the runner has no namespaces).
  std::string listen;
  // Bearer secret of the runner's calls (PUT /v1/machine/assignment). Random,
  // per machine; never leaves the runner and this file.
  std::string runner_secret;
  // The Gitspace this machine serves; empty for a warm machine until the
  // runner assigns it.
  std::string gitspace_id;
  // Control plane public keys: {kid, 32-byte Ed25519 public key}.
  std::vector<std::pair<std::string, std::string>> keys;
  // The machine's disk: workspace/, home/, .spacegate/ (agent state) live here.
  std::string disk;
  // Address the IDE and SSH listen on (the machine's own, or 127.0.0.1), and
  // their ports. In a namespace every machine can use the same ports; on the
  // fallback, the runner gives each machine its own.
  std::string ide_host = "0.0.0.0";
  int ide_port = 8888;
  int ssh_port = 22;
  // code-server's binary, if the host has one ("" when not installed).
  std::string code_server;
  // True when the agent is PID 1 of a PID namespace (it then reaps orphans
  // and its exit ends the machine).
  bool sandboxed = false;

  KeyRing keyRing() const;
};

// JSON text of the config (keys as base64url).
std::string agentConfigToJson(const AgentConfig& config);
// False with a reason naming the field.
bool parseAgentConfig(const std::string& text, AgentConfig& config, std::string& error);

// The agent's port inside a machine (its namespace) by default.
constexpr int kDefaultAgentPort = 7780;

}  // namespace spacegate
