#include "server/client_connection.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "auth/access_policy.h"
#include "common/log.h"
#include "http/header_rewrite.h"
#include "net/socket_address.h"
#include "server/exchange_routing.h"
#include "server/tunnel_session.h"
#include "server/worker.h"

namespace spacegate {

namespace {

// After the last response of a connection the gateway shuts its write side
// and reads (discarding) for at most this long, so that unread request bytes
// do not turn the close into a reset that destroys the response in flight.
constexpr uint64_t kLingerTimeoutMs = 2'000;

// The gateway's WebSocket tunnel endpoint (docs/tunnels.md).
constexpr std::string_view kTunnelEndpointPrefix = "/.spacegate/tunnel/";

// A decimal port 1..65535, nothing else.
bool parsePort(std::string_view text, uint16_t& port) {
  if (text.empty() || text.size() > 5) return false;
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value == 0 || value > 65535) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

std::string_view upgradeProtocol(const RequestHead& request) {
  const HeaderField* field = findHeader(request.headers, "upgrade");
  return field ? trim(field->value) : std::string_view();
}

double secondsBetween(uint64_t from_ns, uint64_t to_ns) {
  return from_ns && to_ns >= from_ns ? static_cast<double>(to_ns - from_ns) / 1e9 : -1;
}

}  // namespace

ClientConnection::ClientConnection(Worker& worker)
    : worker_(worker),
      limits_(worker.limits()),
      inbound_(worker.buffers()),
      writes_(worker.writes(), *this),
      parser_(Http1MessageParser::Type::kRequest, worker.limits()) {
  uv_tcp_init(worker_.loop(), &socket_);
  socket_.data = this;
  timer_.init(worker_.loop(), this, &ClientConnection::onTimer);
  open_handles_ = 2;
  writes_.attach(stream());
  worker_.addConnection(this);
}

bool ClientConnection::accept(int fd, std::shared_ptr<const TlsContextSet> tls) {
  if (uv_tcp_open(&socket_, fd) != 0) {
    ::close(fd);
    close();
    return false;
  }
  uv_tcp_nodelay(&socket_, 1);
  sockaddr_storage peer{};
  int length = sizeof peer;
  if (uv_tcp_getpeername(&socket_, reinterpret_cast<sockaddr*>(&peer), &length) == 0) {
    client_ip_ = formatIp(reinterpret_cast<sockaddr*>(&peer));
  }
  if (tls && tls->front()) {
    tls_ = std::make_unique<TlsConnection>(std::move(tls));
    writes_.encryptWith(tls_.get(), &worker_.buffers());
  }
  state_ = State::kReadingHead;
  idle_keepalive_ = false;
  // The header deadline covers the TLS handshake too: a client that
  // connects and stalls is closed just the same.
  armTimer(limits_.header_read_timeout_ms);
  setReading(true);
  return true;
}

void ClientConnection::armTimer(uint64_t milliseconds) {
  timer_.set(milliseconds);
}

void ClientConnection::setReading(bool reading) {
  if (state_ == State::kClosed || reading == reading_) return;
  reading_ = reading;
  if (reading) {
    uv_read_start(stream(), &ClientConnection::onAllocate, &ClientConnection::onRead);
  } else {
    uv_read_stop(stream());
  }
}

// Reads the client when its bytes can be used or held. While an exchange
// waits (for an upstream, or for the response once the request is complete)
// the read watcher stays on and bytes are held up to a bound: stopping and
// restarting it for every request costs epoll_ctl calls, and keeping it on
// notices a client that goes away.
void ClientConnection::updateReading() {
  bool holding_room = inbound_.size() < limits_.header_block_size;
  switch (state_) {
    case State::kReadingHead:
    case State::kHttp2:
    case State::kLingering: setReading(true); break;
    case State::kConnecting: setReading(holding_room && !client_eof_); break;
    case State::kForwarding:
      if (request_complete_ || request_body_error_) {
        setReading(holding_room && !client_eof_ && !request_body_error_);
      } else {
        setReading(upstream_ && upstream_->queuedBytes() < limits_.write_high_water);
      }
      break;
    case State::kTunnel:
      setReading(!splice_ && !splice_wanted_ && !client_eof_ && upstream_ &&
                 upstream_->queuedBytes() < limits_.write_high_water);
      break;
    case State::kClosed: break;
  }
}

void ClientConnection::onAllocate(uv_handle_t* handle, size_t, uv_buf_t* buffer) {
  auto* self = static_cast<ClientConnection*>(handle->data);
  if (self->state_ == State::kLingering) {
    *buffer = uv_buf_init(self->worker_.scratch(), 4096);
    return;
  }
  if (self->tls_) {
    *buffer = uv_buf_init(self->worker_.cipherReadBuffer(), Worker::kCipherReadBufferSize);
    return;
  }
  *buffer = self->inbound_.prepareRead();
}

void ClientConnection::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer) {
  auto* self = static_cast<ClientConnection*>(stream->data);
  if (nread == 0) return;
  if (self->state_ == State::kLingering) {
    if (nread < 0) self->close();
    return;
  }
  if (nread > 0 && self->tls_) {
    self->handleCipherText(buffer->base, static_cast<size_t>(nread));
    return;
  }
  if (nread > 0) self->inbound_.commit(static_cast<size_t>(nread));
  self->handleInput(nread);
}

