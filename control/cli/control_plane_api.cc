#include "control_plane_api.h"

#include <cstdio>
#include <fstream>
#include <thread>

#include "service/sse_reader.h"

namespace spacegate {

namespace {

using Clock = std::chrono::steady_clock;

// A plain call: connect, send, and each wait for reply bytes.
constexpr int kCallTimeoutMs = 30'000;
// An event stream sends a keep-alive comment every 15 s: three missed ones
// mean the connection is dead even if the socket does not say so.
constexpr int64_t kStreamSilenceMs = 45'000;
// A stream that dropped is resumed for this long before the control plane
// counts as unreachable.
constexpr int64_t kReconnectForMs = 30'000;

int64_t millisecondsUntil(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
}

// The event from an SSE event whose data is the control plane's event JSON
// ({"id","gitspace","type","message","data","at"}). False when the data is
// not that.
bool parseStreamEvent(const SseEvent& sse, GitspaceStreamEvent& event) {
  nlohmann::json json = nlohmann::json::parse(sse.data, nullptr, false);
  if (!json.is_object()) return false;
  event = GitspaceStreamEvent{};
  event.type = sse.type;
  if (json.contains("type") && json["type"].is_string()) event.type = json["type"];
  if (json.contains("id") && json["id"].is_number_integer()) {
    event.id = json["id"].get<int64_t>();
  } else {
    event.id = std::strtoll(sse.id.c_str(), nullptr, 10);
  }
  if (json.contains("message") && json["message"].is_string()) event.message = json["message"];
  if (json.contains("data") && json["data"].is_object()) event.data = json["data"];
  if (json.contains("at") && json["at"].is_string()) event.at = json["at"];
  return true;
}

}  // namespace

std::string jsonText(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "-";
  return value.dump();
}

void printControlPlaneRefusal(int status, const nlohmann::json& reply) {
  std::string message =
      reply.is_object() && reply.contains("error") ? jsonText(reply["error"]) : jsonText(reply);
  std::string field = reply.is_object() && reply.contains("field") ? jsonText(reply["field"]) : "";
  if (field.empty()) {
    std::fprintf(stderr, "spacegatectl: refused by the control plane (%d): %s\n", status,
                 message.c_str());
  } else {
    std::fprintf(stderr, "spacegatectl: refused by the control plane (%d): %s: %s\n", status,
                 field.c_str(), message.c_str());
  }
  if (status == 401) {
    std::fprintf(stderr,
                 "spacegatectl: check the token in --control-token-file "
                 "(SPACEGATE_CONTROL_TOKEN_FILE)\n");
  }
}

bool ControlPlaneApi::open(const ControlPlaneOptions& options, std::string& error) {
  if (options.url.starts_with("https://")) {
    error =
        "--control-url: https is not supported yet; use http:// on loopback or a private "
        "network";
    return false;
  }
  if (!options.url.starts_with("http://") || options.url.size() <= 7) {
    error = "--control-url: expected http://host:port, got \"" + options.url + "\"";
    return false;
  }
  url_ = options.url;
  while (url_.ends_with('/')) url_.pop_back();
  if (options.token_file.empty()) {
    error =
        "no API token: pass --control-token-file FILE (or set SPACEGATE_CONTROL_TOKEN_FILE); "
        "the control plane writes the admin's token to <state_dir>/admin.token, and "
        "POST /api/v1/users gives other users theirs";
    return false;
  }
  std::ifstream stream(options.token_file);
  if (!stream) {
    error = options.token_file + ": cannot read the token file";
    return false;
  }
  std::getline(stream, token_);
  while (!token_.empty() && (token_.back() == '\r' || token_.back() == ' ')) token_.pop_back();
  if (token_.empty()) {
    error = options.token_file + ": the token file is empty";
    return false;
  }
  return true;
}

std::unique_ptr<ServiceClient> ControlPlaneApi::client(int timeout_ms) const {
  auto service = std::make_unique<ServiceClient>("", url_, token_);
  service->setUserAgent("spacegatectl");
  service->setTimeoutMs(timeout_ms);
  return service;
}

int ControlPlaneApi::call(const std::string& method, const std::string& target,
                          const nlohmann::json& body, nlohmann::json& reply, bool quiet) {
  ServiceReply raw;
  std::string error;
  if (!client(kCallTimeoutMs)
           ->call(method, target, body.is_null() ? "" : body.dump(), raw, error)) {
    std::fprintf(stderr, "spacegatectl: cannot reach the control plane at %s: %s\n", url_.c_str(),
                 error.c_str());
    last_status_ = 0;
    return kExitUnreachable;
  }
  last_status_ = raw.status;
  reply =
      raw.body.empty() ? nlohmann::json::object() : nlohmann::json::parse(raw.body, nullptr, false);
  if (reply.is_discarded()) reply = raw.body;
  if (raw.status >= 400) {
    if (!quiet) printControlPlaneRefusal(raw.status, reply);
    return kExitRefused;
  }
  return kExitOk;
}

FollowEnd ControlPlaneApi::follow(const std::string& gitspace_id, int64_t after,
                                  Clock::time_point deadline, int64_t quiet_ms,
                                  const std::function<bool(const GitspaceStreamEvent&)>& on_event) {
  int64_t last_id = after;
  bool ever_connected = false;
  Clock::time_point failing_since{};
  int64_t backoff_ms = 250;
  while (true) {
    int64_t left_ms = millisecondsUntil(deadline);
    if (left_ms <= 0) return FollowEnd::kDeadline;
    int64_t timeout_ms = quiet_ms > 0 ? quiet_ms : std::min(kStreamSilenceMs, left_ms);
    auto service = client(static_cast<int>(std::max<int64_t>(timeout_ms, 100)));
    SseReader reader;
    bool stopped = false;
    bool past_deadline = false;
    bool not_sse = false;
    ServiceReply reply;
    std::string error;
    std::string target =
        "/api/v1/gitspaces/" + gitspace_id + "/events?after=" + std::to_string(last_id);
    auto on_sse = [&](const SseEvent& sse) {
      GitspaceStreamEvent event;
      if (!parseStreamEvent(sse, event)) return true;  // not an event of ours: skipped
      if (event.id > last_id) last_id = event.id;
      if (!on_event(event)) {
        stopped = true;
        return false;
      }
      if (Clock::now() >= deadline) {
        past_deadline = true;
        return false;
      }
      return true;
    };
    bool ok = service->stream(
        "GET", target, "",
        [&](std::string_view chunk) {
          // Keep-alive comments come in too: the deadline is checked at
          // least that often (15 s) even when no event arrives.
          if (Clock::now() >= deadline) {
            past_deadline = true;
            return false;
          }
          SseReader::Status status = reader.feed(chunk, on_sse);
          if (status == SseReader::Status::kTooLong) not_sse = true;
          return status == SseReader::Status::kMore;
        },
        reply, error);
    if (stopped) return FollowEnd::kStopped;
    if (past_deadline) return FollowEnd::kDeadline;
    if (not_sse) {
      std::fprintf(stderr, "spacegatectl: %s%s is not an event stream (a line over 1 MiB)\n",
                   url_.c_str(), target.c_str());
      return FollowEnd::kRefused;
    }
    if (ok && reply.status >= 300) {
      nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
      printControlPlaneRefusal(reply.status,
                               body.is_discarded() ? nlohmann::json(reply.body) : body);
      last_status_ = reply.status;
      return FollowEnd::kRefused;
    }
    if (ok) return FollowEnd::kEnded;
    if (reply.status != 0) {
      // The stream was open and then dropped (or went silent).
      ever_connected = true;
      failing_since = Clock::time_point{};
      backoff_ms = 250;
      if (quiet_ms > 0 && error.find("timed out") != std::string::npos) return FollowEnd::kQuiet;
    } else {
      if (!ever_connected) {
        std::fprintf(stderr, "spacegatectl: cannot reach the control plane at %s: %s\n",
                     url_.c_str(), error.c_str());
        return FollowEnd::kUnreachable;
      }
      if (failing_since == Clock::time_point{}) failing_since = Clock::now();
      if (Clock::now() - failing_since > std::chrono::milliseconds(kReconnectForMs)) {
        std::fprintf(stderr, "spacegatectl: lost the control plane at %s: %s\n", url_.c_str(),
                     error.c_str());
        return FollowEnd::kUnreachable;
      }
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(backoff_ms, std::max<int64_t>(left_ms, 0))));
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 5'000);
  }
}

}  // namespace spacegate
