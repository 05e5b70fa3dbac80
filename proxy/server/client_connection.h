// ClientConnection: one HTTP/1.1 connection from a client, and the exchanges
// on it: read a request head, route it, get an upstream connection, stream
// the request body up and the response down (both zero copy, both with
// backpressure), then either wait for the next request (keep-alive,
// pipelining in order) or close. A 101 turns the connection and its upstream
// into a bidirectional byte tunnel.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "http/message.h"
#include "http1/message_parser.h"
#include "http2/server_session.h"
#include "net/deadline_timer.h"
#include "net/inbound_buffer.h"
#include "net/write_queue.h"
#include "route/route_table.h"
#include "tls/tls_connection.h"
#include "tunnel/splice_tunnel.h"
#include "tunnel/websocket_tunnel.h"
#include "upstream/upstream_connection.h"

namespace spacegate {

class Worker;

class ClientConnection : private WriteQueue::Listener,
                         private Http2Transport,
                         private Http1MessageParser::BodyHandler,
                         private UpstreamExchange::Owner,
                         private SpliceTunnel::Owner {
 public:
  explicit ClientConnection(Worker& worker);
  // Takes an accepted socket and starts reading, with a TLS handshake first
  // when `tls` is given. Returns false (and closes) on error.
  bool accept(int fd, std::shared_ptr<const TlsContextSet> tls = nullptr);
  // Graceful shutdown: close now if idle, else after the current exchange.
  void onWorkerShutdown();
  // End of the grace period: close whatever the state.
  void forceClose() { close(); }
  // The route of the exchange or tunnel in progress (null between requests).
  // Compared by identity: a connection opened on the route's new version is
  // not one of the retired version's.
  const Route* route() const { return route_; }
  std::string_view routeId() const {
    return route_ ? std::string_view(route_->id) : std::string_view();
  }
  // The route was deleted or moved to another upstream: end what runs on it.
  void closeForRouteUpdate();
  // HTTP/2: resets the streams of these retired routes (false: not HTTP/2).
  bool closeStreamsOfRoutes(const std::vector<RoutePtr>& routes);

  size_t worker_slot = 0;  // index in the worker's connection list

 private:
  // The connection's state machine; transitions happen in the callbacks below.
  enum class State {
    kReadingHead,  // waiting for a request head; timer: header read, or keep-alive idle
    kConnecting,   // head parsed, waiting for an upstream; the client is not read
    kForwarding,   // upstream attached: request body up, response down
    kTunnel,       // after 101 or CONNECT: bytes both ways (buffered, or spliced
                   // once both sides are quiet); timer: tunnel idle
    kHttp2,        // an HTTP/2 session (h2 by ALPN, or h2c prior knowledge) owns the
                   // connection: its streams are the exchanges
    kLingering,    // last response sent, write side shut: discard input until EOF
    kClosed,       // handles closing; deleted when they are closed
  };

  static void onAllocate(uv_handle_t* handle, size_t suggested, uv_buf_t* buffer);
  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer);
  // Plaintext arrived in inbound_ (nread > 0), or the client's end (< 0).
  void handleInput(ssize_t nread);
  // TLS: ciphertext read from the socket; decrypts what it can into inbound_.
  void handleCipherText(const char* data, size_t size);
  // TLS: the handshake just finished (counts it, picks the protocol by ALPN).
  void onHandshakeDone();
  static void onTimer(void* owner);
  static void onShutdownDone(uv_shutdown_t* request, int status);
  static void onClosed(uv_handle_t* handle);

  // WriteQueue::Listener (client side writes).
  void onWriteDone(WriteQueue& queue, int status) override;
  // Http1MessageParser::BodyHandler (request body).
  void onBodyData(const char* data, size_t size) override;
  void onMessageComplete(const std::vector<std::pair<std::string, std::string>>& trailers) override;
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
  // SpliceTunnel::Owner.
  void onSpliceProgress(uint64_t to_upstream, uint64_t to_client) override;
  void onSpliceEnd(SpliceTunnel::End end, const char* reason) override;
  // Sends what the upstream callbacks gathered, then applies backpressure.
  void flushClientWrites();