void ClientConnection::handleCipherText(const char* data, size_t size) {
  tls_->feed(data, size);
  bool handshake_was_done = tls_->handshakeDone();
  size_t plaintext = 0;
  bool peer_closed = false;
  bool failed = false;
  for (;;) {
    uv_buf_t space = inbound_.prepareRead();
    size_t produced = 0;
    TlsConnection::ReadResult result = tls_->read(space.base, space.len, produced);
    if (produced > 0) {
      inbound_.commit(produced);
      plaintext += produced;
    }
    if (result == TlsConnection::ReadResult::kData && space.len > 0) continue;
    peer_closed = result == TlsConnection::ReadResult::kClosed;
    failed = result == TlsConnection::ReadResult::kError;
    break;
  }
  // Handshake records, alerts, session tickets.
  if (tls_->pendingOutput() > 0 && writes_.flushEncryptorOutput() != 0) failed = true;
  if (failed) {
    if (!tls_->handshakeDone()) {
      WorkerCounters::add(worker_.mutableCounters().tls_handshake_errors);
      close();
      return;
    }
    abort(tls_->failure());
    return;
  }
  if (!tls_->handshakeDone()) {
    if (peer_closed) close();
    return;
  }
  if (!handshake_was_done) {
    onHandshakeDone();
    if (state_ == State::kClosed) return;
  }
  if (plaintext > 0) handleInput(static_cast<ssize_t>(plaintext));
  if (peer_closed && state_ != State::kClosed && state_ != State::kLingering) handleInput(UV_EOF);
}

void ClientConnection::onHandshakeDone() {
  WorkerCounters& counters = worker_.mutableCounters();
  WorkerCounters::add(counters.tls_handshakes);
  if (tls_->resumed()) WorkerCounters::add(counters.tls_resumptions);
  if (tls_->alpn() == TlsContextSet::kAlpnHttp2) startHttp2();
}

void ClientConnection::startHttp2() {
  state_ = State::kHttp2;
  first_request_ = false;
  timer_.clear();
  http2_ = std::make_unique<Http2ServerSession>(worker_, static_cast<Http2Transport&>(*this));
  if (!http2_->start()) {
    close();
    return;
  }
  if (worker_.draining()) http2_->shutdownGracefully();
  if (state_ != State::kHttp2) return;
  if (!inbound_.empty()) {
    feedHttp2();
    if (state_ != State::kHttp2) return;
  } else {
    http2_->flush();
  }
  updateReading();
}

void ClientConnection::feedHttp2() {
  SlabRef slab = inbound_.slab();
  const char* data = inbound_.data();
  size_t size = inbound_.size();
  inbound_.consume(size);
  bytes_in_ += size;
  http2_->receive(slab, data, size);
  if (state_ == State::kClosed) return;
  // Body bytes live on in the slices the streams sent upstream; the buffer
  // starts over on a fresh slab if they do.
  inbound_.releaseIfEmpty();
}

bool ClientConnection::closeStreamsOfRoutes(const std::vector<RoutePtr>& routes) {
  if (state_ != State::kHttp2 || !http2_) return false;
  http2_->closeStreamsOfRoutes(routes);
  return true;
}

void ClientConnection::handleInput(ssize_t nread) {
  ClientConnection* self = this;
  if (state_ == State::kHttp2) {
    if (nread < 0) {
      // The client went away: its streams end with it.
      close();
      return;
    }
    feedHttp2();
    return;
  }
  if (nread < 0) {
    switch (self->state_) {
      case State::kReadingHead:
        // The client went away between requests (or mid-head): nothing to answer.
        self->close();
        return;
      case State::kTunnel:
        if (nread != UV_EOF) {
          self->abort("client reset the tunnel");
          return;
        }
        self->client_eof_ = true;
        self->setReading(false);
        if (self->upstreamConnection()) self->upstreamConnection()->shutdownWrite();
        self->tunnelEndedOneWay();
        return;
      default:
        if (nread == UV_EOF &&
            (self->request_complete_ || (self->state_ == State::kConnecting &&
                                         self->request_.framing == BodyFraming::kNone))) {
          // Half-close after a complete request: answer, then close.
          self->client_eof_ = true;
          self->setReading(false);
          self->close_after_response_ = true;
          return;
        }
        self->status_ = self->response_started_ ? self->status_ : 499;
        self->abort("client closed before sending the whole request");
        return;
    }
  }
  if (self->state_ == State::kTunnel) {
    BufferSlice slice = self->inbound_.slice(self->inbound_.data(), self->inbound_.size());
    self->inbound_.consume(self->inbound_.size());
    // An idle tunnel holds no buffer: the slab lives on only in the write.
    self->inbound_.releaseIfEmpty();
    self->last_tunnel_activity_ms_ = uv_now(self->worker_.loop());
    self->forwardClientTunnelBytes(std::move(slice));
    if (self->state_ != State::kTunnel) return;
    self->countBytes();
    self->updateReading();
    return;
  }
  if (self->state_ == State::kReadingHead && self->idle_keepalive_) {
    // The first byte of the next request: the header deadline starts now.
    self->idle_keepalive_ = false;
    self->armTimer(self->limits_.header_read_timeout_ms);
  }
  if (self->state_ == State::kForwarding && !self->request_complete_) {
    self->armTimer(self->limits_.client_body_timeout_ms);
  }
  if (self->state_ == State::kConnecting ||
      (self->state_ == State::kForwarding && self->request_complete_)) {
    // Held for later (the body once the upstream is there, or the next
    // pipelined request); past the bound, reading pauses.
    self->updateReading();
    return;
  }
  self->processInput();
}

