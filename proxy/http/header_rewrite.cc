#include "http/header_rewrite.h"

#include <charconv>

#include "auth/access_policy.h"

namespace spacegate {

namespace {

// Fields that apply to one hop only and never cross the gateway, or that the
// gateway regenerates itself.
enum class FieldRole {
  kForward,            // sent on unchanged
  kHopByHop,           // removed
  kForwardedFor,       // merged into the gateway's X-Forwarded-For
  kReplacedByGateway,  // X-Forwarded-Proto/Host, X-Request-Id: set by the gateway
  kUpgrade,            // forwarded only when the connection is upgraded
  kTe,                 // only "trailers" survives
  kFraming,            // Content-Length: forwarded; may not be dropped via Connection
};

FieldRole classifyRequestField(std::string_view name) {
  switch (name.size()) {
    case 2:
      if (equalsIgnoringCase(name, "te")) return FieldRole::kTe;
      break;
    case 7:
      if (equalsIgnoringCase(name, "upgrade")) return FieldRole::kUpgrade;
      break;
    case 10:
      if (equalsIgnoringCase(name, "connection") || equalsIgnoringCase(name, "keep-alive"))
        return FieldRole::kHopByHop;
      break;
    case 12:
      if (equalsIgnoringCase(name, "x-request-id")) return FieldRole::kReplacedByGateway;
      break;
    case 14:
      if (equalsIgnoringCase(name, "content-length")) return FieldRole::kFraming;
      break;
    case 15:
      if (equalsIgnoringCase(name, "x-forwarded-for")) return FieldRole::kForwardedFor;
      break;
    case 16:
      if (equalsIgnoringCase(name, "proxy-connection")) return FieldRole::kHopByHop;
      if (equalsIgnoringCase(name, "x-forwarded-host")) return FieldRole::kReplacedByGateway;
      break;
    case 17:
      if (equalsIgnoringCase(name, "transfer-encoding")) return FieldRole::kHopByHop;
      if (equalsIgnoringCase(name, "x-forwarded-proto")) return FieldRole::kReplacedByGateway;
      break;
    case 19:
      // Credentials meant for the gateway itself never reach a Gitspace.
      if (equalsIgnoringCase(name, "proxy-authorization")) return FieldRole::kHopByHop;
      break;
  }
  return FieldRole::kForward;
}

FieldRole classifyResponseField(std::string_view name) {
  switch (name.size()) {
    case 2:
      if (equalsIgnoringCase(name, "te")) return FieldRole::kHopByHop;
      break;
    case 7:
      if (equalsIgnoringCase(name, "upgrade")) return FieldRole::kUpgrade;
      break;
    case 10:
      if (equalsIgnoringCase(name, "connection") || equalsIgnoringCase(name, "keep-alive"))
        return FieldRole::kHopByHop;
      break;
    case 14:
      if (equalsIgnoringCase(name, "content-length")) return FieldRole::kFraming;
      break;
    case 16:
      if (equalsIgnoringCase(name, "proxy-connection")) return FieldRole::kHopByHop;
      break;
    case 17:
      if (equalsIgnoringCase(name, "transfer-encoding")) return FieldRole::kHopByHop;
      break;
  }
  return FieldRole::kForward;
}

// The field names listed in Connection fields (hop-by-hop too, RFC 9110
// section 7.6.1), gathered once per head.
class ConnectionListedNames {
 public:
  explicit ConnectionListedNames(const HeaderList& headers) {
    for (const HeaderField& field : headers) {
      if (!equalsIgnoringCase(field.name, "connection")) continue;
      forEachListToken(field.value, [&](std::string_view token) {
        if (count_ < kMax) names_[count_++] = token;
      });
    }
  }
  bool contains(std::string_view name) const {
    for (size_t i = 0; i < count_; ++i) {
      if (equalsIgnoringCase(names_[i], name)) return true;
    }
    return false;
  }
  bool empty() const { return count_ == 0; }

 private:
  static constexpr size_t kMax = 16;  // more listed: only the first 16 are honoured
  std::string_view names_[kMax];
  size_t count_ = 0;
};

bool isRequestIdByte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '+' || c == '/' || c == '=' || c == '-';
}

}  // namespace

