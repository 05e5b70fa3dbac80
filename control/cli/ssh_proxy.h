// `spacegatectl ssh-proxy GITSPACE`: an ssh ProxyCommand that reaches a
// Gitspace's sshd through the gateway (docs/tunnels.md):
//
//   ssh-proxy GITSPACE [--via connect|websocket] [--port N] [--gateway HOST:PORT]
//             [--host HOST] [--token-file F] [--control-url URL --control-token-file F]
//
// It asks the control plane for an ssh token (POST .../token {"scope":"ssh"},
// whose reply says the Gitspace's host, its ssh port, the gateway and the
// WebSocket URL), or reads one from --token-file (then --gateway is needed,
// and --host unless GITSPACE is the host itself). It connects to the gateway
// and opens the tunnel, `CONNECT host:port` with Proxy-Authorization: Bearer,
// or a WebSocket to /.spacegate/tunnel/<port> with Authorization: Bearer;
// then TunnelPump copies stdin and stdout through it until both ends are
// done. A refusal is one line on stderr with the gateway's status and reason
// ("spacegatectl: gateway refused the tunnel: 403 Forbidden: ..."). Exit
// codes as the rest of spacegatectl: 0 the tunnel ended, 1 refused or broken,
// 2 usage, 3 the control plane or the gateway could not be reached.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "control_plane_api.h"

namespace spacegate {

class SshProxyCommand {
 public:
  // Adds `ssh-proxy` to `app`.
  explicit SshProxyCommand(CLI::App& app);

  // After parsing: whether `ssh-proxy` was given.
  bool selected() const { return command_->parsed(); }
  // Runs it (the tunnel's whole life); the exit code.
  int run();

 private:
  CLI::App* command_ = nullptr;
  std::string gitspace_;
  std::string via_ = "connect";
  int port_ = 0;              // 0: the token reply's (with --token-file: 22)
  std::string gateway_;       // HOST:PORT; empty: the token reply's
  std::string host_;          // the Gitspace's host; empty: the token reply's
  std::string token_file_;    // an ssh token; skips the control plane
  int timeout_seconds_ = 30;  // connect and handshake
  ControlPlaneOptions control_;
};

}  // namespace spacegate