void ClientConnection::processInput() {
  while (state_ == State::kReadingHead || state_ == State::kForwarding) {
    if (inbound_.empty()) return;
    if (state_ == State::kReadingHead) {
      if (first_request_ && !tls_) {
        // HTTP/2 with prior knowledge (RFC 9113 3.3) starts with the preface.
        static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        std::string_view received(inbound_.data(), std::min(inbound_.size(), kPreface.size()));
        if (kPreface.starts_with(received)) {
          if (received.size() < kPreface.size()) return;  // wait for the rest
          startHttp2();
          return;
        }
      }
      auto status = parser_.parseHead(inbound_.data(), inbound_.size(), request_);
      if (status == Http1MessageParser::HeadStatus::kIncomplete) {
        if (inbound_.full()) respondLocally(431, "request header block too large", true);
        return;
      }
      exchange_start_ns_ = uv_hrtime();
      first_request_ = false;
      if (status == Http1MessageParser::HeadStatus::kError) {
        error_ = parser_.errorReason();
        respondLocally(parser_.errorStatus(), parser_.errorReason(), true);
        return;
      }
      request_.storage = inbound_.slab();
      bytes_in_ = parser_.headConsumed();
      inbound_.consume(parser_.headConsumed());
      beginExchange();
      continue;
    }
    // kForwarding: request body bytes.
    if (request_complete_ || request_body_error_ || !upstream_) return;
    auto result = parser_.parseBody(inbound_.data(), inbound_.size(), *this);
    if (request_body_error_) return;  // answered (413) inside onBodyData
    if (result.error) {
      request_body_error_ = true;
      if (!response_started_) {
        UpstreamExchange* upstream = upstream_;
        upstream_ = nullptr;
        upstream->close();
        error_ = "malformed request body";
        respondLocally(400, "malformed request body", true);
      } else {
        abort("malformed request body");
      }
      return;
    }
    inbound_.consume(result.consumed);
    bytes_in_ += result.consumed;
    if (upstream_) upstream_->submitWrite();
    if (result.complete) {
      requestComplete();
      return;
    }
    updateReading();
    return;
  }
}

void ClientConnection::beginExchange() {
  routes_ = worker_.routes();
  std::string_view client_request_id = acceptableRequestId(request_);
  if (client_request_id.empty()) {
    worker_.newRequestId(request_id_);
  } else {
    request_id_.assign(client_request_id);
  }
  if (worker_.draining()) close_after_response_ = true;
  if (!request_.keep_alive) close_after_response_ = true;
  if (request_.is_connect) {
    beginConnectRequest();
    return;
  }
  if (request_.path.starts_with(kTunnelEndpointPrefix)) {
    // The gateway's own path on every Gitspace host: never forwarded.
    uint16_t port = 0;
    std::string_view rest = request_.path.substr(kTunnelEndpointPrefix.size());
    rest = rest.substr(0, rest.find('?'));
    if (!request_.upgrade || !equalsIgnoringCase(upgradeProtocol(request_), "websocket") ||
        !parsePort(rest, port)) {
      error_ = "bad tunnel endpoint request";
      respondLocally(
          400, "the tunnel endpoint takes a WebSocket upgrade to /.spacegate/tunnel/<port>", true);
      return;
    }
    tunnel_kind_ = TunnelKind::kEndpoint;
    // The host's tunnel route, whatever path prefix its IDE route has.
    route_ = routes_->matchTunnel(request_.host);
    openTunnel(port);
    return;
  }
  ExchangeDecision decision = decideExchange(worker_, *routes_, request_, tls_ != nullptr);
  route_ = decision.route;
  if (decision.kind == ExchangeDecision::Kind::kLocalResponse) {
    error_ = decision.error;
    respondLocally(decision.status, decision.detail, false, fieldLines(decision.fields));
    return;
  }
  drop_authorization_ = decision.drop_authorization;
  strip_cookie_ = decision.strip_cookie;
  rewritten_path_ = std::move(decision.rewritten_path);
  route_->stats->open_connections.fetch_add(1, std::memory_order_relaxed);
  route_open_counted_ = true;
  touchRoute();
  timer_.clear();
  state_ = State::kConnecting;
  updateReading();
  upstream_start_ns_ = uv_hrtime();
  // Upgrades (WebSockets) always take an HTTP/1.1 connection: their bytes
  // become a tunnel, which an h2c stream is not.
  bool h2c = route_->protocol == UpstreamProtocol::kH2c && !request_.upgrade;
  adoptConnecting(worker_.upstreams().acquire(
      route_->upstream, route_->poolKey(), this, /*fresh=*/false,
      route_->upstream_tls ? &route_->upstream_tls_options : nullptr, h2c));
}

// A connection still connecting is held in upstream_ too, so that closing
// this client (a retired route, a shutdown) detaches and closes it; one that
// already reported (ready or failed) has set or cleared upstream_ itself.
void ClientConnection::adoptConnecting(UpstreamExchange* connection) {
  if (state_ == State::kConnecting && connection && connection->owner() == this &&
      !connection->closing()) {
    upstream_ = connection;
  }
}

void ClientConnection::beginConnectRequest() {
  tunnel_kind_ = TunnelKind::kConnect;
  // CONNECT carries no content (RFC 9110 9.3.6): a length would leave the
  // bytes after the head in doubt.
  if (request_.framing != BodyFraming::kNone) {
    error_ = "CONNECT with a body";
    respondLocally(400, "CONNECT has no body", true);
    return;
  }
  std::string_view target = request_.target;
  size_t colon = target.rfind(':');
  uint16_t port = 0;
  if (colon == std::string_view::npos || colon == 0 || target.front() == '[' ||
      !parsePort(target.substr(colon + 1), port)) {
    error_ = "bad CONNECT target";
    respondLocally(400, "CONNECT needs a host:port target", true);
    return;
  }
  route_ = routes_->matchTunnel(target.substr(0, colon));
  openTunnel(port);
}

void ClientConnection::openTunnel(uint16_t port) {
  // A tunnel's connection ends with the tunnel: never kept alive.
  close_after_response_ = true;
  if (!route_) {
    error_ = "no route";
    respondLocally(404, "no route for this host", true);
    return;
  }
  AccessContext access{worker_.authConfig(), worker_.keys(), worker_.tokenCache(),
                       static_cast<int64_t>(worker_.nowUnixMs() / 1000), tls_ != nullptr};
  TunnelAccessDecision decision = decideTunnelAccess(request_, *route_, port, access);
  bool connect = tunnel_kind_ == TunnelKind::kConnect;
  switch (decision.outcome) {
    case TunnelAccessDecision::Outcome::kAllow: break;
    case TunnelAccessDecision::Outcome::kUnauthorized:
      error_ = decision.reason;
      if (connect) {
        respondLocally(407, "a bearer token with scope ssh is required", true,
                       "Proxy-Authenticate: Bearer realm=\"spacegate\"\r\n");
      } else {
        respondLocally(401, "a bearer token with scope ssh is required", true,
                       "WWW-Authenticate: Bearer realm=\"spacegate\"\r\n");
      }
      return;
    case TunnelAccessDecision::Outcome::kForbidden:
      error_ = decision.reason;
      respondLocally(403, decision.reason, true);
      return;
  }
  route_->stats->open_connections.fetch_add(1, std::memory_order_relaxed);
  route_open_counted_ = true;
  touchRoute();
  timer_.clear();
  state_ = State::kConnecting;
  updateReading();
  upstream_start_ns_ = uv_hrtime();
  SocketAddress destination = withPort(route_->upstream, port);
  adoptConnecting(
      worker_.upstreams().acquire(destination, destination.text(), this, /*fresh=*/true));
}

