#include "upstream/upstream_connection.h"

#include <cstring>

#include "common/log.h"
#include "http/header_rewrite.h"
#include "upstream/upstream_pool.h"

namespace spacegate {

const char* upstreamErrorName(UpstreamError error) {
  switch (error) {
    case UpstreamError::kConnectFailed: return "connect_failed";
    case UpstreamError::kConnectTimeout: return "connect_timeout";
    case UpstreamError::kResponseTimeout: return "response_timeout";
    case UpstreamError::kClosedEarly: return "closed_early";
    case UpstreamError::kInvalidResponse: return "invalid_response";
  }
  return "error";
}

int upstreamErrorStatus(UpstreamError error) {
  bool timeout =
      error == UpstreamError::kConnectTimeout || error == UpstreamError::kResponseTimeout;
  return timeout ? 504 : 502;
}

const char* upstreamErrorDetail(UpstreamError error) {
  switch (error) {
    case UpstreamError::kConnectTimeout: return "upstream connect timed out";
    case UpstreamError::kResponseTimeout: return "upstream did not answer in time";
    case UpstreamError::kInvalidResponse: return "upstream sent an invalid response";
    case UpstreamError::kConnectFailed: return "upstream unreachable";
    case UpstreamError::kClosedEarly: return "upstream closed the connection";
  }
  return "upstream failed";
}

UpstreamConnection::UpstreamConnection(UpstreamPool& pool, std::string key, const Limits& limits)
    : pool_(pool),
      key_(std::move(key)),
      limits_(limits),
      inbound_(pool.buffers()),
      writes_(pool.writes(), *this),
      parser_(Http1MessageParser::Type::kResponse, limits) {
  timer_.init(pool_.loop(), this, &UpstreamConnection::onTimer);
  ++open_handles_;
}

void UpstreamConnection::armTimer(uint64_t milliseconds) {
  timer_.set(milliseconds);
}

void UpstreamConnection::start(const SocketAddress& address, const UpstreamTlsOptions* tls) {
  armTimer(limits_.upstream_connect_timeout_ms);
  if (tls) {
    wants_tls_ = true;
    tls_options_ = *tls;
    if (tls_options_.server_name.empty()) tls_options_.server_name = address.host;
  }
  switch (address.kind) {
    case SocketAddress::Kind::kIp: connectTo(address.ip, address.port); return;
    case SocketAddress::Kind::kUnix: {
      state_ = State::kConnecting;
      uv_pipe_init(pool_.loop(), &socket_.pipe, 0);
      socket_.pipe.data = this;
      socket_open_ = true;
      ++open_handles_;
      connect_request_.data = this;
      uv_pipe_connect(&connect_request_, &socket_.pipe, address.path.c_str(),
                      &UpstreamConnection::onConnect);
      return;
    }
    case SocketAddress::Kind::kHostname: {
      state_ = State::kResolving;
      uint16_t port = address.port;
      dns_ticket_ = pool_.dns().resolve(
          address.host, [this, port](int status, const std::vector<sockaddr_storage>& addresses) {
            dns_ticket_ = 0;
            if (state_ != State::kResolving) return;
            if (status != 0 || addresses.empty()) {
              logEvent(LogLevel::kWarning, "upstream name resolution failed")
                  .with("upstream", key_)
                  .with("error", uv_strerror(status))
                  .emit();
              fail(UpstreamError::kConnectFailed);
              return;
            }
            connectTo(addresses.front(), port);
          });
      return;
    }
  }
}

void UpstreamConnection::connectTo(const sockaddr_storage& address, uint16_t port) {
  state_ = State::kConnecting;
  sockaddr_storage target = address;
  if (target.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&target)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&target)->sin6_port = htons(port);
  }
  uv_tcp_init(pool_.loop(), &socket_.tcp);
  socket_.tcp.data = this;
  socket_open_ = true;
  ++open_handles_;
  uv_tcp_nodelay(&socket_.tcp, 1);
  connect_request_.data = this;
  int result =
      uv_tcp_connect(&connect_request_, &socket_.tcp, reinterpret_cast<const sockaddr*>(&target),
                     &UpstreamConnection::onConnect);
  if (result != 0) {
    logEvent(LogLevel::kWarning, "upstream connect failed")
        .with("upstream", key_)
        .with("error", uv_strerror(result))
        .emit();
    fail(UpstreamError::kConnectFailed);
  }
}

