// Fuzz target: an HTTP/1 request stream from a client into the gateway's
// server side, driven in-process as ClientConnection drives it, without
// sockets. The stream arrives in reads cut at fuzzer-chosen places; each
// request's head goes through the prescan and llhttp (parseHead), then
// routing on a small fixed table (exact, wildcard and path-form routes, with
// strip_prefix), header rewriting into the upstream head, and its body
// through parseBody, re-framed as the gateway forwards it; then the next
// pipelined request. The credentials the access policy consumes (the
// Authorization header, the sg_token cookie, the sg_token query parameter)
// are removed as ClientConnection removes them, when the input says the
// policy consumed them (the token checks themselves are not driven here).
// Beyond the sanitizers it checks the smuggling invariants: the upstream
// head, read back by a fresh parser, is exactly one request with the same
// method, path, host and body framing, with no hop-by-hop field and no
// consumed credential left; the upstream sees each body end exactly where
// the gateway does; local error responses parse back as one response.
//
// Input: byte 0 seeds the read sizes (split_reader.h); byte 1 picks the
// limits (bit 0: 1 KiB header blocks, bit 1: 4 fields, bit 2: 16-byte bodies)
// and the consumed credentials (bit 3: Authorization, bit 4: the cookie,
// bit 5: the query parameter); the rest is the byte stream from the client.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "auth/access_policy.h"
#include "common/validation_error.h"
#include "forwarded_body_check.h"
#include "http/header_rewrite.h"
#include "http/message.h"
#include "http1/message_parser.h"
#include "net/write_queue.h"
#include "route/route_json.h"
#include "route/route_table.h"
#include "split_reader.h"

