// The control plane's records, as kept in memory and in ControlStore: users,
// infra configs, delegates and what they reported, Gitspaces, tasks and
// events. Plain data; the rules that change them live in ControlPlane,
// TaskQueue and gitspace_lifecycle.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "control/server/gitspace_lifecycle.h"

namespace spacegate {

struct UserRecord {
  std::string id;  // "u-<8 hex>"
  std::string name;
  std::string role;        // "user" | "admin"
  std::string token_hash;  // SHA-256 of the API token, hex
  int64_t created_at_ms = 0;
  // SSH public keys ("<type> <base64> [comment]", checked by
  // parseSshPublicKey): the agent of every Gitspace the user starts gets
  // them for sshd's authorized_keys.
  std::vector<std::string> ssh_keys;

  bool admin() const { return role == "admin"; }
};

struct InfraRecord {
  std::string id;  // "inf-<8 hex>"
  std::string name;
  std::string gateway_domain;  // D: Gitspaces are gs.D, agent--gs.D, <port>--gs.D, D/gs/gs
  std::string url_scheme = "http";
  int gateway_port = 8080;
  std::string runner_pool = "default";
  std::string delegate_selector = "default";  // tasks go to delegates with this selector
  int64_t idle_timeout_s = 0;                 // 0: never stop for idleness
  int64_t created_at_ms = 0;
};

struct DelegateRecord {
  std::string id;  // "dg-<8 hex>"; the same name registers to the same id
  std::string name;
  std::string version;
  std::vector<std::string> selectors;
  int64_t registered_at_ms = 0;
  int64_t last_seen_ms = 0;
};

// One gateway as a delegate last reported it.
struct GatewayReport {
  std::string delegate;  // delegate id
  std::string gateway;   // the gateway's name in the delegate's config
  std::string version;
  bool healthy = false;
  int64_t reported_at_ms = 0;
};

struct GitspaceRecord {
  std::string id;  // "gs-<8 hex>"
  std::string name;
  std::string owner;  // user id
  std::string repository;
  std::string branch;
  std::string ide;    // jupyter | vscode-web | ssh
  std::string infra;  // infra id
  GitspaceState state = GitspaceState::kUninitialized;
  std::string state_reason;
  int64_t state_since_ms = 0;
  int64_t idle_timeout_s = 0;  // 0: never stop for idleness
  // The machine, once a delegate said which (machine_assigned or a start
  // result); cleared when a reset or delete removed it.
  std::string machine_id;
  std::string address;
  int agent_port = 0;
  int ide_port = 0;
  // The machine's sshd port, as the runner reported it through the delegate;
  // the IDE route's tunnel_ports (0: none reported, no tunnel).
  int ssh_port = 0;
  std::string ide_protocol;
  std::vector<int> forwarded_ports;
  int64_t last_activity_ms = 0;  // from delegates' reports; 0: none yet
  int64_t created_at_ms = 0;
  std::string task_id;  // the current task (the one whose result moves the state)

  bool hasMachine() const { return !address.empty() && agent_port > 0; }
};

enum class TaskKind { kStart, kStop, kReset, kDelete };
enum class TaskState {
  kQueued,  // waiting for a delegate
  kLeased,  // handed to `delegate` until lease_until_ms
  kDone,    // finished ok (result)
  kFailed,  // failed, superseded, given up or cancelled (error)
};

const char* taskKindName(TaskKind kind);
bool parseTaskKind(std::string_view text, TaskKind& kind);
const char* taskStateName(TaskState state);
bool parseTaskState(std::string_view text, TaskState& state);

struct TaskRecord {
  std::string id;   // "t-<16 hex>"
  int64_t seq = 0;  // creation order: tasks are handed out oldest first
  TaskKind kind = TaskKind::kStart;
  std::string gitspace;
  TaskState state = TaskState::kQueued;
  std::string delegate;  // delegate id while leased (and after)
  int64_t lease_until_ms = 0;
  int attempt = 0;             // times handed out
  std::string payload;         // the task as last handed out (JSON, without the token)
  std::string result;          // the result data (JSON) when done
  std::string error;           // why it failed
  bool waiting_noted = false;  // the waiting_for_gateway event was written
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;

  bool live() const { return state == TaskState::kQueued || state == TaskState::kLeased; }
};

struct EventRecord {
  int64_t id = 0;  // grows forever (SQLite AUTOINCREMENT)
  std::string gitspace;
  std::string type;
  std::string message;
  nlohmann::json data;  // an object, or null
  int64_t at_ms = 0;
};

// Wall-clock milliseconds since the Unix epoch.
int64_t unixNowMs();
// RFC 3339, UTC, milliseconds: "2024-05-01T12:00:00.000Z".
std::string formatUnixMs(int64_t unix_ms);

}  // namespace spacegate
