// ControlPlaneConfig: the control plane's YAML file (JSON works too), or the same
// settings from flags (`--listen`, `--state-dir`). Every key has a default;
// a bad value is refused at start with "file:line: field: reason".
//
//   listen: 127.0.0.1:7600
//   state_dir: /var/lib/spacegate-control
//   public_url: http://127.0.0.1:7600
//   token_ttl: 8h
//   agent_token_ttl: 15m
//   task_lease: 60s
//   deadlines: {starting: 10m, stopping: 5m, cleaning: 5m}
//   default_idle_timeout: 30m
//   log_level: info
//   limits: {max_gitspaces_per_user: 100, max_event_streams: 1024, ...}
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "common/validation_error.h"

namespace spacegate {

// Bounds on what clients (users and delegates) control. One struct, so the
// abuse limits can be read in one place (docs/control-plane.md lists them).
struct ControlPlaneLimits {
  // Request bodies above this are refused with 413 before they reach a handler.
  uint64_t max_body_size = 1u << 20;
  // Gitspaces a user may have that are not deleted (409 above).
  uint64_t max_gitspaces_per_user = 100;
  // Server-Sent Event streams open at once, all users together (503 above),
  // and per user (429 above).
  uint64_t max_event_streams = 1024;
  uint64_t max_event_streams_per_user = 32;
  // Stored events sent when a stream opens, at most this many bytes: a
  // resume from further back starts later, as if those had been dropped.
  uint64_t max_stream_backlog = 4u << 20;
  // Events kept per Gitspace; older ones are dropped (a resume from before
  // them starts at the oldest kept).
  uint64_t events_per_gitspace = 10'000;
  // Leases of one task that may run out before its Gitspace goes to error.
  uint64_t max_task_attempts = 5;
  // Start tasks go only to a delegate that reported a healthy gateway this
  // recently ("no Gitspace is started behind a gateway that has not
  // reported for five minutes").
  uint64_t gateway_report_max_age_ms = 5 * 60'000;
  // A comment line on every open event stream this often, so proxies and
  // clients see the stream is alive.
  uint64_t stream_keepalive_ms = 15'000;
  // Long polls one delegate may have parked at once (429 above).
  uint64_t max_polls_per_delegate = 64;
};

struct ControlPlaneConfig {
  std::string listen = "127.0.0.1:7600";                 // TCP address of the API
  std::string state_dir = "/var/lib/spacegate-control";  // control.db, keys, tokens
  std::string public_url;                     // how users reach the API; default "http://" + listen
  uint64_t token_ttl_ms = 8 * 3'600'000;      // IDE tokens from POST .../token
  uint64_t agent_token_ttl_ms = 15 * 60'000;  // agent tokens carried by tasks
  uint64_t task_lease_ms = 60'000;            // a leased task not finished by then goes back
  uint64_t starting_deadline_ms = 10 * 60'000;  // starting longer than this: error
  uint64_t stopping_deadline_ms = 5 * 60'000;
  uint64_t cleaning_deadline_ms = 5 * 60'000;
  uint64_t default_idle_timeout_ms = 30 * 60'000;  // infra without idle_timeout
  std::string log_level = "info";
  ControlPlaneLimits limits;
};

bool parseControlConfig(const nlohmann::json& root, ControlPlaneConfig& config,
                        ValidationError& error);
// Loads and validates a file: "file:line: field: reason" on failure.
bool loadControlConfigFile(const std::string& file, ControlPlaneConfig& config,
                           std::string& message);
bool loadControlConfigText(const std::string& text, ControlPlaneConfig& config,
                           std::string& message);
// The checks that apply after flags override the file (listen parses,
// state_dir absolute). False with "field: reason".
bool checkControlConfig(ControlPlaneConfig& config, std::string& message);

}  // namespace spacegate
