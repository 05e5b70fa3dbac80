// IdeServer: the IDE a Gitspace serves, as a command line and a readiness
// probe. Jupyter Notebook and code-server are HTTP servers with their own
// authentication turned off (the gateway is the door: only it reaches the
// machine, and it checks every request's token); sshd serves desktop IDEs
// with the user's keys only. A Gitspace is `running` only once its IDE
// answers: an HTTP status line for the HTTP IDEs, the SSH banner for sshd.
#pragma once

#include <string>
#include <vector>

#include "runner/agent/agent_config.h"
#include "runner/agent/gitspace_setup.h"
#include "runner/agent/gitspace_spec.h"
#include "runner/agent/setup_log.h"
#include "runner/process/child_process.h"

namespace spacegate {

struct IdeLaunch {
  ChildSpec child;
  std::string protocol;  // "http" or "ssh"
  std::string host;      // where it listens (config.ide_host)
  int port = 0;
};

// The port and protocol an IDE kind is served on.
int idePort(IdeKind kind, const AgentConfig& config);
const char* ideProtocol(IdeKind kind);

// Builds the IDE's command line (and, for sshd, writes its config, keys and
// host key). False with a reason that becomes the Gitspace's error.
bool prepareIdeLaunch(const GitspaceSpec& spec, const AgentConfig& config,
                      const GitspaceSetup& setup, const PreparedWorkspace& prepared, SetupLog& log,
                      IdeLaunch& launch, std::string& error);

// Writes the spec's user.ssh_authorized_keys, one a line, to the file sshd's
// AuthorizedKeysFile names (<disk>/.spacegate/authorized_keys). sshd reads
// it at every login, so a running sshd takes new keys at once.
bool writeAuthorizedKeys(const GitspaceSpec& spec, const AgentConfig& config, std::string& error);

// The settings sshd gets (one file, rewritten at every start).
struct SshdSettings {
  std::string listen_host;
  int port = 22;
  std::string host_key;
  std::string authorized_keys;
  std::string pid_file;
  std::string allow_user;
  std::vector<std::string> environment;  // NAME=value for SetEnv (unsafe values left out)
};
std::string sshdConfigText(const SshdSettings& settings);

// Where to probe an IDE that listens on `host`: a wildcard address is
// probed on loopback.
std::string probeHost(const std::string& host);
// True when the IDE answers on host:port within `timeout_ms`.
bool ideAnswers(const std::string& host, int port, const std::string& protocol, int timeout_ms);

}  // namespace spacegate
