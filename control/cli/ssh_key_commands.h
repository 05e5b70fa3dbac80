// `spacegatectl ssh-key ...`: your SSH public keys at the control plane
// (docs/control-plane.md), which hands them to the agent of every Gitspace
// you start, for its sshd:
//
//   ssh-key set FILE...    replace your keys with the ones in these files
//                          (e.g. ~/.ssh/id_ed25519.pub; one key a line,
//                          blank lines and # comments skipped)
//   ssh-key list [--json]  TYPE FINGERPRINT COMMENT
//
// The control plane checks every key; a refusal of keys[N] is printed as the
// file and line it came from. Same --control-url / --control-token-file and
// exit codes as `gitspace` (0, 1 refused, 2 usage or a bad file, 3
// unreachable).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "control_plane_api.h"

namespace spacegate {

class SshKeyCommands {
 public:
  // Adds `ssh-key` and its subcommands to `app`; `global_json` is the app's
  // own --json flag.
  SshKeyCommands(CLI::App& app, const bool& global_json);

  bool selected() const { return ssh_key_->parsed(); }
  int run();

 private:
  // Where a key line came from, for messages.
  struct KeyOrigin {
    std::string file;
    size_t line = 0;
  };

  int runSet();
  int runList();
  // Prints the keys of a GET or PUT reply.
  int printKeys(const nlohmann::json& reply) const;

  const bool& global_json_;
  ControlPlaneOptions control_;
  ControlPlaneApi api_;
  bool json_ = false;

  CLI::App* ssh_key_ = nullptr;
  CLI::App* set_ = nullptr;
  CLI::App* list_ = nullptr;
  std::vector<std::string> files_;
};

}  // namespace spacegate