  void processInput();
  void adoptConnecting(UpstreamExchange* exchange);
  void beginExchange();
  void requestComplete();
  void respondLocally(int status, std::string_view detail, bool close_after,
                      std::string_view extra_headers = {});
  void finishExchange();
  void logExchange();
  void countBytes();
  void touchRoute();
  void resetExchange();
  void enterTunnel(ResponseHead& head);
  // CONNECT host:port, or a WebSocket upgrade to the tunnel endpoint
  // (/.spacegate/tunnel/<port>): checks the route and the token, then
  // connects to the port; establishTunnel() answers once it is connected.
  void beginConnectRequest();
  void openTunnel(uint16_t port);
  void establishTunnel();
  // Client bytes in a tunnel: raw to the upstream, or decoded WebSocket frames.
  void forwardClientTunnelBytes(BufferSlice slice);
  // The tunnel ends once what is queued for the client has gone out.
  void endTunnelAfterFlush();
  // The tunnel's common start (after a 101 or a CONNECT's 200).
  void beginTunnel();
  void tunnelEndedOneWay();
  // Hands the tunnel to a SpliceTunnel once nothing is buffered or queued
  // on either side; until then both sides' reading stays paused.
  void trySplice();
  // Moves the tunnel to a small TunnelSession (and closes this connection);
  // false when it cannot (out of descriptors), and nothing changed.
  bool handOffToTunnelSession();
  // Keeps what the tunnel's log line needs and frees the request's buffers.
  void keepTunnelLogFields();
  void closeAfterFlush();
  void startLingering();
  void abort(const char* reason);
  void close();
  void submitClientWrite() override;
  // Http2Transport.
  OutboundWrite& prepareClientWrite() override { return writes_.prepare(); }
  size_t clientQueuedBytes() const override { return writes_.queuedBytes(); }
  void closeAfterSessionEnd() override { closeAfterFlush(); }
  std::string_view clientIp() const override { return client_ip_; }
  bool transportIsTls() const override { return tls_ != nullptr; }
  // Hands the connection to an HTTP/2 session (after ALPN h2, or the h2c
  // preface); bytes already read are its first input.
  void startHttp2();
  void feedHttp2();
  void setReading(bool reading);
  void updateReading();
  void armTimer(uint64_t milliseconds);
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&socket_); }

  Worker& worker_;
  const Limits& limits_;
  uv_tcp_t socket_;
  std::unique_ptr<TlsConnection> tls_;         // TLS listeners only
  std::unique_ptr<Http2ServerSession> http2_;  // kHttp2 only
  bool first_request_ = true;                  // HTTP/2 prior knowledge is only valid first
  DeadlineTimer timer_;
  uv_shutdown_t shutdown_request_;
  int open_handles_ = 0;
  State state_ = State::kReadingHead;
  bool reading_ = false;
  bool idle_keepalive_ = false;  // kReadingHead before the first byte of a request
  bool close_after_response_ = false;
  bool close_after_flush_ = false;
  bool shutdown_started_ = false;
  bool skip_linger_ = false;  // the last response may be followed by a plain close
  InboundBuffer inbound_;
  WriteQueue writes_;
  Http1MessageParser parser_;
  std::string client_ip_;

  // The exchange in progress.
  RequestHead request_;
  RouteTableSnapshot routes_;
  const Route* route_ = nullptr;
  // A tunnel holds its route alone, not the whole table it was matched in:
  // tunnels live for hours while tables are replaced every minute.
  RoutePtr tunnel_route_;
  std::string rewritten_path_;
  bool drop_authorization_ = false;  // the gateway consumed the bearer token
  bool strip_cookie_ = false;        // the gateway's cookie is removed upstream
  std::string request_id_;
  UpstreamExchange* upstream_ = nullptr;
  // The HTTP/1.1 connection under upstream_ (tunnels have one), or null.
  UpstreamConnection* upstreamConnection() { return upstream_ ? upstream_->connection() : nullptr; }
  bool request_complete_ = false;
  bool request_body_error_ = false;
  bool response_started_ = false;
  bool response_chunked_ = false;  // the gateway frames the response body with chunks
  bool upstream_paused_ = false;   // upstream reading stopped: client writes over high water
  bool retried_ = false;
  bool in_tunnel_count_ = false;     // counted in the worker's and route's open tunnels
  bool route_open_counted_ = false;  // counted in the route's open connections
  void releaseRouteCounts();
  bool upstream_keep_alive_ = true;  // the upstream allows reuse after this response
  bool client_eof_ = false;          // tunnel: client finished sending
  bool upstream_eof_ = false;        // tunnel: upstream finished sending
  int status_ = 0;
  const char* error_ = "";
  uint64_t request_body_bytes_ = 0;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  uint64_t bytes_in_counted_ = 0;  // already added to the counters (tunnels count as they go)
  uint64_t bytes_out_counted_ = 0;
  uint64_t exchange_start_ns_ = 0;
  uint64_t upstream_start_ns_ = 0;
  uint64_t upstream_head_ns_ = 0;
  uint64_t last_tunnel_activity_ms_ = 0;
  uint64_t tunnel_idle_timeout_ms_ = 0;  // the route's, or the gateway's
  // What kind of tunnel this exchange opens or is (kNone: plain HTTP, or an
  // upgrade the upstream answers).
  enum class TunnelKind : uint8_t {
    kNone,
    kConnect,   // CONNECT host:port
    kEndpoint,  // the gateway's WebSocket tunnel endpoint
  };
  TunnelKind tunnel_kind_ = TunnelKind::kNone;
  std::unique_ptr<WebSocketTunnel> websocket_tunnel_;  // kEndpoint only
  bool splice_wanted_ = false;                         // waiting for both sides to be quiet
  SpliceTunnel* splice_ = nullptr;                     // owns the data path once set
  std::string tunnel_log_fields_;  // method, host and path of a tunnel's request
};

}  // namespace spacegate
