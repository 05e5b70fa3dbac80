// What the gateway does with a request head, whichever codec it came in:
// match the route, apply the access policy (token, cookie, login redirect),
// and work out the path to send upstream. One path for HTTP/1.1 and
// HTTP/2 streams, so routing, auth and rewriting cannot drift apart.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "http/message.h"
#include "log/access_log.h"
#include "route/route_table.h"

namespace spacegate {

class Worker;

struct ExchangeDecision {
  enum class Kind : uint8_t {
    kForward,        // send it to `route`'s upstream
    kLocalResponse,  // the gateway answers itself
  };
  Kind kind = Kind::kLocalResponse;
  const Route* route = nullptr;  // null: no route matched
  // kLocalResponse.
  int status = 0;
  std::string detail;                                       // the short reason in the body
  std::vector<std::pair<std::string, std::string>> fields;  // Location, Set-Cookie, ...
  const char* error = "";                                   // for the access log
  // kForward.
  std::string rewritten_path;  // empty: the request's path unchanged
  bool drop_authorization = false;
  bool strip_cookie = false;
};

ExchangeDecision decideExchange(Worker& worker, const RouteTable& routes,
                                const RequestHead& request, bool tls);

// Counts a finished exchange (the worker's status classes, the route's
// statuses) and writes its access-log line, with a token in the URL's
// query redacted. Both codecs end every exchange here.
void recordExchange(Worker& worker, const Route* route, AccessLogEntry& entry);

// The decision's fields as HTTP/1.1 field lines ("Location: /x\r\n").
std::string fieldLines(const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace spacegate