std::vector<const HeaderField*> endToEndResponseFields(const ResponseHead& response) {
  std::vector<const HeaderField*> fields;
  fields.reserve(response.headers.size());
  ConnectionListedNames listed(response.headers);
  for (const HeaderField& field : response.headers) {
    FieldRole role = classifyResponseField(field.name);
    if (role == FieldRole::kHopByHop || role == FieldRole::kUpgrade) continue;
    if (role == FieldRole::kForward && !listed.empty() && listed.contains(field.name)) continue;
    fields.push_back(&field);
  }
  return fields;
}

std::string_view acceptableRequestId(const RequestHead& request) {
  const HeaderField* field = findHeader(request.headers, "x-request-id");
  if (!field || field->value.empty() || field->value.size() > 128) return {};
  for (char c : field->value) {
    if (!isRequestIdByte(c)) return {};
  }
  return field->value;
}

void forEachUpstreamRequestField(const RequestHead& request, const UpstreamRequestContext& context,
                                 UpstreamFieldSink& sink) {
  bool origin_form = !request.target.empty() && request.target.front() == '/';
  ConnectionListedNames listed(request.headers);
  bool absolute_form = !origin_form && !request.is_connect && request.path != "*";
  std::string forwarded_for;
  bool keep_te_trailers = false;
  for (const HeaderField& field : request.headers) {
    FieldRole role = classifyRequestField(field.name);
    if (role == FieldRole::kForward && !listed.empty() && !equalsIgnoringCase(field.name, "host") &&
        listed.contains(field.name)) {
      role = FieldRole::kHopByHop;
    }
    switch (role) {
      case FieldRole::kForward:
        // With an absolute-form target the authority in it wins; Host is rewritten.
        if (absolute_form && equalsIgnoringCase(field.name, "host")) break;
        if (context.drop_authorization && equalsIgnoringCase(field.name, "authorization")) break;
        if (!context.remove_cookie.empty() && equalsIgnoringCase(field.name, "cookie") &&
            !findCookieInValue(field.value, context.remove_cookie).empty()) {
          // The gateway's cookie never reaches the Gitspace; the others do.
          std::string rest = removeCookie(field.value, context.remove_cookie);
          if (!rest.empty()) sink.generated("Cookie", rest);
          break;
        }
        sink.field(field);
        break;
      case FieldRole::kFraming: sink.field(field); break;
      case FieldRole::kUpgrade:
        if (request.upgrade) sink.field(field);
        break;
      case FieldRole::kTe:
        forEachListToken(field.value, [&](std::string_view token) {
          if (equalsIgnoringCase(token, "trailers")) keep_te_trailers = true;
        });
        break;
      case FieldRole::kForwardedFor:
        if (!forwarded_for.empty()) forwarded_for.append(", ");
        forwarded_for.append(field.value);
        break;
      case FieldRole::kHopByHop:
      case FieldRole::kReplacedByGateway: break;
    }
  }
  if (absolute_form) sink.generated("Host", request.host);
  if (context.chunked_body) sink.generated("Transfer-Encoding", "chunked");
  if (keep_te_trailers) sink.generated("TE", "trailers");
  if (request.upgrade) sink.generated("Connection", "upgrade");
  if (!forwarded_for.empty()) forwarded_for.append(", ");
  forwarded_for.append(context.client_ip);
  sink.generated("X-Forwarded-For", forwarded_for);
  sink.generated("X-Forwarded-Proto", context.scheme);
  if (!request.host.empty()) sink.generated("X-Forwarded-Host", request.host);
  sink.generated("X-Request-Id", context.request_id);
}

namespace {

// HTTP/1.1 field lines: unchanged ones as views into the received head.
class Http1FieldWriter : public UpstreamFieldSink {
 public:
  explicit Http1FieldWriter(OutboundWrite& out) : out_(out) {}
  void field(const HeaderField& field) override { out_.appendView(field.raw_line); }
  void generated(std::string_view name, std::string_view value) override {
    out_.appendGenerated(name);
    out_.appendGenerated(": ");
    out_.appendGenerated(value);
    out_.appendGenerated("\r\n");
  }

 private:
  OutboundWrite& out_;
};

}  // namespace

void writeUpstreamRequestHead(const RequestHead& request, const UpstreamRequestContext& context,
                              OutboundWrite& out) {
  out.hold(request.storage);
  bool origin_form = !request.target.empty() && request.target.front() == '/';
  bool path_unchanged = context.rewritten_path.empty();
  if (origin_form && path_unchanged && request.version_major == 1 && request.version_minor == 1) {
    out.appendView(request.raw_first_line);
  } else {
    out.appendGenerated(request.method_name);
    out.appendGenerated(" ");
    out.appendGenerated(path_unchanged ? request.path : context.rewritten_path);
    out.appendGenerated(" HTTP/1.1\r\n");
  }
  Http1FieldWriter writer(out);
  forEachUpstreamRequestField(request, context, writer);
  out.appendGenerated("\r\n");
}