void ClientConnection::establishTunnel() {
  upstream_head_ns_ = uv_hrtime();
  response_started_ = true;
  OutboundWrite& write = writes_.prepare();
  if (tunnel_kind_ == TunnelKind::kConnect) {
    status_ = 200;
    write.appendGenerated("HTTP/1.1 200 Connection established\r\n\r\n");
  } else {
    status_ = 101;
    const HeaderField* key = findHeader(request_.headers, "sec-websocket-key");
    write.appendGenerated(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: ");
    write.appendGenerated(webSocketAcceptValue(key ? trim(key->value) : std::string_view()));
    write.appendGenerated("\r\n\r\n");
    websocket_tunnel_ = std::make_unique<WebSocketTunnel>();
  }
  submitClientWrite();
  if (state_ == State::kClosed) return;
  beginTunnel();
}

void ClientConnection::onUpstreamReady(UpstreamExchange& connection) {
  upstream_ = &connection;
  if (tunnel_kind_ != TunnelKind::kNone) {
    establishTunnel();
    return;
  }
  state_ = State::kForwarding;
  connection.startExchange(request_.method);
  UpstreamRequestContext context;
  context.client_ip = client_ip_;
  context.scheme = tls_ ? "https" : "http";
  context.request_id = request_id_;
  context.rewritten_path = rewritten_path_;
  context.chunked_body = request_.framing == BodyFraming::kChunked;
  context.drop_authorization = drop_authorization_;
  if (strip_cookie_) context.remove_cookie = worker_.authConfig().cookie_name;
  connection.writeRequestHead(request_, context);
  if (request_.framing == BodyFraming::kNone) {
    connection.submitWrite();
    if (upstream_ == &connection) requestComplete();
    return;
  }
  // The head goes out together with the first body bytes already buffered.
  armTimer(limits_.client_body_timeout_ms);
  processInput();
  if (upstream_ == &connection) {
    connection.submitWrite();
    updateReading();
  }
}

void ClientConnection::onBodyData(const char* data, size_t size) {
  request_body_bytes_ += size;
  if (limits_.request_body_size != 0 && request_body_bytes_ > limits_.request_body_size) {
    request_body_error_ = true;
    if (!response_started_) {
      UpstreamExchange* upstream = upstream_;
      upstream_ = nullptr;
      if (upstream) upstream->close();
      error_ = "request body too large";
      respondLocally(413, "request body too large", true);
    } else {
      abort("request body too large");
    }
    return;
  }
  if (!upstream_) return;
  upstream_->writeRequestBody(inbound_.slice(data, size));
}

void ClientConnection::onMessageComplete(const TrailerFields& trailers) {
  if (upstream_) upstream_->writeRequestEnd(trailers);
}

void ClientConnection::requestComplete() {
  request_complete_ = true;
  if (state_ == State::kForwarding) timer_.clear();
  updateReading();
  if (upstream_) upstream_->requestFullySent();
}

void ClientConnection::onUpstreamFailed(UpstreamExchange& connection, UpstreamError error,
                                        bool response_byte_seen) {
  upstream_ = nullptr;
  if (state_ == State::kTunnel) {
    abort("upstream failed in tunnel");
    return;
  }
  if (!response_started_) {
    // A reused keep-alive connection the upstream closed just as the request
    // went out: safe to try once more on a new connection when the request
    // is idempotent and has no body to resend.
    if (error == UpstreamError::kClosedEarly && !response_byte_seen && connection.reused() &&
        !retried_ && isIdempotentMethod(request_.method) &&
        request_.framing == BodyFraming::kNone) {
      retried_ = true;
      state_ = State::kConnecting;
      adoptConnecting(worker_.upstreams().acquire(
          route_->upstream, route_->poolKey(), this, /*fresh=*/true,
          route_->upstream_tls ? &route_->upstream_tls_options : nullptr,
          route_->protocol == UpstreamProtocol::kH2c && !request_.upgrade));
      return;
    }
    error_ = upstreamErrorName(error);
    respondLocally(upstreamErrorStatus(error), upstreamErrorDetail(error), !request_complete_);
    return;
  }
  error_ = upstreamErrorName(error);
  abort("upstream failed during the response");
}

void ClientConnection::onUpstreamResponseHead(ResponseHead& head) {
  if (upstream_head_ns_ == 0) upstream_head_ns_ = uv_hrtime();
  bool client_http10 = request_.version_major == 1 && request_.version_minor == 0;
  if (head.status >= 100 && head.status < 200 && head.status != 101) {
    // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they are.
    if (!client_http10) {
      OutboundWrite& write = writes_.prepare();
      write.hold(head.storage);
      write.appendView(head.raw_first_line);
      for (const HeaderField& field : head.headers) write.appendView(field.raw_line);
      write.appendGenerated("\r\n");
    }
    return;
  }
  if (head.status == 101) {
    if (!request_.upgrade || !upstreamConnection()) {
      UpstreamExchange* upstream = upstream_;
      upstream_ = nullptr;
      upstream->close();
      error_ = "101 without an upgrade request";
      respondLocally(502, "upstream switched protocols unasked", true);
      return;
    }
    enterTunnel(head);
    return;
  }
  response_started_ = true;
  status_ = head.status;
  upstream_keep_alive_ = head.keep_alive;
  bool unknown_length =
      head.framing == BodyFraming::kChunked || head.framing == BodyFraming::kUntilClose;
  response_chunked_ = unknown_length && !client_http10;
  if (!request_complete_ || (client_http10 && unknown_length) || request_.upgrade) {
    // The rest of an unread request body cannot be skipped safely; an
    // HTTP/1.0 client learns the end of an unknown-length body from the close;
    // a refused upgrade leaves the connection's protocol in doubt.
    close_after_response_ = true;
  }
  ClientResponseContext context;
  context.chunked_body = response_chunked_;
  context.close_connection = close_after_response_;
  context.http10_keep_alive = client_http10 && !close_after_response_;
  // Gathered: the head goes out with the body bytes of the same read.
  writeClientResponseHead(head, context, writes_.prepare());
}

void ClientConnection::onUpstreamResponseBody(BufferSlice slice) {
  OutboundWrite& write = writes_.prepare();
  if (response_chunked_) appendChunkSizeLine(write, slice.size);
  write.appendSlice(slice);
  if (response_chunked_) write.appendGenerated("\r\n");
}

void ClientConnection::onUpstreamReadDone() {
  flushClientWrites();
}

void ClientConnection::flushClientWrites() {
  if (state_ == State::kClosed || writes_.prepare().empty()) return;
  submitClientWrite();
  if (state_ == State::kClosed) return;
  if (state_ == State::kTunnel) countBytes();  // tunnels count as they go
  if (writes_.queuedBytes() > limits_.write_high_water && upstream_ && !upstream_paused_) {
    upstream_paused_ = true;
    upstream_->pauseReading();
    if (state_ == State::kForwarding) armTimer(limits_.client_body_timeout_ms);
  }
}

void ClientConnection::onUpstreamResponseComplete(const TrailerFields& trailers) {
  if (response_chunked_) {
    OutboundWrite& write = writes_.prepare();
    write.appendGenerated("0\r\n");
    appendTrailerFields(write, trailers);
    write.appendGenerated("\r\n");
  }
  // Head, body and end of a small response leave in one write.
  flushClientWrites();
  if (state_ == State::kClosed) return;
  UpstreamExchange* upstream = upstream_;
  upstream_ = nullptr;
  upstream_paused_ = false;
  if (upstream) {
    bool reusable = request_complete_ && !request_body_error_;
    // keep_alive is false for close-delimited bodies and "Connection: close".
    worker_.upstreams().release(upstream, reusable && upstream_keep_alive_);
  }
  finishExchange();
}

void ClientConnection::onUpstreamDrained() {
  if (state_ == State::kTunnel && splice_wanted_) {
    trySplice();
    return;
  }
  if (state_ == State::kForwarding || state_ == State::kTunnel) updateReading();
}

void ClientConnection::submitClientWrite() {
  size_t bytes = writes_.prepare().size();
  int result = writes_.submit();
  if (result != 0) {
    abort("write to client failed");
    return;
  }
  bytes_out_ += bytes;
}

void ClientConnection::onWriteDone(WriteQueue& queue, int status) {
  if (state_ == State::kClosed) return;
  if (status != 0) {
    if (state_ != State::kLingering)
      abort("write to client failed");
    else
      close();
    return;
  }
  if (upstream_paused_ && upstream_ && !splice_wanted_ && !splice_ &&
      queue.queuedBytes() <= limits_.write_low_water) {
    upstream_paused_ = false;
    upstream_->resumeReading();
    if (state_ == State::kForwarding) {
      if (request_complete_) timer_.clear();
    }
  } else if (upstream_paused_) {
    // Progress: the client is taking bytes, if slowly.
    armTimer(limits_.client_body_timeout_ms);
  }
  if (close_after_flush_ && queue.pendingWrites() == 0) startLingering();
  if (state_ == State::kHttp2) http2_->onTransportDrained();
  if (state_ == State::kTunnel && splice_wanted_) trySplice();
}

void ClientConnection::respondLocally(int status, std::string_view detail, bool close_after,
                                      std::string_view extra_headers) {
  status_ = status;
  response_started_ = true;
  if (close_after || request_.framing != BodyFraming::kNone) close_after_response_ = true;
  // A local answer before the request body was read leaves that body on the
  // wire: the connection cannot be reused.
  if (!request_complete_ && request_.framing != BodyFraming::kNone) close_after_response_ = true;
  // A request that failed to parse has no method to go by (method 0).
  bool head_request =
      exchange_start_ns_ != 0 && request_.method == HTTP_HEAD && !request_.method_name.empty();
  writeErrorResponse(status, detail, close_after_response_, request_id_, writes_.prepare(),
                     extra_headers, head_request);
  submitClientWrite();
  if (state_ == State::kClosed) return;
  finishExchange();
}

void ClientConnection::finishExchange() {
  flushClientWrites();
  if (state_ == State::kClosed) return;
  logExchange();
  bool close_now = close_after_response_;
  // A client that asked to close, whose request was read to the end and who
  // sent nothing more, needs no lingering close: a plain close after the
  // response cannot reset bytes it still waits for.
  skip_linger_ = close_now && request_complete_ && !request_body_error_ &&
                 (!request_.keep_alive || client_eof_) && inbound_.empty() && status_ < 400;
  resetExchange();
  if (close_now) {
    closeAfterFlush();
    return;
  }
  parser_.reset();
  state_ = State::kReadingHead;
  if (!inbound_.empty()) {
    // A pipelined request is already here.
    armTimer(limits_.header_read_timeout_ms);
    idle_keepalive_ = false;
    updateReading();
    processInput();
    return;
  }
  inbound_.releaseIfEmpty();
  idle_keepalive_ = true;
  armTimer(limits_.keepalive_idle_timeout_ms);
  updateReading();
}

void ClientConnection::touchRoute() {
  if (route_) route_->stats->touch(worker_.nowUnixMs());
}

// Adds the bytes not yet counted to the worker's and the route's counters.
void ClientConnection::countBytes() {
  uint64_t in = bytes_in_ - bytes_in_counted_;
  uint64_t out = bytes_out_ - bytes_out_counted_;
  bytes_in_counted_ = bytes_in_;
  bytes_out_counted_ = bytes_out_;
  WorkerCounters& counters = worker_.mutableCounters();
  WorkerCounters::add(counters.bytes_in, in);
  WorkerCounters::add(counters.bytes_out, out);
  if (route_) {
    route_->stats->bytes_in.fetch_add(in, std::memory_order_relaxed);
    route_->stats->bytes_out.fetch_add(out, std::memory_order_relaxed);
    touchRoute();
  }
}

void ClientConnection::logExchange() {
  countBytes();
  AccessLogEntry entry;
  entry.request_id = request_id_;
  entry.worker = worker_.index();
  entry.client = client_ip_;
  entry.method = request_.method_name;
  entry.host = request_.host;
  entry.path = request_.path.empty() ? request_.target : request_.path;
  entry.protocol = request_.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
  entry.status = status_;
  entry.bytes_in = bytes_in_;
  entry.bytes_out = bytes_out_;
  entry.route = route_ ? std::string_view(route_->id) : std::string_view();
  entry.upstream = route_ ? std::string_view(route_->upstream_text) : std::string_view();
  entry.upstream_time = secondsBetween(upstream_start_ns_, upstream_head_ns_);
  entry.total_time = exchange_start_ns_ ? secondsBetween(exchange_start_ns_, uv_hrtime()) : 0;
  entry.error = error_;
  recordExchange(worker_, route_, entry);
}

void ClientConnection::releaseRouteCounts() {
  if (route_open_counted_) {
    route_->stats->open_connections.fetch_sub(1, std::memory_order_relaxed);
    route_open_counted_ = false;
  }
  if (in_tunnel_count_) {
    if (route_) route_->stats->open_tunnels.fetch_sub(1, std::memory_order_relaxed);
    WorkerCounters::add(worker_.mutableCounters().tunnels_open, -1);
    WorkerCounters::add(worker_.mutableCounters().tunnels_closed);
    in_tunnel_count_ = false;
  }
}

void ClientConnection::closeForRouteUpdate() {
  if (state_ == State::kClosed) return;
  logEvent(LogLevel::kInfo, "closing a connection of a retired route")
      .with("route", routeId())
      .with("request_id", request_id_)
      .emit();
  if (state_ == State::kTunnel) {
    error_ = "route retired";
    logExchange();
    close();
    return;
  }
  abort("route retired");
}

void ClientConnection::resetExchange() {
  releaseRouteCounts();
  // Field storage keeps its capacity: no allocation per request.
  HeaderList headers = std::move(request_.headers);
  headers.clear();
  request_ = RequestHead{};
  request_.headers = std::move(headers);
  routes_.reset();
  tunnel_route_.reset();
  route_ = nullptr;
  rewritten_path_.clear();
  tunnel_kind_ = TunnelKind::kNone;
  drop_authorization_ = false;
  strip_cookie_ = false;
  request_id_.clear();
  request_complete_ = false;
  request_body_error_ = false;
  response_started_ = false;
  response_chunked_ = false;
  upstream_paused_ = false;
  upstream_keep_alive_ = true;
  retried_ = false;
  status_ = 0;
  error_ = "";
  request_body_bytes_ = 0;
  bytes_in_ = 0;
  bytes_out_ = 0;
  bytes_in_counted_ = 0;
  bytes_out_counted_ = 0;
  exchange_start_ns_ = 0;
  upstream_start_ns_ = 0;
  upstream_head_ns_ = 0;
}

void ClientConnection::enterTunnel(ResponseHead& head) {
  status_ = 101;
  response_started_ = true;
  ClientResponseContext context;
  writeClientResponseHead(head, context, writes_.prepare());
  submitClientWrite();
  if (state_ == State::kClosed) return;
  beginTunnel();
}

void ClientConnection::beginTunnel() {
  state_ = State::kTunnel;
  request_complete_ = true;
  in_tunnel_count_ = true;
  route_->stats->open_tunnels.fetch_add(1, std::memory_order_relaxed);
  WorkerCounters::add(worker_.mutableCounters().tunnels_open, 1);
  WorkerCounters::add(worker_.mutableCounters().tunnels_opened);
  last_tunnel_activity_ms_ = uv_now(worker_.loop());
  tunnel_idle_timeout_ms_ = route_->tunnel_idle_timeout_ms ? route_->tunnel_idle_timeout_ms
                                                           : limits_.tunnel_idle_timeout_ms;
  armTimer(tunnel_idle_timeout_ms_);
  keepTunnelLogFields();
  tunnel_route_ = routes_->findPointerById(route_->id);
  if (tunnel_route_.get() == route_) routes_.reset();
  // Bytes the client sent after its upgrade request belong to the new protocol.
  if (!inbound_.empty()) {
    BufferSlice slice = inbound_.slice(inbound_.data(), inbound_.size());
    inbound_.consume(inbound_.size());
    forwardClientTunnelBytes(std::move(slice));
    if (state_ != State::kTunnel) return;
  }
  inbound_.releaseIfEmpty();
  upstreamConnection()->becomeTunnel();
  if (state_ == State::kClosed) return;
  upstreamConnection()->releaseTunnelBuffers();
  flushClientWrites();
  if (state_ == State::kClosed) return;
  // splice(2) moves raw bytes: only when neither side speaks TLS.
  if (limits_.tunnel_splice && !websocket_tunnel_ && !tls_ && !route_->upstream_tls) {
    // Nothing more is read in user space; what is already on its way is
    // written out first, then splice(2) takes over.
    splice_wanted_ = true;
    setReading(false);
    upstream_->pauseReading();
    trySplice();
    return;
  }
  upstream_->resumeReading();
  updateReading();
}

void ClientConnection::forwardClientTunnelBytes(BufferSlice slice) {
  bytes_in_ += slice.size;
  WorkerCounters::add(worker_.mutableCounters().tunnel_bytes_copied, slice.size);
  if (!websocket_tunnel_) {
    upstreamConnection()->prepareWrite().appendSlice(slice);
    upstream_->submitWrite();
    return;
  }
  WebSocketTunnel::Result result =
      websocket_tunnel_->fromClient(slice, upstreamConnection()->prepareWrite(), writes_.prepare());
  upstream_->submitWrite();
  if (state_ != State::kTunnel) return;
  flushClientWrites();
  if (state_ != State::kTunnel) return;
  if (result == WebSocketTunnel::Result::kFailed) {
    error_ = websocket_tunnel_->failure();
    endTunnelAfterFlush();
  } else if (result == WebSocketTunnel::Result::kClientClosed && !client_eof_) {
    // The client is done sending; the port may still answer.
    client_eof_ = true;
    upstreamConnection()->shutdownWrite();
  }
}

void ClientConnection::endTunnelAfterFlush() {
  if (upstream_) {
    UpstreamExchange* upstream = upstream_;
    upstream_ = nullptr;
    upstream->setOwner(nullptr);
    upstream->close();
  }
  logExchange();
  closeAfterFlush();
}

void ClientConnection::keepTunnelLogFields() {
  // The request head's views point into a read buffer the tunnel no longer
  // needs: keep copies of the three the log line uses, free the rest.
  std::string_view path = request_.path.empty() ? request_.target : request_.path;
  tunnel_log_fields_.reserve(request_.method_name.size() + request_.host.size() + path.size());
  tunnel_log_fields_.assign(request_.method_name);
  tunnel_log_fields_.append(request_.host);
  tunnel_log_fields_.append(path);
  std::string_view all = tunnel_log_fields_;
  size_t method_size = request_.method_name.size();
  size_t host_size = request_.host.size();
  request_.method_name = all.substr(0, method_size);
  request_.host = all.substr(method_size, host_size);
  request_.path = all.substr(method_size + host_size);
  request_.target = request_.path;
  request_.headers.clear();
  request_.headers.shrink_to_fit();
  request_.storage = SlabRef();
}

void ClientConnection::trySplice() {
  if (state_ != State::kTunnel || !splice_wanted_ || !upstream_) return;
  if (writes_.pendingWrites() != 0 || !inbound_.empty() || !upstreamConnection()->quietForSplice())
    return;
  splice_wanted_ = false;
  if (handOffToTunnelSession()) return;
  // Out of descriptors for the copies: splice from here, with the
  // connection's heavier state kept.
  uv_os_fd_t client_fd = -1;
  int upstream_fd = upstreamConnection()->socketDescriptor();
  int error = UV_EBADF;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&socket_), &client_fd) == 0 && upstream_fd >= 0) {
    auto* splice = new SpliceTunnel(worker_.loop(), worker_.pipes(), client_fd, upstream_fd, *this);
    splice_ = splice;
    if (splice->start(error)) return;
    splice_ = nullptr;  // start() failing freed it
  }
  // The buffered path still works.
  logEvent(LogLevel::kWarning, "splice unavailable for a tunnel: buffered path")
      .with("error", uv_strerror(error))
      .emit();
  upstream_->resumeReading();
  updateReading();
}

