// DelegateConfig: the delegate's YAML file (JSON works too). Refused at start
// with "file:line: field: reason" when anything is wrong, token files
// included (read at load, first line, at least 16 characters).
//
//   name: delegate-1
//   control_url: http://127.0.0.1:7600
//   token_file: /var/lib/spacegate-control/delegate.token
//   selectors: [default]
//   state_file: /var/lib/spacegate-delegate/state.json   # finished tasks
//   runner: {url: http://127.0.0.1:7700, token_file: ...}  # or {socket: PATH}
//   gateways:
//     - name: local
//       control_socket: /run/spacegate/control.sock  # or control_url + control_token_file
//       data_url: http://127.0.0.1:8080   # the gateway's traffic port
//   route_sync_interval: 60s
//   report_interval: 10s
//   limits: {max_concurrent_tasks: 8, call_timeout: 10s, ...}  # see DelegateLimits
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/validation_error.h"

namespace spacegate {

// Every limit and timeout of the delegate, with its default. The ones with a
// config key are read from the file's `limits:` section (key in brackets).
struct DelegateLimits {
  // Tasks run at once [max_concurrent_tasks]; the delegate asks for another
  // only while a worker is free, so the rest wait unleased in the control
  // plane's queue.
  int max_concurrent_tasks = 8;
  // One call to the control plane, the runner or a gateway's control API
  // [call_timeout] (connect, send, and each wait for reply bytes).
  uint64_t call_timeout_ms = 10'000;
  // One call to an agent through the gateway [agent_call_timeout]: stop and
  // delete answer only once the Gitspace's processes are gone.
  uint64_t agent_call_timeout_ms = 60'000;
  // The long poll's `wait` in seconds (the control plane allows 1..30).
  int poll_wait_s = 30;
  // From the runner's answer to a machine that is ready [machine_ready_timeout].
  uint64_t machine_ready_timeout_ms = 120'000;
  // From PUT /v1/gitspace to `running` [gitspace_setup_timeout]: under the
  // control plane's 10 minute `starting` deadline, so the delegate's own
  // reason reaches the user first.
  uint64_t gitspace_setup_timeout_ms = 540'000;
  // Until the runner says `stopped` [machine_stop_timeout].
  uint64_t machine_stop_timeout_ms = 120'000;
  // Until the runner no longer knows the machine [machine_delete_timeout].
  uint64_t machine_delete_timeout_ms = 120'000;
  // How long the agent may take to answer at all after its route is pushed
  // (gateway 404/502/503/504, or unreachable, are retried until then).
  uint64_t agent_reach_timeout_ms = 60'000;
  // How long a start waits for the control plane to take machine_assigned
  // and for its route table to carry the agent route.
  uint64_t control_plane_patience_ms = 30'000;
  // After SIGTERM, running tasks may finish for this long [shutdown_grace].
  uint64_t shutdown_grace_ms = 20'000;
  // Between two polls of a machine's or an agent's state.
  uint64_t poll_interval_ms = 500;
  // While a task runs, events are posted at least this often (a `progress`
  // heartbeat when nothing else happened): posting extends the lease (60 s).
  uint64_t event_heartbeat_ms = 15'000;
  // Events wait at most this long to be posted in one batch.
  uint64_t event_batch_delay_ms = 1'000;
  // Most events in one POST.
  size_t event_batch_size = 50;
  // Most setup log lines forwarded per poll of the agent's log, and the
  // longest line (longer ones are cut).
  size_t log_lines_per_poll = 200;
  size_t log_line_bytes = 2048;
  // Finished tasks are remembered this long, and at most this many.
  uint64_t finished_task_ttl_ms = 24ull * 3600 * 1000;
  size_t finished_task_limit = 10'000;
  // First and longest pause between retries of an idempotent call.
  uint64_t retry_initial_ms = 500;
  uint64_t retry_max_ms = 10'000;
  // Between registration attempts while the control plane does not answer.
  uint64_t register_retry_max_ms = 30'000;
};

// An HTTP API the delegate calls: a URL ("http://host:port") or a unix
// socket, with an optional bearer token.
struct ServiceEndpoint {
  std::string url;
  std::string socket;
  std::string token_file;
  std::string token;  // read from token_file
};

struct GatewayConfig {
  std::string name;
  ServiceEndpoint control;  // the control API (`control_socket`, or `control_url` + token)
  std::string data_url;     // the traffic port, for agent calls
};

struct DelegateConfig {
  std::string name;
  ServiceEndpoint control_plane;  // `control_url` + `token_file` (required)
  std::vector<std::string> selectors = {"default"};
  std::string state_file = "/var/lib/spacegate-delegate/state.json";
  ServiceEndpoint runner;
  std::vector<GatewayConfig> gateways;
  uint64_t route_sync_interval_ms = 60'000;
  uint64_t report_interval_ms = 10'000;
  DelegateLimits limits;
};

// Checks the document (no file is read). False with the field and reason.
bool parseDelegateConfig(const nlohmann::json& root, DelegateConfig& config,
                         ValidationError& error);
// Loads, validates and reads the token files. "file:line: field: reason".
bool loadDelegateConfigFile(const std::string& file, DelegateConfig& config, std::string& message);
bool loadDelegateConfigText(const std::string& text, DelegateConfig& config, std::string& message);

// "http://host:port" (an optional trailing "/"); false with a reason for
// anything else (https, a path, no host).
bool checkServiceUrl(const std::string& url, std::string& reason);

}  // namespace spacegate