void UpstreamConnection::onConnect(uv_connect_t* request, int status) {
  auto* self = static_cast<UpstreamConnection*>(request->data);
  if (self->state_ != State::kConnecting) return;  // closed meanwhile (ECANCELED)
  if (status != 0) {
    logEvent(LogLevel::kWarning, "upstream connect failed")
        .with("upstream", self->key_)
        .with("error", uv_strerror(status))
        .emit();
    self->fail(UpstreamError::kConnectFailed);
    return;
  }
  self->writes_.attach(self->stream());
  if (self->wants_tls_) {
    self->startTls();
    return;
  }
  self->timer_.clear();
  self->state_ = State::kActive;
  self->reading_ = true;
  uv_read_start(self->stream(), &UpstreamConnection::onAllocate, &UpstreamConnection::onRead);
  if (self->owner_) self->owner_->onUpstreamReady(*self);
}

void UpstreamConnection::startTls() {
  std::string error;
  SSL_CTX* context = pool_.tlsContexts().context(tls_options_.ca_file, tls_options_.verify, error);
  if (!context) {
    logEvent(LogLevel::kWarning, "upstream TLS unavailable")
        .with("upstream", key_)
        .with("error", error)
        .emit();
    fail(UpstreamError::kConnectFailed);
    return;
  }
  tls_ = std::make_unique<TlsConnection>(context, tls_options_.server_name, tls_options_.verify);
  writes_.encryptWith(tls_.get(), &pool_.buffers());
  // Still kConnecting, under the connect timer, until the handshake is done.
  reading_ = true;
  uv_read_start(stream(), &UpstreamConnection::onAllocate, &UpstreamConnection::onRead);
  size_t produced = 0;
  tls_->read(nullptr, 0, produced);  // queues the ClientHello
  if (writes_.flushEncryptorOutput() != 0) fail(UpstreamError::kConnectFailed);
}

void UpstreamConnection::handleCipherText(const char* data, size_t size) {
  if (state_ == State::kIdle) {
    // TLS 1.3 sends session tickets after the handshake; anything else on an
    // idle connection (data, an alert, close_notify) ends it.
    tls_->feed(data, size);
    char byte;
    size_t produced = 0;
    TlsConnection::ReadResult result = tls_->read(&byte, 1, produced);
    if (produced > 0 || result != TlsConnection::ReadResult::kWantMore) {
      pool_.forgetIdle(this);
      close();
    }
    return;
  }
  tls_->feed(data, size);
  bool was_connecting = state_ == State::kConnecting;
  size_t plaintext = 0;
  TlsConnection::ReadResult result;
  for (;;) {
    uv_buf_t space = inbound_.prepareRead();
    size_t produced = 0;
    result = tls_->read(space.base, space.len, produced);
    if (produced > 0) {
      inbound_.commit(produced);
      plaintext += produced;
    }
    if (result != TlsConnection::ReadResult::kData || space.len == 0) break;
  }
  if (tls_->pendingOutput() > 0 && writes_.flushEncryptorOutput() != 0) {
    result = TlsConnection::ReadResult::kError;
  }
  if (result == TlsConnection::ReadResult::kError) {
    if (was_connecting) {
      std::string reason = tls_->verifyFailure();
      logEvent(LogLevel::kWarning, "upstream TLS handshake failed")
          .with("upstream", key_)
          .with("error", reason.empty() ? std::string(tls_->failure()) : reason)
          .emit();
      fail(UpstreamError::kConnectFailed);
      return;
    }
    handleEnd(UV_EPROTO);
    return;
  }
  if (was_connecting) {
    if (!tls_->handshakeDone()) {
      if (result == TlsConnection::ReadResult::kClosed) fail(UpstreamError::kConnectFailed);
      return;
    }
    timer_.clear();
    state_ = State::kActive;
    if (owner_) owner_->onUpstreamReady(*this);
    if (state_ == State::kClosed) return;
  }
  if (plaintext > 0) handlePlaintext();
  if (state_ == State::kClosed) return;
  if (result == TlsConnection::ReadResult::kClosed) handleEnd(UV_EOF);
}