bool ClientConnection::handOffToTunnelSession() {
  uv_os_fd_t client_fd = -1;
  int upstream_fd = upstreamConnection()->socketDescriptor();
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&socket_), &client_fd) != 0 || upstream_fd < 0) {
    return false;
  }
  RoutePtr route = tunnel_route_;
  if (!route || route.get() != route_) return false;
  // Copies of the two descriptors go to the session; this connection's
  // handles then close the originals, which leaves the sockets open.
  int client_copy = ::fcntl(client_fd, F_DUPFD_CLOEXEC, 0);
  if (client_copy < 0) return false;
  int upstream_copy = ::fcntl(upstream_fd, F_DUPFD_CLOEXEC, 0);
  if (upstream_copy < 0) {
    ::close(client_copy);
    return false;
  }
  countBytes();
  TunnelSession::LogFields fields;
  fields.request_id = request_id_;
  fields.client_ip = client_ip_;
  fields.method = request_.method_name;
  fields.host = request_.host;
  fields.path = request_.path;
  fields.status = status_;
  fields.bytes_in = bytes_in_;
  fields.bytes_out = bytes_out_;
  fields.exchange_start_ns = exchange_start_ns_;
  fields.upstream_time = secondsBetween(upstream_start_ns_, upstream_head_ns_);
  TunnelSession* session =
      TunnelSession::start(worker_, std::move(route), client_copy, upstream_copy,
                           tunnel_idle_timeout_ms_, std::move(fields));
  if (!session) return false;
  // The session carries the open tunnel and route counts on; this
  // connection ends without a log line of its own.
  in_tunnel_count_ = false;
  route_open_counted_ = false;
  close();
  return true;
}

