// `spacegatectl gitspace ...`: Gitspaces through the control plane's user
// API (docs/control-plane.md), where the rest of spacegatectl talks to a
// gateway. The commands are declared on the CLI11 app before it parses and
// run after:
//
//   gitspace create --repo URL [--name N] [--branch B] [--ide jupyter|vscode-web|ssh]
//                   [--infra I] [--wait] [--timeout 10m]
//   gitspace list [--json] | get ID | open ID [--path]
//   gitspace start|stop|reset|delete ID [--wait] [--timeout 10m]
//   gitspace wait ID [--for running|stopped|deleted] [--timeout 10m]
//   gitspace logs ID [--follow] | ssh ID [--user U]   (the ssh line, through ssh-proxy)
//
// Every one takes --control-url (SPACEGATE_CONTROL_URL, default
// http://127.0.0.1:7600) and --control-token-file (SPACEGATE_CONTROL_TOKEN_FILE).
// --wait follows the Gitspace's event stream until it is running (stopped,
// deleted), showing progress on stderr (GitspaceProgress); exit codes as
// the rest of spacegatectl: 0 done, 1 refused or failed (the reason is
// printed), 2 usage, 3 unreachable.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "control_plane_api.h"

namespace spacegate {

class GitspaceCommands {
 public:
  // Adds `gitspace` and its subcommands to `app`. `global_json` is the
  // app's own --json flag (read after parsing).
  GitspaceCommands(CLI::App& app, const bool& global_json);

  // After parsing: whether a `gitspace` command was given.
  bool selected() const { return gitspace_->parsed(); }
  // Runs it; the exit code.
  int run();

 private:
  // What a --wait waits for.
  enum class Goal { kRunning, kStopped, kDeleted };

  int runCreate();
  int runList();
  int runGet();
  int runOpen();
  int runAction(const std::string& action);
  int runDelete();
  int runWait();
  int runLogs();
  int runSsh();

  // Follows the events until the Gitspace reaches `goal` (or fails); events
  // written before `since` (the action's state_since) are history and are
  // skipped. Prints the outcome; the exit code.
  int waitFor(const std::string& id, Goal goal, const nlohmann::json& since);
  // The URLs of a running Gitspace, with a fresh token.
  int printRunning(const nlohmann::json& gitspace);
  // --timeout as milliseconds; false (message printed) when it is not a duration.
  bool waitTimeout(uint64_t& milliseconds) const;

  const bool& global_json_;
  ControlPlaneOptions control_;
  ControlPlaneApi api_;
  bool json_ = false;

  CLI::App* gitspace_ = nullptr;
  CLI::App* create_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* get_ = nullptr;
  CLI::App* open_ = nullptr;
  CLI::App* start_ = nullptr;
  CLI::App* stop_ = nullptr;
  CLI::App* reset_ = nullptr;
  CLI::App* delete_ = nullptr;
  CLI::App* wait_command_ = nullptr;
  CLI::App* logs_ = nullptr;
  CLI::App* ssh_ = nullptr;

  std::string id_;  // the ID argument of every command but create and list
  std::string repository_;
  std::string name_;
  std::string branch_;
  std::string ide_ = "jupyter";
  std::string infra_;
  bool wait_ = false;
  std::string timeout_ = "10m";
  std::string wait_for_ = "running";
  bool follow_ = false;
  bool path_form_ = false;
  std::string ssh_user_ = "root";
};

}  // namespace spacegate
