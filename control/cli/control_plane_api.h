// ControlPlaneApi: spacegatectl's side of the control plane's user API
// (docs/control-plane.md): JSON calls carrying the bearer token, refusals
// printed with the server's error and field, and a Gitspace's event stream
// (Server-Sent Events) followed across dropped connections by resuming after
// the last event id. Every method that fails says why on stderr and gives
// the exit code to end with.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "service/service_client.h"

namespace spacegate {

// spacegatectl's exit codes (the gateway commands use the same ones).
constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;      // the server said no (its error and field are printed)
constexpr int kExitUsage = 2;        // usage, a bad file or bad input
constexpr int kExitUnreachable = 3;  // the server could not be reached

struct ControlPlaneOptions {
  std::string url = "http://127.0.0.1:7600";  // --control-url, SPACEGATE_CONTROL_URL
  std::string token_file;                     // --control-token-file, SPACEGATE_CONTROL_TOKEN_FILE
};

// One event of a Gitspace, from its stream.
struct GitspaceStreamEvent {
  int64_t id = 0;
  std::string type;     // gitspace_created, state_changed, agent_setup_log, ...
  std::string message;  // a log line for agent_setup_log
  nlohmann::json data;  // the event's `data` object (may be empty)
  std::string at;       // RFC 3339, as the control plane wrote it
};

// How following a stream ended.
enum class FollowEnd {
  kStopped,      // on_event returned false
  kEnded,        // the server ended the stream (the Gitspace was deleted)
  kQuiet,        // nothing arrived for `quiet_ms` (only when quiet_ms is set)
  kDeadline,     // the deadline passed
  kRefused,      // the server refused the stream (printed)
  kUnreachable,  // the server could not be reached (printed)
};

class ControlPlaneApi {
 public:
  // Checks the URL and reads the token. False with a message for the user
  // (exit kExitUsage).
  bool open(const ControlPlaneOptions& options, std::string& error);

  // Sends `body` (when not null) as JSON. kExitOk with the parsed reply;
  // otherwise the reason is printed (a refusal only when not `quiet`) and
  // the exit code returned.
  int call(const std::string& method, const std::string& target, const nlohmann::json& body,
           nlohmann::json& reply, bool quiet = false);
  // The status of the last reply (404 tells a missing Gitspace apart).
  int lastStatus() const { return last_status_; }

  // Follows GET /api/v1/gitspaces/{id}/events from after `after`, handing
  // each event to `on_event` (false stops). A dropped stream is resumed from
  // the last event id until the deadline; `quiet_ms` > 0 ends the follow
  // when the stream is silent that long (to read only what is stored).
  FollowEnd follow(const std::string& gitspace_id, int64_t after,
                   std::chrono::steady_clock::time_point deadline, int64_t quiet_ms,
                   const std::function<bool(const GitspaceStreamEvent&)>& on_event);

  const std::string& url() const { return url_; }

 private:
  std::unique_ptr<ServiceClient> client(int timeout_ms) const;

  std::string url_;
  std::string token_;
  int last_status_ = 0;
};

// Prints "spacegatectl: refused by the control plane (STATUS): FIELD: ERROR".
void printControlPlaneRefusal(int status, const nlohmann::json& reply);

// JSON value as text: strings as they are, null as "-", others dumped.
std::string jsonText(const nlohmann::json& value);

}  // namespace spacegate