void ClientConnection::onSpliceProgress(uint64_t to_upstream, uint64_t to_client) {
  last_tunnel_activity_ms_ = uv_now(worker_.loop());
  bytes_in_ += to_upstream;
  bytes_out_ += to_client;
  WorkerCounters::add(worker_.mutableCounters().tunnel_bytes_spliced, to_upstream + to_client);
  countBytes();
}

void ClientConnection::onSpliceEnd(SpliceTunnel::End end, const char* reason) {
  if (end == SpliceTunnel::End::kReset) {
    abort(reason);
    return;
  }
  logExchange();
  close();
}

void ClientConnection::onUpstreamTunnelData(BufferSlice slice) {
  last_tunnel_activity_ms_ = uv_now(worker_.loop());
  WorkerCounters::add(worker_.mutableCounters().tunnel_bytes_copied, slice.size);
  // Sent by flushClientWrites() at the end of the read.
  if (websocket_tunnel_) {
    websocket_tunnel_->fromUpstream(slice, writes_.prepare());
  } else {
    writes_.prepare().appendSlice(slice);
  }
}

void ClientConnection::onUpstreamTunnelEnd(bool error) {
  if (error) {
    abort("upstream reset the tunnel");
    return;
  }
  upstream_eof_ = true;
  if (websocket_tunnel_) {
    // A WebSocket has no half-close: the close frame ends it.
    websocket_tunnel_->upstreamFinished(writes_.prepare());
    endTunnelAfterFlush();
    return;
  }
  // Pass the half-close on: the client sees EOF after the queued bytes.
  shutdown_request_.data = this;
  if (uv_shutdown(&shutdown_request_, stream(), &ClientConnection::onShutdownDone) == 0) {
    shutdown_started_ = true;
  }
  tunnelEndedOneWay();
}