void UpstreamConnection::startExchange(uint8_t method) {
  parser_.reset();
  parser_.setRequestMethod(method);
  response_head_seen_ = false;
  response_byte_seen_ = false;
  response_complete_ = false;
  request_sent_ = false;
  read_paused_ = false;
  if (!reading_) {
    reading_ = true;
    uv_read_start(stream(), &UpstreamConnection::onAllocate, &UpstreamConnection::onRead);
  }
  // Until the request is fully sent, the client side's timers govern; a
  // response may still come early (an error before the whole body).
  timer_.clear();
}

void UpstreamConnection::writeRequestHead(const RequestHead& request,
                                          const UpstreamRequestContext& context) {
  chunked_request_ = context.chunked_body;
  writeUpstreamRequestHead(request, context, writes_.prepare());
}

void UpstreamConnection::writeRequestBody(const BufferSlice& slice) {
  OutboundWrite& write = writes_.prepare();
  if (chunked_request_) appendChunkSizeLine(write, slice.size);
  write.appendSlice(slice);
  if (chunked_request_) write.appendGenerated("\r\n");
}

void UpstreamConnection::writeRequestEnd(const TrailerFields& trailers) {
  if (!chunked_request_) return;
  OutboundWrite& write = writes_.prepare();
  write.appendGenerated("0\r\n");
  appendTrailerFields(write, trailers);
  write.appendGenerated("\r\n");
}

void UpstreamConnection::requestFullySent() {
  request_sent_ = true;
  if (!response_complete_ && state_ == State::kActive)
    armTimer(limits_.upstream_response_timeout_ms);
}

void UpstreamConnection::submitWrite() {
  if (state_ == State::kClosed) {
    writes_.discard();
    return;
  }
  int result = writes_.submit();
  if (result != 0) {
    // The socket is gone; the read side reports it too. Fail once.
    fail(UpstreamError::kClosedEarly);
  }
}

void UpstreamConnection::pauseReading() {
  read_paused_ = true;
  if (reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
}

void UpstreamConnection::resumeReading() {
  read_paused_ = false;
  if (!reading_ && (state_ == State::kActive || state_ == State::kTunnel)) {
    reading_ = true;
    uv_read_start(stream(), &UpstreamConnection::onAllocate, &UpstreamConnection::onRead);
    // Bytes already buffered (read before the pause) go out now.
    if (!inbound_.empty()) deliverInput();
  }
}

void UpstreamConnection::becomeTunnel() {
  state_ = State::kTunnel;
  timer_.clear();
  if (!inbound_.empty()) {
    BufferSlice slice = inbound_.slice(inbound_.data(), inbound_.size());
    inbound_.consume(inbound_.size());
    owner_->onUpstreamTunnelData(std::move(slice));
  }
}

int UpstreamConnection::socketDescriptor() {
  uv_os_fd_t fd = -1;
  if (!socket_open_ || uv_fileno(handle(), &fd) != 0) return -1;
  return fd;
}

void UpstreamConnection::releaseTunnelBuffers() {
  head_ = ResponseHead{};
  inbound_.releaseIfEmpty();
}

void UpstreamConnection::shutdownWrite() {
  if (state_ == State::kClosed || !socket_open_) return;
  shutdown_request_.data = this;
  uv_shutdown(&shutdown_request_, stream(), &UpstreamConnection::onShutdown);
}

void UpstreamConnection::onShutdown(uv_shutdown_t*, int) {}

void UpstreamConnection::enterIdle(uint64_t idle_timeout_ms) {
  state_ = State::kIdle;
  inbound_.releaseIfEmpty();
  armTimer(idle_timeout_ms);
  if (!reading_) {
    reading_ = true;
    uv_read_start(stream(), &UpstreamConnection::onAllocate, &UpstreamConnection::onRead);
  }
}

void UpstreamConnection::leaveIdle() {
  state_ = State::kActive;
  timer_.clear();
  ++exchanges_;
}

void UpstreamConnection::onAllocate(uv_handle_t* handle, size_t, uv_buf_t* buffer) {
  auto* self = static_cast<UpstreamConnection*>(handle->data);
  if (self->state_ == State::kIdle) {
    // An idle connection holds no buffer: anything read here ends it.
    *buffer = uv_buf_init(self->pool_.idleScratch(), 64);
    return;
  }
  if (self->tls_) {
    *buffer = uv_buf_init(self->pool_.cipherReadBuffer(), UpstreamPool::kCipherReadBufferSize);
    return;
  }
  *buffer = self->inbound_.prepareRead();
}

void UpstreamConnection::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer) {
  auto* self = static_cast<UpstreamConnection*>(stream->data);
  if (nread == 0) return;
  if (nread > 0 && self->tls_) {
    self->handleCipherText(buffer->base, static_cast<size_t>(nread));
    return;
  }
  if (self->state_ == State::kIdle) {
    // EOF, an error, or unsolicited bytes on an idle connection: close it.
    self->pool_.forgetIdle(self);
    self->close();
    return;
  }
  if (nread < 0) {
    self->handleEnd(nread);
    return;
  }
  self->inbound_.commit(static_cast<size_t>(nread));
  self->handlePlaintext();
}

