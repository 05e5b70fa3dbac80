// Header rewriting between the client and the upstream, written once for
// every codec: hop-by-hop fields removed (RFC 9110 section 7.6.1), the
// X-Forwarded-* fields and X-Request-Id set, the framing fields regenerated
// by the gateway itself. Unchanged field lines are written as views into the
// buffer they arrived in; only what changes is generated.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/message.h"
#include "net/write_queue.h"

namespace spacegate {

struct UpstreamRequestContext {
  std::string_view client_ip;
  std::string_view scheme = "http";  // what X-Forwarded-Proto says
  std::string_view request_id;       // from requestIdToForward()
  // The path to send upstream; empty means the request's own path unchanged.
  std::string_view rewritten_path;
  // The body is sent chunked (the request arrived chunked).
  bool chunked_body = false;
  // The gateway consumed the Authorization header (its own bearer token).
  bool drop_authorization = false;
  // A cookie of the gateway's to remove from Cookie fields (others stay
  // byte for byte); empty: Cookie fields go on unchanged.
  std::string_view remove_cookie;
};

// Receives the fields to send upstream, in order: those forwarded as they
// arrived (the HTTP/1.1 writer sends their raw lines), and those the
// gateway makes (X-Forwarded-*, X-Request-Id, a rewritten Cookie, framing).
class UpstreamFieldSink {
 public:
  virtual ~UpstreamFieldSink() = default;
  virtual void field(const HeaderField& field) = 0;
  virtual void generated(std::string_view name, std::string_view value) = 0;
};

// The upstream request's fields, for any upstream codec: hop-by-hop fields
// removed, the gateway's credentials and cookie taken out, X-Forwarded-*
// and X-Request-Id added.
void forEachUpstreamRequestField(const RequestHead& request, const UpstreamRequestContext& context,
                                 UpstreamFieldSink& sink);

// Writes the request line and header block to send upstream (HTTP/1.1).
void writeUpstreamRequestHead(const RequestHead& request, const UpstreamRequestContext& context,
                              OutboundWrite& out);

struct ClientResponseContext {
  // The gateway re-frames the body with chunked coding (upstream chunked or
  // read-until-close, client speaks HTTP/1.1).
  bool chunked_body = false;
  // The gateway closes the client connection after this response.
  bool close_connection = false;
  // The client spoke HTTP/1.0 and asked for keep-alive, which is granted.
  bool http10_keep_alive = false;
};

// Writes the status line and header block to send to the client.
void writeClientResponseHead(const ResponseHead& response, const ClientResponseContext& context,
                             OutboundWrite& out);

// The response's end-to-end fields, for a codec that frames messages itself
// (HTTP/2): hop-by-hop fields (RFC 9110 7.6.1: Connection, Keep-Alive,
// Transfer-Encoding, Upgrade, TE, and the names a Connection field lists)
// are left out; Content-Length stays.
std::vector<const HeaderField*> endToEndResponseFields(const ResponseHead& response);

// The X-Request-Id to forward: the client's, when it is a sane token (1..128
// bytes of [A-Za-z0-9._:+/=-]); otherwise empty (the caller makes one).
std::string_view acceptableRequestId(const RequestHead& request);

// Appends a short plain-text error response ("404 Not Found", a one-line
// reason) and whether the connection closes after it. `extra_headers` are
// complete field lines ("Location: /x\r\n"). An answer to HEAD has the
// body's length but not the body (RFC 9110 9.3.2).
void writeErrorResponse(int status, std::string_view detail, bool close_connection,
                        std::string_view request_id, OutboundWrite& out,
                        std::string_view extra_headers = {}, bool head_request = false);

// Reason phrase for a status code ("Not Found"), or "" if unknown.
std::string_view statusReason(int status);

// Trailer fields as the gateway re-serialises them ("Name: value\r\n" each),
// between the last chunk ("0\r\n") and the final CRLF.
void appendTrailerFields(OutboundWrite& out,
                         const std::vector<std::pair<std::string, std::string>>& trailers);

// Chunked framing for one body piece: "size-in-hex\r\n".
void appendChunkSizeLine(OutboundWrite& out, size_t size);

}  // namespace spacegate