void writeClientResponseHead(const ResponseHead& response, const ClientResponseContext& context,
                             OutboundWrite& out) {
  out.hold(response.storage);
  if (response.version_major == 1 && response.version_minor == 1) {
    out.appendView(response.raw_first_line);
  } else {
    // An HTTP/1.0 upstream's status line would forbid the chunked framing
    // the gateway may use: speak HTTP/1.1 to the client.
    char status[4];
    std::to_chars(status, status + 3, response.status);
    out.appendGenerated("HTTP/1.1 ");
    out.appendGenerated(std::string_view(status, 3));
    out.appendGenerated(" ");
    out.appendGenerated(response.reason);
    out.appendGenerated("\r\n");
  }
  ConnectionListedNames listed(response.headers);
  for (const HeaderField& field : response.headers) {
    FieldRole role = classifyResponseField(field.name);
    if (role == FieldRole::kForward && !listed.empty() && listed.contains(field.name)) {
      role = FieldRole::kHopByHop;
    }
    switch (role) {
      case FieldRole::kForward: out.appendView(field.raw_line); break;
      case FieldRole::kFraming:
        // Content-Length stays unless the gateway re-frames the body.
        if (!context.chunked_body) out.appendView(field.raw_line);
        break;
      case FieldRole::kUpgrade:
        if (response.upgrade) out.appendView(field.raw_line);
        break;
      default: break;
    }
  }
  if (context.chunked_body) out.appendGenerated("Transfer-Encoding: chunked\r\n");
  if (response.upgrade) {
    out.appendGenerated("Connection: upgrade\r\n");
  } else if (context.close_connection) {
    out.appendGenerated("Connection: close\r\n");
  } else if (context.http10_keep_alive) {
    out.appendGenerated("Connection: keep-alive\r\n");
  }
  out.appendGenerated("\r\n");
}

std::string_view statusReason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 401: return "Unauthorized";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
  }
  return "";
}

void writeErrorResponse(int status, std::string_view detail, bool close_connection,
                        std::string_view request_id, OutboundWrite& out,
                        std::string_view extra_headers, bool head_request) {
  char number[4];
  std::to_chars(number, number + 3, status);
  std::string_view code(number, 3);
  std::string_view reason = statusReason(status);
  // Body: "404 Not Found: no route for this host\n". Details beyond the one
  // line go to the log only.
  size_t body_length = 3 + 1 + reason.size() + (detail.empty() ? 0 : 2 + detail.size()) + 1;
  char length_text[24];
  auto length_end = std::to_chars(length_text, length_text + sizeof length_text, body_length).ptr;
  out.appendGenerated("HTTP/1.1 ");
  out.appendGenerated(code);
  out.appendGenerated(" ");
  out.appendGenerated(reason);
  out.appendGenerated("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  out.appendGenerated(std::string_view(length_text, length_end - length_text));
  if (!request_id.empty()) {
    out.appendGenerated("\r\nX-Request-Id: ");
    out.appendGenerated(request_id);
  }
  out.appendGenerated("\r\n");
  out.appendGenerated(extra_headers);
  out.appendGenerated(close_connection ? "Connection: close\r\n\r\n" : "\r\n");
  if (head_request) return;
  out.appendGenerated(code);
  out.appendGenerated(" ");
  out.appendGenerated(reason);
  if (!detail.empty()) {
    out.appendGenerated(": ");
    out.appendGenerated(detail);
  }
  out.appendGenerated("\n");
}

void appendTrailerFields(OutboundWrite& out,
                         const std::vector<std::pair<std::string, std::string>>& trailers) {
  for (const auto& [name, value] : trailers) {
    out.appendGenerated(name);
    out.appendGenerated(": ");
    out.appendGenerated(value);
    out.appendGenerated("\r\n");
  }
}

void appendChunkSizeLine(OutboundWrite& out, size_t size) {
  char text[20];
  auto end = std::to_chars(text, text + 16, size, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  out.appendGenerated(std::string_view(text, end - text));
}

}  // namespace spacegate