void UpstreamConnection::handleEnd(ssize_t nread) {
  UpstreamConnection* self = this;
  {
    if (self->state_ == State::kTunnel) {
      Owner* owner = self->owner_;
      self->pauseReading();
      if (owner) owner->onUpstreamTunnelEnd(nread != UV_EOF);
      return;
    }
    if (nread == UV_EOF && self->response_head_seen_ && !self->response_complete_ &&
        self->head_.framing == BodyFraming::kUntilClose) {
      if (self->parser_.finishAtEof(*self)) {
        self->response_complete_ = true;
        self->timer_.clear();
        const auto* trailers = self->completed_trailers_;
        self->completed_trailers_ = nullptr;
        // The upstream closed: never reused, but the response is whole.
        if (self->owner_ && trailers) self->owner_->onUpstreamResponseComplete(*trailers);
        return;
      }
    }
    self->fail(UpstreamError::kClosedEarly);
    return;
  }
}

void UpstreamConnection::handlePlaintext() {
  UpstreamConnection* self = this;
  self->response_byte_seen_ = true;
  if (self->state_ == State::kTunnel) {
    BufferSlice slice = self->inbound_.slice(self->inbound_.data(), self->inbound_.size());
    self->inbound_.consume(self->inbound_.size());
    self->inbound_.releaseIfEmpty();
    Owner* owner = self->owner_;
    owner->onUpstreamTunnelData(std::move(slice));
    if (self->owner_ == owner && owner) owner->onUpstreamReadDone();
    return;
  }
  self->deliverInput();
}

void UpstreamConnection::deliverInput() {
  Owner* owner = owner_;
  processInput();
  // The owner may have handed this connection back (response complete): it
  // flushed its writes then, and is no longer ours to call.
  if (owner && owner_ == owner) owner->onUpstreamReadDone();
}