void ClientConnection::tunnelEndedOneWay() {
  if (client_eof_ && upstream_eof_) {
    logExchange();
    close();
  }
}

void ClientConnection::onShutdownDone(uv_shutdown_t* request, int) {
  auto* self = static_cast<ClientConnection*>(request->data);
  (void)self;
}

void ClientConnection::closeAfterFlush() {
  flushClientWrites();
  if (state_ == State::kClosed) return;
  close_after_flush_ = true;
  state_ = State::kLingering;
  timer_.clear();
  if (writes_.pendingWrites() == 0) {
    startLingering();
  } else {
    // A client that does not read is not waited for for ever.
    armTimer(kLingerTimeoutMs);
  }
}

void ClientConnection::startLingering() {
  if (state_ == State::kClosed || shutdown_started_) return;
  if (skip_linger_ && inbound_.empty()) {
    // Everything is written (or with the kernel): close sends it, then FIN.
    close();
    return;
  }
  shutdown_started_ = true;
  state_ = State::kLingering;
  inbound_.reset();
  if (tls_) {
    // close_notify before the FIN: the client knows the response is whole.
    tls_->shutdown();
    writes_.flushEncryptorOutput();
  }
  shutdown_request_.data = this;
  if (uv_shutdown(&shutdown_request_, stream(), &ClientConnection::onShutdownDone) != 0) {
    close();
    return;
  }
  armTimer(kLingerTimeoutMs);
  setReading(true);
}