namespace spacegate::fuzz {
namespace {

constexpr int kMaxRequestsPerInput = 32;
constexpr std::string_view kTokenName = "sg_token";  // AuthConfig's default

// Which credentials the access policy consumed (AccessDecision).
struct ConsumedCredentials {
  bool authorization;
  bool cookie;
  bool query_parameter;
};

const RouteTable& fixedRoutes() {
  static const RouteTable* table = [] {
    auto json = nlohmann::json::parse(R"([
      {"id": "app", "host": "app.test", "upstream": "127.0.0.1:9001", "access": "public"},
      {"id": "app-api", "host": "app.test", "path_prefix": "/api/", "strip_prefix": true,
       "upstream": "127.0.0.1:9002", "access": "public"},
      {"id": "ide", "host": "*.gitspaces.test", "upstream": "10.0.0.5:8089", "access": "public"},
      {"id": "port", "host": "3000--gs-x.gitspaces.test", "upstream": "10.0.0.5:3000",
       "access": "public"},
      {"id": "path-x", "host": "gw.test", "path_prefix": "/gs/gs-x/", "strip_prefix": true,
       "upstream": "unix:/run/gs-x.sock", "access": "public"},
      {"id": "path-y", "host": "gw.test", "path_prefix": "/gs/gs-y", "strip_prefix": true,
       "upstream": "ide.internal:8080", "access": "public"},
      {"id": "owned", "host": "private.test", "upstream": "[::1]:9003", "gitspace": "gs-p",
       "owner": "user-1", "access": "owner"}
    ])");
    std::vector<Route> routes;
    ValidationError error;
    if (!parseRouteList(json, "routes", routes, error)) std::abort();
    return new RouteTable(std::move(routes), 1);
  }();
  return *table;
}

Limits limitsFor(uint8_t selector) {
  Limits limits;
  if (selector & 1) limits.header_block_size = 1024;
  if (selector & 2) limits.header_field_count = 4;
  if (selector & 4) limits.request_body_size = 16;
  return limits;
}

// Whitespace or a control byte: never part of a request target.
bool hasForbiddenByte(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

size_t countFields(const HeaderList& headers, std::string_view name) {
  size_t count = 0;
  for (const HeaderField& field : headers) count += equalsIgnoringCase(field.name, name);
  return count;
}

// What the parser hands on must be sane whatever the input was.
void checkParsedHead(const RequestHead& head, const std::vector<char>& buffer) {
  const char* begin = buffer.data();
  const char* end = begin + buffer.size();
  auto inside = [&](std::string_view view) {
    return view.empty() || (view.data() >= begin && view.data() + view.size() <= end);
  };
  FUZZ_CHECK(inside(head.raw_first_line) && head.raw_first_line.ends_with("\r\n"),
             "request line view");
  FUZZ_CHECK(!hasForbiddenByte(head.target) && !head.target.empty(), "request target bytes");
  // An absolute-form target without a path gets the literal "/".
  FUZZ_CHECK((inside(head.path) || head.path == "/") && inside(head.host), "path and host views");
  if (!head.is_connect) {
    FUZZ_CHECK(head.path.starts_with("/") || head.path == "*", "path form");
  }
  for (const HeaderField& field : head.headers) {
    FUZZ_CHECK(inside(field.raw_line) && field.raw_line.ends_with("\r\n"), "raw field line");
    FUZZ_CHECK(field.raw_line.starts_with(field.name) && !field.name.empty(), "field name");
    FUZZ_CHECK(field.name.find_first_of(": \t\r\n") == std::string_view::npos, "name bytes");
    FUZZ_CHECK(field.value.find_first_of("\r\n") == std::string_view::npos &&
                   field.value.find('\0') == std::string_view::npos,
               "value bytes");
    FUZZ_CHECK(inside(field.value), "value view");
  }
  if (head.framing == BodyFraming::kContentLength) FUZZ_CHECK(head.content_length > 0, "CL 0");
  FUZZ_CHECK(head.framing != BodyFraming::kUntilClose, "request read until close");
}

// A local answer (4xx/5xx) must read back as exactly one response.
void checkErrorResponse(int status, std::string_view detail, bool close,
                        std::string_view request_id) {
  OutboundWrite out;
  writeErrorResponse(status, detail, close, request_id, out);
  std::string bytes = out.flatten();
  static const Limits limits = roomyLimits();
  Http1MessageParser client(Http1MessageParser::Type::kResponse, limits);
  ResponseHead head;
  FUZZ_CHECK(client.parseHead(bytes.data(), bytes.size(), head) ==
                 Http1MessageParser::HeadStatus::kComplete,
             "error response head does not parse");
  FUZZ_CHECK(head.status == status, "error response status");
  FUZZ_CHECK(head.framing == BodyFraming::kContentLength &&
                 head.content_length == bytes.size() - client.headConsumed(),
             "error response length");
}

// The request as the upstream reads it: exactly one head, same meaning.
struct UpstreamView {
  std::string bytes;
  RequestHead head;
};

void checkUpstreamHead(const RequestHead& request, const UpstreamRequestContext& context,
                       const ConsumedCredentials& consumed, Http1MessageParser& upstream,
                       UpstreamView& view) {
  OutboundWrite out;
  writeUpstreamRequestHead(request, context, out);
  view.bytes = out.flatten();
  auto status = upstream.parseHead(view.bytes.data(), view.bytes.size(), view.head);
  if (status != Http1MessageParser::HeadStatus::kComplete) {
    std::fprintf(stderr, "upstream head:\n%s\nreason: %s\n", view.bytes.c_str(),
                 upstream.errorReason());
  }
  FUZZ_CHECK(status == Http1MessageParser::HeadStatus::kComplete,
             "the upstream head does not parse back");
  FUZZ_CHECK(upstream.headConsumed() == view.bytes.size(),
             "bytes after the upstream head (a second request hidden in it)");
  const RequestHead& again = view.head;
  FUZZ_CHECK(again.method == request.method, "method changed");
  std::string_view expected_path =
      context.rewritten_path.empty() ? request.path : context.rewritten_path;
  FUZZ_CHECK(again.path == expected_path, "path changed");
  FUZZ_CHECK(again.host == request.host, "host changed");
  FUZZ_CHECK(again.framing == request.framing, "body framing changed");
  FUZZ_CHECK(again.framing != BodyFraming::kContentLength ||
                 again.content_length == request.content_length,
             "Content-Length changed");
  FUZZ_CHECK(again.upgrade == request.upgrade, "upgrade changed");
  FUZZ_CHECK(again.expect_continue == request.expect_continue, "Expect changed");
  FUZZ_CHECK(again.version_major == 1 && again.version_minor == 1, "not HTTP/1.1 upstream");
  for (const HeaderField& field : again.headers) {
    FUZZ_CHECK(!equalsIgnoringCase(field.name, "keep-alive") &&
                   !equalsIgnoringCase(field.name, "proxy-connection") &&
                   !equalsIgnoringCase(field.name, "proxy-authorization"),
               "hop-by-hop field forwarded");
    if (equalsIgnoringCase(field.name, "connection")) {
      FUZZ_CHECK(request.upgrade && field.value == "upgrade", "client Connection forwarded");
    }
    if (equalsIgnoringCase(field.name, "transfer-encoding")) {
      FUZZ_CHECK(context.chunked_body && field.value == "chunked", "client TE forwarded");
    }
    if (equalsIgnoringCase(field.name, "te")) FUZZ_CHECK(field.value == "trailers", "TE value");
    if (equalsIgnoringCase(field.name, "upgrade")) FUZZ_CHECK(request.upgrade, "stray Upgrade");
    if (equalsIgnoringCase(field.name, "authorization")) {
      FUZZ_CHECK(!consumed.authorization, "the consumed Authorization header was forwarded");
    }
    if (equalsIgnoringCase(field.name, "cookie") && consumed.cookie) {
      FUZZ_CHECK(findCookieInValue(field.value, kTokenName).empty(),
                 "the gateway's cookie was forwarded");
    }
  }
  if (consumed.query_parameter) {
    std::string value, without;
    FUZZ_CHECK(!extractQueryParameter(again.path, kTokenName, value, without),
               "the token query parameter was forwarded");
  }
  FUZZ_CHECK(countFields(again.headers, "x-forwarded-for") == 1, "X-Forwarded-For count");
  FUZZ_CHECK(countFields(again.headers, "x-forwarded-proto") == 1, "X-Forwarded-Proto count");
  FUZZ_CHECK(countFields(again.headers, "x-request-id") == 1, "X-Request-Id count");
  FUZZ_CHECK(countFields(again.headers, "x-forwarded-host") == (request.host.empty() ? 0u : 1u),
             "X-Forwarded-Host count");
}

// Routing and the path rewrites as ClientConnection::beginExchange() does
// them (the token parameter dropped, then the prefix stripped), plus checks
// of what the table answers. Returns whether the request would be
// forwarded, with the path to send in `rewritten_path` ("" = unchanged).
bool routeRequest(const RequestHead& head, const ConsumedCredentials& consumed,
                  std::string& rewritten_path) {
  const RouteTable& table = fixedRoutes();
  const Route* route = table.match(head.host, head.path);
  rewritten_path.clear();
  if (head.is_connect) return false;  // 405: CONNECT is never forwarded here
  std::string token, without_token;
  bool token_dropped = consumed.query_parameter &&
                       extractQueryParameter(head.path, kTokenName, token, without_token);
  std::string_view path = token_dropped ? std::string_view(without_token) : head.path;
  if (token_dropped) {
    FUZZ_CHECK(without_token.starts_with("/") && without_token.size() < head.path.size(),
               "path without the token parameter");
    rewritten_path = without_token;
  }
  if (route) {
    FUZZ_CHECK(RouteTable::prefixMatches(route->path_prefix, head.path), "prefix mismatch");
    std::string host = RouteTable::normaliseHost(head.host);
    std::string_view route_host = route->host;
    if (route_host.starts_with("*.")) {
      route_host.remove_prefix(1);  // ".domain"
      FUZZ_CHECK(host.ends_with(route_host) && host.size() > route_host.size() &&
                     host.find('.') == host.size() - route_host.size(),
                 "wildcard matched another depth");
    } else {
      FUZZ_CHECK(host == route_host, "exact route for another host");
    }
    if (route->strip_prefix) {
      rewritten_path = RouteTable::stripPrefix(route->path_prefix, path);
      FUZZ_CHECK(rewritten_path.starts_with("/") && !hasForbiddenByte(rewritten_path) &&
                     rewritten_path.size() <= path.size() + 1,
                 "stripped path");
    }
    return true;
  }
  // No route: a 404 here. Any host a route could name gets rewritten as if
  // one did, so the rewriting is fuzzed for every routable request.
  std::string host = RouteTable::normaliseHost(head.host);
  if (host.starts_with("[")) return false;
  return isValidHostname(host);
}

void runConnection(const uint8_t* data, size_t size, uint8_t split_seed, const Limits& limits,
                   const ConsumedCredentials& consumed) {
  SplitReader reader(data, size, split_seed);
  InboundBytes inbound;
  Http1MessageParser parser(Http1MessageParser::Type::kRequest, limits);
  static const Limits upstream_limits = roomyLimits();
  // One upstream connection reused for every forwarded request (keep-alive).
  Http1MessageParser upstream(Http1MessageParser::Type::kRequest, upstream_limits);

  for (int requests = 0; requests < kMaxRequestsPerInput; ++requests) {
    // Head: read until the parser has a whole head or the client stops.
    InboundBytes::Window head_window;  // the head's views point into it
    RequestHead head;
    bool need_more = false;
    while (true) {
      if (inbound.empty() || need_more) {
        if (reader.done()) return;
        inbound.append(reader.next());
      }
      head_window = inbound.window();
      auto status = parser.parseHead(head_window->data(), head_window->size(), head);
      need_more = status == Http1MessageParser::HeadStatus::kIncomplete;
      if (status == Http1MessageParser::HeadStatus::kComplete) break;
      if (status == Http1MessageParser::HeadStatus::kError) {
        int error_status = parser.errorStatus();
        FUZZ_CHECK(error_status == 400 || error_status == 413 || error_status == 417 ||
                       error_status == 431 || error_status == 501,
                   "unexpected error status");
        checkErrorResponse(error_status, parser.errorReason(), true, "");
        return;  // the connection closes
      }
    }
    FUZZ_CHECK(parser.headConsumed() > 0 && parser.headConsumed() <= head_window->size(),
               "head size");
    checkParsedHead(head, *head_window);
    inbound.consume(parser.headConsumed());

    std::string rewritten_path;
    bool forwarded = routeRequest(head, consumed, rewritten_path);
    std::string_view client_id = acceptableRequestId(head);
    if (!forwarded) {
      checkErrorResponse(head.is_connect ? 405 : 404, "no route for this host and path", false,
                         client_id);
    }
    UpstreamRequestContext context;
    context.client_ip = "192.0.2.7";
    context.scheme = "https";
    context.request_id = client_id.empty() ? std::string_view("gw-1-42") : client_id;
    context.rewritten_path = rewritten_path;
    context.chunked_body = head.framing == BodyFraming::kChunked;
    context.drop_authorization = consumed.authorization;
    if (consumed.cookie) context.remove_cookie = kTokenName;
    UpstreamView upstream_view;
    if (forwarded) checkUpstreamHead(head, context, consumed, upstream, upstream_view);

    if (parser.expectsBody()) {
      FUZZ_CHECK(head.framing != BodyFraming::kNone, "a body expected on a request without one");
      // A local answer before the body was read closes the connection.
      if (!forwarded) return;
      ForwardedBodyCheck body(upstream, context.chunked_body, false);
      while (!body.complete()) {
        if (inbound.empty()) {
          if (reader.done()) return;  // client stopped mid-body
          inbound.append(reader.next());
        }
        auto window = inbound.window();
        auto result = parser.parseBody(window->data(), window->size(), body);
        if (result.error) return;  // 400 and close
        FUZZ_CHECK(result.consumed <= window->size(), "consumed more than given");
        FUZZ_CHECK(result.complete || result.consumed == window->size(),
                   "stopped inside the body without finishing");
        FUZZ_CHECK(result.complete == body.complete(), "completion reported two ways");
        inbound.consume(result.consumed);
      }
      if (head.framing == BodyFraming::kContentLength) {
        FUZZ_CHECK(body.body().size() == head.content_length, "body length");
      }
      body.verifyPeerAgrees();
    } else {
      // llhttp reads no body after CONNECT whatever the head says; the
      // gateway refuses CONNECT (405) and closes before any would follow.
      FUZZ_CHECK(head.framing == BodyFraming::kNone || head.is_connect,
                 "a body the parser will not read");
      if (forwarded) FUZZ_CHECK(!upstream.expectsBody(), "the upstream expects a body");
    }
    // After an upgrade or CONNECT the connection is a tunnel or closes; after
    // "Connection: close" (or HTTP/1.0) it closes.
    if (head.upgrade || head.is_connect || !head.keep_alive) return;
    parser.reset();
    upstream.reset();
  }
}

}  // namespace
}  // namespace spacegate::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  spacegate::Limits limits = spacegate::fuzz::limitsFor(data[1]);
  spacegate::fuzz::ConsumedCredentials consumed{(data[1] & 8) != 0, (data[1] & 16) != 0,
                                                (data[1] & 32) != 0};
  spacegate::fuzz::runConnection(data + 2, size - 2, data[0], limits, consumed);
  return 0;
}