void UpstreamConnection::processInput() {
  while (state_ == State::kActive && !inbound_.empty() && !read_paused_) {
    if (!response_head_seen_) {
      if (request_sent_) armTimer(limits_.upstream_response_timeout_ms);
      auto status = parser_.parseHead(inbound_.data(), inbound_.size(), head_);
      if (status == Http1MessageParser::HeadStatus::kIncomplete) {
        if (inbound_.full()) {
          logEvent(LogLevel::kWarning, "upstream response head too large")
              .with("upstream", key_)
              .emit();
          fail(UpstreamError::kInvalidResponse);
        }
        return;
      }
      if (status == Http1MessageParser::HeadStatus::kError) {
        logEvent(LogLevel::kWarning, "invalid upstream response")
            .with("upstream", key_)
            .with("reason", parser_.errorReason())
            .emit();
        fail(UpstreamError::kInvalidResponse);
        return;
      }
      head_.storage = inbound_.slab();
      inbound_.consume(parser_.headConsumed());
      bool interim = head_.status >= 100 && head_.status < 200 && head_.status != 101;
      if (!interim) response_head_seen_ = true;
      Owner* owner = owner_;
      owner->onUpstreamResponseHead(head_);
      if (state_ != State::kActive) return;  // closed, or became a tunnel
      if (interim) {
        // The final response follows on the same connection (the parser
        // keeps the request method across the reset).
        parser_.reset();
        continue;
      }
      if (!parser_.expectsBody()) {
        response_complete_ = true;
        timer_.clear();
        static const std::vector<std::pair<std::string, std::string>> kNoTrailers;
        owner_->onUpstreamResponseComplete(kNoTrailers);
        return;
      }
      if (request_sent_) armTimer(limits_.upstream_response_timeout_ms);
      continue;
    }
    auto result = parser_.parseBody(inbound_.data(), inbound_.size(), *this);
    if (state_ == State::kClosed) return;
    if (result.error) {
      fail(UpstreamError::kInvalidResponse);
      return;
    }
    inbound_.consume(result.consumed);
    if (result.complete) {
      response_complete_ = true;
      timer_.clear();
      const auto* trailers = completed_trailers_;
      completed_trailers_ = nullptr;
      if (owner_ && trailers) owner_->onUpstreamResponseComplete(*trailers);
      return;
    }
    if (request_sent_) armTimer(limits_.upstream_response_timeout_ms);
  }
}

void UpstreamConnection::onBodyData(const char* data, size_t size) {
  if (owner_) owner_->onUpstreamResponseBody(inbound_.slice(data, size));
}

void UpstreamConnection::onMessageComplete(
    const std::vector<std::pair<std::string, std::string>>& trailers) {
  // Reported from processInput() once the response's bytes are consumed, so
  // that the owner sees an accurate "nothing unread" when it hands us back.
  completed_trailers_ = &trailers;
}

void UpstreamConnection::onWriteDone(WriteQueue& queue, int status) {
  if (status != 0) {
    if (status != UV_ECANCELED && state_ != State::kClosed) {
      if (state_ == State::kTunnel) {
        Owner* owner = owner_;
        if (owner) owner->onUpstreamTunnelEnd(true);
        return;
      }
      fail(UpstreamError::kClosedEarly);
    }
    return;
  }
  if (owner_ && queue.queuedBytes() <= limits_.write_low_water) owner_->onUpstreamDrained();
}

void UpstreamConnection::onTimer(void* owner) {
  auto* self = static_cast<UpstreamConnection*>(owner);
  switch (self->state_) {
    case State::kResolving:
    case State::kConnecting: self->fail(UpstreamError::kConnectTimeout); break;
    case State::kIdle:
      self->pool_.forgetIdle(self);
      self->close();
      break;
    case State::kActive: self->fail(UpstreamError::kResponseTimeout); break;
    case State::kTunnel:
    case State::kClosed: break;
  }
}

void UpstreamConnection::fail(UpstreamError error) {
  if (state_ == State::kClosed) return;
  Owner* owner = owner_;
  bool byte_seen = response_byte_seen_;
  State previous = state_;
  close();
  if (owner && previous != State::kIdle) owner->onUpstreamFailed(*this, error, byte_seen);
}

void UpstreamConnection::close() {
  if (state_ == State::kClosed) return;
  if (state_ == State::kIdle) pool_.forgetIdle(this);
  state_ = State::kClosed;
  owner_ = nullptr;
  if (dns_ticket_) {
    pool_.dns().cancel(dns_ticket_);
    dns_ticket_ = 0;
  }
  writes_.discard();
  timer_.clear();
  timer_.stop();
  uv_close(timer_.handle(), &UpstreamConnection::onClosed);
  if (socket_open_) uv_close(handle(), &UpstreamConnection::onClosed);
}

void UpstreamConnection::onClosed(uv_handle_t* handle) {
  auto* self = static_cast<UpstreamConnection*>(handle->data);
  if (--self->open_handles_ == 0) {
    self->pool_.connectionDestroyed();
    delete self;
  }
}

}  // namespace spacegate