void ClientConnection::abort(const char* reason) {
  if (state_ == State::kClosed) return;
  if (!*error_) error_ = reason;
  if (status_ == 0) status_ = 502;
  if (exchange_start_ns_ || state_ == State::kTunnel) logExchange();
  logEvent(LogLevel::kDebug, "connection aborted")
      .with("reason", reason)
      .with("request_id", request_id_)
      .emit();
  close();
}

void ClientConnection::onWorkerShutdown() {
  switch (state_) {
    case State::kReadingHead:
      if (idle_keepalive_ || inbound_.empty()) {
        close();
      } else {
        close_after_response_ = true;
      }
      break;
    case State::kConnecting:
    case State::kForwarding: close_after_response_ = true; break;
    case State::kHttp2:
      // GOAWAY: streams in flight finish, then the connection closes.
      http2_->shutdownGracefully();
      break;
    case State::kTunnel:  // left open until the grace period ends
    case State::kLingering:
    case State::kClosed: break;
  }
}

void ClientConnection::onTimer(void* owner) {
  auto* self = static_cast<ClientConnection*>(owner);
  switch (self->state_) {
    case State::kReadingHead:
      if (self->idle_keepalive_ || self->inbound_.empty()) {
        self->close();  // idle keep-alive connection: close quietly
        return;
      }
      self->error_ = "header read timeout";
      self->exchange_start_ns_ = uv_hrtime();
      self->respondLocally(408, "request header not received in time", true);
      return;
    case State::kForwarding:
      if (!self->response_started_ && !self->request_complete_) {
        UpstreamExchange* upstream = self->upstream_;
        self->upstream_ = nullptr;
        if (upstream) upstream->close();
        self->error_ = "request body timeout";
        self->respondLocally(408, "request body not received in time", true);
        return;
      }
      self->abort("client did not read the response in time");
      return;
    case State::kTunnel: {
      uint64_t idle = uv_now(self->worker_.loop()) - self->last_tunnel_activity_ms_;
      if (idle < self->tunnel_idle_timeout_ms_) {
        self->armTimer(self->tunnel_idle_timeout_ms_ - idle);
        return;
      }
      self->error_ = "tunnel idle timeout";
      WorkerCounters::add(self->worker_.mutableCounters().tunnels_idle_closed);
      self->logExchange();
      self->close();
      return;
    }
    case State::kLingering: self->close(); return;
    case State::kHttp2:  // the session keeps its own timers
    case State::kConnecting:
    case State::kClosed: return;
  }
}

void ClientConnection::close() {
  if (state_ == State::kClosed) return;
  releaseRouteCounts();
  state_ = State::kClosed;
  // The session lets go of its streams' upstreams now; it is deleted with
  // this connection (not here: this may run inside one of its callbacks).
  if (http2_) http2_->abandon();
  if (splice_) {
    // Its poll handles stop watching the descriptors before they close.
    splice_->close();
    splice_ = nullptr;
  }
  if (upstream_) {
    UpstreamExchange* upstream = upstream_;
    upstream_ = nullptr;
    upstream->setOwner(nullptr);
    upstream->close();
  }
  writes_.discard();
  timer_.clear();
  worker_.removeConnection(this);
  uv_close(reinterpret_cast<uv_handle_t*>(&socket_), &ClientConnection::onClosed);
  timer_.stop();
  uv_close(timer_.handle(), &ClientConnection::onClosed);
}

void ClientConnection::onClosed(uv_handle_t* handle) {
  auto* self = static_cast<ClientConnection*>(handle->data);
  if (--self->open_handles_ == 0) delete self;
}

}  // namespace spacegate
