// One JSON call to one of the APIs the delegate drives (the control plane,
// the runner, a gateway's control API, an agent through the gateway), over
// the shared ServiceClient, and the reply in the form every caller needs:
// the status (0 when the server was not reached), the parsed body, and a
// reason a person can read ("HTTP 429: pool default is at its maximum of 10
// machines", "http://127.0.0.1:7700: Connection refused").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "delegate/delegate_config.h"
#include "service/service_client.h"

namespace spacegate {

struct ApiReply {
  int status = 0;       // 0: not reached (or the reply was unreadable)
  nlohmann::json body;  // the parsed JSON body; null when empty or not JSON
  std::string text;     // the raw body
  std::string error;    // why the call failed when status is 0

  bool reached() const { return status != 0; }
  bool ok() const { return status >= 200 && status < 300; }
  // Worth another try: not reached, or the server (or the gateway in front
  // of it) said it cannot answer now.
  bool transient() const { return status == 0 || status == 502 || status == 503 || status == 504; }
  // "HTTP 409: <the body's error, or its first 300 bytes>", or the
  // transport error.
  std::string reason() const;
};

// A client for `endpoint` (its URL or socket, and its token) with the given
// timeout.
ServiceClient makeServiceClient(const ServiceEndpoint& endpoint, uint64_t timeout_ms);

// `body` is sent as JSON unless it is null.
ApiReply callApi(const ServiceClient& client, const std::string& method, const std::string& target,
                 const nlohmann::json& body = nullptr);

// Compact JSON text (invalid UTF-8 replaced, never thrown on).
std::string dumpJson(const nlohmann::json& value);

// `text` as the control plane takes it in messages: terminal escape
// sequences (colours, cursor moves) removed, other control characters but
// tab turned into spaces, cut to `max_bytes` on a UTF-8 boundary.
std::string plainText(std::string_view text, size_t max_bytes);

// The user agent of every call: "spacegate-delegate/<version>".
extern const char* const kDelegateVersion;
std::string delegateUserAgent();

}  // namespace spacegate
