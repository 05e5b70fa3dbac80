// Http2Stream: one request on an HTTP/2 connection. It collects the header
// block (bounded like an HTTP/1.1 head), turns it into the same RequestHead
// the HTTP/1.1 codec makes, takes the shared routing and auth decision, and
// forwards it to the route's HTTP/1.1 upstream: request DATA as body bytes
// (chunked when no content-length), the response as HEADERS and DATA. An
// extended CONNECT (RFC 8441, `:protocol websocket`) becomes an HTTP/1.1
// Upgrade upstream; after its 101 the stream's DATA carries the WebSocket
// bytes both ways.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "http/message.h"
#include "http2/header_block.h"
#include "net/buffer.h"
#include "route/route_table.h"
#include "upstream/upstream_connection.h"

namespace spacegate {

class Http2ServerSession;

class Http2Stream : private UpstreamExchange::Owner {
 public:
  Http2Stream(Http2ServerSession& session, int32_t id);
  ~Http2Stream() override;

  int32_t id() const { return id_; }
  const Route* route() const { return route_; }

  // nghttp2 callbacks, through the session. Non-zero: nghttp2's error code
  // for the callback (the stream is reset).
  int onHeader(std::string_view name, std::string_view value, bool trailer);
  void onHeadersComplete(bool end_stream);
  void onTrailersComplete();
  void onData(const SlabRef* slab, const char* data, size_t size);
  void onRequestEnd();
  // The nghttp2 stream closed (answered, reset by either side, or the
  // connection ended): let go of the upstream and write the log line.
  void onClosed(uint32_t error_code);
  // The transport is closing: release the upstream, no more frames.
  void abandon();
  // The response's last frame (END_STREAM) went out.
  void onResponseSent();
  // Housekeeping: the request body and WebSocket idle deadlines.
  void checkDeadlines(uint64_t now_ms);
  // Route retirement: reset the stream.
  void resetForRouteUpdate();

  // The response's data source (nghttp2 pulls as the window allows).
  ssize_t readResponse(size_t length, uint32_t* data_flags);
  // Writes `length` body bytes after `frame_head` (NGHTTP2_DATA_FLAG_NO_COPY).
  void sendResponseData(const uint8_t* frame_head, size_t length);
  // Zero-window stall tracking (session housekeeping).
  bool waitingOnWindow() const { return response_queued_ > 0 || (upstream_paused_); }
  uint64_t stalled_since_ms = 0;

 private:
  // UpstreamConnection::Owner.
  void onUpstreamReady(UpstreamExchange& exchange) override;
  void onUpstreamFailed(UpstreamExchange& exchange, UpstreamError error,
                        bool response_byte_seen) override;
  void onUpstreamResponseHead(ResponseHead& head) override;
  void onUpstreamResponseBody(BufferSlice slice) override;
  void onUpstreamResponseComplete(const TrailerFields& trailers) override;
  void onUpstreamDrained() override;
  void onUpstreamTunnelData(BufferSlice slice) override;
  void onUpstreamTunnelEnd(bool error) override;
  void onUpstreamReadDone() override;

  // Validates the pseudo-header fields and builds request_; false after
  // answering (400) or resetting.
  bool buildRequest();
  void beginExchange();
  void sendBodyUpstream(BufferSlice slice);
  void finishRequestUpstream();
  // Gives window back for request bytes the upstream has taken.
  void consumeWritten();
  void respondLocally(int status, std::string_view detail, const char* error,
                      const std::vector<std::pair<std::string, std::string>>& fields = {});
  void submitResponse(const std::vector<nghttp2_nv>& fields, bool has_body);
  void queueResponseBytes(BufferSlice slice);
  void releaseUpstream(bool reusable);
  void logExchange();

  Http2ServerSession& session_;
  int32_t id_;

  // The header block as received: "name: value\r\n" lines (RequestHead's
  // raw_line views point into the slab they are copied to).
  HeaderBlock fields_;
  std::string cookie_;  // crumbs joined with "; " (RFC 9113 8.2.3)
  std::string method_, scheme_, authority_, path_, protocol_;
  uint32_t field_count_ = 0;
  size_t header_bytes_ = 0;
  int header_error_ = 0;  // 431 (too large) or 400 (malformed), answered at the end
  const char* header_error_reason_ = "";
  bool regular_field_seen_ = false;
  bool has_content_length_ = false;

  RequestHead request_;
  RouteTableSnapshot routes_;
  const Route* route_ = nullptr;
  bool route_open_counted_ = false;
  std::string rewritten_path_;
  bool drop_authorization_ = false;
  bool strip_cookie_ = false;
  bool websocket_ = false;  // extended CONNECT with :protocol websocket
  std::string request_id_;

  UpstreamExchange* upstream_ = nullptr;   // connecting, or ready
  bool upstream_ready_ = false;            // onUpstreamReady: the request head went out
  std::vector<BufferSlice> pending_body_;  // DATA before the upstream was ready
  bool request_ended_ = false;             // END_STREAM from the client
  bool request_sent_ = false;              // the whole request went upstream
  size_t unconsumed_ = 0;                  // request bytes upstream, window not yet given back
  std::vector<std::pair<std::string, std::string>> request_trailers_;

  bool response_started_ = false;
  bool response_complete_ = false;
  bool tunnel_ = false;
  bool upstream_paused_ = false;
  std::deque<BufferSlice> response_;  // body bytes waiting for the client's window
  size_t response_queued_ = 0;
  std::vector<std::pair<std::string, std::string>> response_trailers_;
  bool abandoned_ = false;
  bool closed_ = false;
  bool logged_ = false;

  int status_ = 0;
  const char* error_ = "";
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  uint64_t start_ns_ = 0;
  uint64_t last_activity_ms_ = 0;  // the last DATA either way (loop time)
  uint64_t tunnel_idle_timeout_ms_ = 0;
  bool retried_ = false;  // a stale pooled connection was retried once
  uint64_t upstream_start_ns_ = 0;
  uint64_t upstream_head_ns_ = 0;
};

}  // namespace spacegate
