#include "http2/server_stream.h"

#include <llhttp.h>
#include <openssl/rand.h>

#include <charconv>
#include <cstring>
#include <string_view>
#include <unordered_map>

#include "auth/base64url.h"
#include "http/header_rewrite.h"
#include "http2/server_session.h"
#include "server/exchange_routing.h"
#include "server/worker.h"

namespace spacegate {

namespace {

// llhttp's method numbers by name, for the RequestHead the HTTP/1 codec makes.
bool methodNumber(std::string_view name, uint8_t& number) {
  static const std::unordered_map<std::string_view, uint8_t> methods = [] {
    std::unordered_map<std::string_view, uint8_t> table;
#define SPACEGATE_METHOD_ENTRY(number, name, text) table.emplace(#text, number);
    HTTP_ALL_METHOD_MAP(SPACEGATE_METHOD_ENTRY)
#undef SPACEGATE_METHOD_ENTRY
    return table;
  }();
  auto found = methods.find(name);
  if (found == methods.end()) return false;
  number = found->second;
  return true;
}

// Response fields that belong to one HTTP/1.1 hop and are not valid in
// HTTP/2 (RFC 9113 8.2.2).
bool isConnectionSpecific(std::string_view name) {
  for (std::string_view hop : {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                               "upgrade", "te", "trailer"}) {
    if (equalsIgnoringCase(name, hop)) return true;
  }
  return false;
}

double secondsBetween(uint64_t from_ns, uint64_t to_ns) {
  return from_ns && to_ns >= from_ns ? static_cast<double>(to_ns - from_ns) / 1e9 : -1;
}

ssize_t readResponseCallback(nghttp2_session*, int32_t, uint8_t*, size_t length,
                             uint32_t* data_flags, nghttp2_data_source* source, void*) {
  return static_cast<Http2Stream*>(source->ptr)->readResponse(length, data_flags);
}

}  // namespace

Http2Stream::Http2Stream(Http2ServerSession& session, int32_t id) : session_(session), id_(id) {}

Http2Stream::~Http2Stream() {
  abandon();
}

int Http2Stream::onHeader(std::string_view name, std::string_view value, bool trailer) {
  if (header_error_) return 0;  // answered at the end of the block; the rest is ignored
  const Limits& limits = session_.worker().limits();
  // Counted as HPACK counts a table entry (RFC 7541 4.1): an HPACK bomb of
  // tiny indexed fields, or one big entry referenced again and again, runs
  // into the same bounds as an HTTP/1.1 head. Each cookie crumb counts.
  header_bytes_ += name.size() + value.size() + 32;
  ++field_count_;
  if (header_bytes_ > limits.header_block_size) {
    header_error_ = 431;
    header_error_reason_ = "request header block too large";
    return 0;
  }
  if (field_count_ > limits.header_field_count) {
    header_error_ = 431;
    header_error_reason_ = "too many header fields";
    return 0;
  }
  if (trailer) {
    if (!name.empty() && name.front() == ':') return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    request_trailers_.emplace_back(std::string(name), std::string(value));
    return 0;
  }
  if (!name.empty() && name.front() == ':') {
    if (name == ":method") {
      method_.assign(value);
    } else if (name == ":scheme") {
      scheme_.assign(value);
    } else if (name == ":authority") {
      authority_.assign(value);
    } else if (name == ":path") {
      path_.assign(value);
    } else if (name == ":protocol") {
      protocol_.assign(value);
    }
    return 0;
  }
  if (name == "cookie") {
    if (!cookie_.empty()) cookie_.append("; ");
    cookie_.append(value);
    return 0;
  }
  if (name == "content-length") has_content_length_ = true;
  fields_.add(name, value);
  return 0;
}

void Http2Stream::onHeadersComplete(bool end_stream) {
  start_ns_ = uv_hrtime();
  last_activity_ms_ = uv_now(session_.worker().loop());
  request_ended_ = end_stream;
  if (header_error_) {
    respondLocally(header_error_, header_error_reason_, header_error_reason_);
    return;
  }
  if (!buildRequest()) return;
  beginExchange();
}

bool Http2Stream::buildRequest() {
  const Limits& limits = session_.worker().limits();
  request_.version_major = 2;
  request_.version_minor = 0;
  if (method_ == "CONNECT") {
    if (protocol_ != "websocket") {
      // Plain CONNECT tunnels (SSH) go over HTTP/1.1 (docs/tunnels.md).
      respondLocally(501, "CONNECT over HTTP/2 carries only WebSockets (:protocol websocket)",
                     "unsupported CONNECT");
      return false;
    }
    websocket_ = true;
    method_ = "GET";
  } else if (!protocol_.empty()) {
    respondLocally(400, ":protocol is only valid with CONNECT", "bad pseudo-header");
    return false;
  }
  if (method_.empty() || path_.empty() || (path_.front() != '/' && path_ != "*")) {
    respondLocally(400, "missing or invalid :method or :path", "bad pseudo-header");
    return false;
  }
  if (!methodNumber(method_, request_.method)) {
    respondLocally(501, "unknown method", "unknown method");
    return false;
  }
  // The head the HTTP/1.1 codec would have made: "name: value\r\n" lines in
  // a slab, with the fields HTTP/2 carries elsewhere added back.
  // :authority is the request's host (RFC 9113 8.3.1): a Host field that
  // says otherwise must not reach the upstream, which would route by it.
  if (!authority_.empty()) fields_.remove("host");
  if (!authority_.empty()) fields_.add("host", authority_);
  if (!cookie_.empty()) fields_.add("cookie", cookie_);
  if (websocket_) {
    // RFC 8441 drops the HTTP/1.1 handshake fields; the upstream needs them.
    uint8_t nonce[16];
    RAND_bytes(nonce, sizeof nonce);
    fields_.add("upgrade", "websocket");
    fields_.add("sec-websocket-key",
                base64Encode(std::string_view(reinterpret_cast<char*>(nonce), sizeof nonce), true));
  }
  size_t size = method_.size() + path_.size() + fields_.size();
  if (size > limits.header_block_size) {
    respondLocally(431, "request header block too large", "request header block too large");
    return false;
  }
  BufferPool& buffers = session_.worker().buffers();
  SlabRef slab =
      size > BufferPool::kStandardSize ? buffers.acquireLarge() : buffers.acquireStandard();
  char* bytes = slab.data();
  std::memcpy(bytes, method_.data(), method_.size());
  request_.method_name = std::string_view(bytes, method_.size());
  bytes += method_.size();
  std::memcpy(bytes, path_.data(), path_.size());
  request_.target = request_.path = std::string_view(bytes, path_.size());
  bytes += path_.size();
  fields_.layOut(bytes, request_.headers);
  request_.storage = std::move(slab);
  fields_.clear();
  cookie_ = std::string();
  const HeaderField* host = findHeader(request_.headers, "host");
  request_.host = !authority_.empty() ? std::string_view(authority_)
                  : host              ? host->value
                                      : std::string_view();
  request_.keep_alive = true;
  request_.upgrade = websocket_;
  if (websocket_) {
    request_.framing = BodyFraming::kNone;
  } else if (has_content_length_) {
    const HeaderField* length = findHeader(request_.headers, "content-length");
    uint64_t value = 0;
    auto [end, error] =
        std::from_chars(length->value.data(), length->value.data() + length->value.size(), value);
    if (error != std::errc() || end != length->value.data() + length->value.size()) {
      respondLocally(400, "invalid content-length", "bad content-length");
      return false;
    }
    request_.framing =
        value == 0 && request_ended_ ? BodyFraming::kNone : BodyFraming::kContentLength;
    request_.content_length = value;
  } else {
    // No length: the body (if any) goes upstream chunked.
    request_.framing = request_ended_ ? BodyFraming::kNone : BodyFraming::kChunked;
  }
  return true;
}

void Http2Stream::beginExchange() {
  Worker& worker = session_.worker();
  routes_ = worker.routes();
  std::string_view client_request_id = acceptableRequestId(request_);
  if (client_request_id.empty()) {
    worker.newRequestId(request_id_);
  } else {
    request_id_.assign(client_request_id);
  }
  if (request_.path.starts_with("/.spacegate/tunnel/")) {
    // The gateway's own path, never forwarded; its WebSocket tunnels are
    // HTTP/1.1 upgrades (docs/tunnels.md).
    respondLocally(501, "the tunnel endpoint takes an HTTP/1.1 WebSocket upgrade",
                   "tunnel endpoint over HTTP/2");
    return;
  }
  ExchangeDecision decision =
      decideExchange(worker, *routes_, request_, session_.transport().transportIsTls());
  route_ = decision.route;
  if (decision.kind == ExchangeDecision::Kind::kLocalResponse) {
    respondLocally(decision.status, decision.detail, decision.error, decision.fields);
    return;
  }
  drop_authorization_ = decision.drop_authorization;
  strip_cookie_ = decision.strip_cookie;
  rewritten_path_ = std::move(decision.rewritten_path);
  route_->stats->open_connections.fetch_add(1, std::memory_order_relaxed);
  route_open_counted_ = true;
  route_->stats->touch(worker.nowUnixMs());
  upstream_start_ns_ = uv_hrtime();
  UpstreamExchange* connection =
      worker.upstreams().acquire(route_->upstream, route_->poolKey(), this, /*fresh=*/false,
                                 route_->upstream_tls ? &route_->upstream_tls_options : nullptr,
                                 route_->protocol == UpstreamProtocol::kH2c && !websocket_);
  // Still connecting: held so that a reset or a close can let it go.
  if (!upstream_ && !response_started_ && connection && connection->owner() == this &&
      !connection->closing()) {
    upstream_ = connection;
  }
}

void Http2Stream::onUpstreamReady(UpstreamExchange& connection) {
  upstream_ = &connection;
  upstream_ready_ = true;
  connection.startExchange(request_.method);
  Worker& worker = session_.worker();
  UpstreamRequestContext context;
  context.client_ip = session_.transport().clientIp();
  context.scheme = session_.transport().transportIsTls() ? "https" : "http";
  context.request_id = request_id_;
  context.rewritten_path = rewritten_path_;
  context.chunked_body = request_.framing == BodyFraming::kChunked;
  context.drop_authorization = drop_authorization_;
  if (strip_cookie_) context.remove_cookie = worker.authConfig().cookie_name;
  connection.writeRequestHead(request_, context);
  std::vector<BufferSlice> pending;
  pending.swap(pending_body_);
  for (BufferSlice& slice : pending) sendBodyUpstream(std::move(slice));
  if (upstream_ != &connection) return;
  if (request_ended_ && !websocket_) finishRequestUpstream();
  connection.submitWrite();
  if (upstream_ != &connection) return;
  consumeWritten();
  if (request_ended_ && !websocket_) {
    request_sent_ = true;
    connection.requestFullySent();
  }
}

void Http2Stream::sendBodyUpstream(BufferSlice slice) {
  if (!upstream_ready_ || !upstream_) {
    pending_body_.push_back(std::move(slice));
    return;
  }
  upstream_->writeRequestBody(slice);
}

void Http2Stream::finishRequestUpstream() {
  if (!upstream_ || request_.framing == BodyFraming::kNone) return;
  upstream_->writeRequestEnd(request_trailers_);
}

void Http2Stream::consumeWritten() {
  if (!upstream_ || unconsumed_ == 0) return;
  if (upstream_->queuedBytes() >= session_.worker().limits().write_high_water) return;
  session_.consume(id_, unconsumed_);
  unconsumed_ = 0;
}

void Http2Stream::onData(const SlabRef* slab, const char* data, size_t size) {
  bytes_in_ += size;
  last_activity_ms_ = uv_now(session_.worker().loop());
  // A WebSocket's traffic keeps its Gitspace active while it lasts.
  if (tunnel_ && route_) route_->stats->touch(session_.worker().nowUnixMs());
  const Limits& limits = session_.worker().limits();
  if (response_complete_ && !upstream_) {
    // Answered already (an error, or a local response): the rest is dropped.
    session_.consume(id_, size);
    return;
  }
  if (!tunnel_ && limits.request_body_size != 0 && bytes_in_ > limits.request_body_size) {
    session_.consume(id_, size);
    if (!response_started_) {
      respondLocally(413, "request body too large", "request body too large");
    } else {
      error_ = "request body too large";
      session_.resetStream(id_, NGHTTP2_CANCEL);
    }
    return;
  }
  BufferSlice slice;
  if (slab) {
    slice = BufferSlice{*slab, data, size};
  } else {
    BufferPool& buffers = session_.worker().buffers();
    SlabRef copy =
        size > BufferPool::kStandardSize ? buffers.acquireLarge() : buffers.acquireStandard();
    std::memcpy(copy.data(), data, size);
    slice = BufferSlice{copy, copy.data(), size};
  }
  unconsumed_ += size;
  if (tunnel_) {
    if (!upstream_) return;
    upstream_->connection()->prepareWrite().appendSlice(slice);
    upstream_->submitWrite();
    consumeWritten();
    return;
  }
  bool ready = upstream_ready_ && upstream_;
  sendBodyUpstream(std::move(slice));
  if (ready && upstream_) {
    upstream_->submitWrite();
    consumeWritten();
  }
}

void Http2Stream::onTrailersComplete() {
  onRequestEnd();
}

void Http2Stream::onRequestEnd() {
  request_ended_ = true;
  if (tunnel_) {
    // The client closed its side of the WebSocket stream.
    if (upstream_ && upstream_->connection()) upstream_->connection()->shutdownWrite();
    return;
  }
  if (response_complete_ && !upstream_) return;
  // Not yet connected: onUpstreamReady finishes the request.
  if (!upstream_ || !upstream_ready_ || request_sent_) return;
  if (websocket_) return;
  finishRequestUpstream();
  upstream_->submitWrite();
  if (!upstream_) return;
  request_sent_ = true;
  upstream_->requestFullySent();
}

void Http2Stream::onUpstreamDrained() {
  consumeWritten();
  session_.flush();
}

void Http2Stream::onUpstreamFailed(UpstreamExchange& exchange, UpstreamError error,
                                   bool response_byte_seen) {
  upstream_ = nullptr;
  upstream_ready_ = false;
  if (closed_ || abandoned_) return;
  // A pooled connection the upstream closed just as the request went out:
  // once more on a new one, for a request without a body that may repeat.
  if (error == UpstreamError::kClosedEarly && !response_byte_seen && !response_started_ &&
      exchange.reused() && !retried_ && isIdempotentMethod(request_.method) &&
      request_.framing == BodyFraming::kNone && route_) {
    retried_ = true;
    UpstreamExchange* retry = session_.worker().upstreams().acquire(
        route_->upstream, route_->poolKey(), this, /*fresh=*/true,
        route_->upstream_tls ? &route_->upstream_tls_options : nullptr,
        route_->protocol == UpstreamProtocol::kH2c && !websocket_);
    if (!upstream_ && !response_started_ && retry && retry->owner() == this && !retry->closing()) {
      upstream_ = retry;
    }
    return;
  }
  error_ = upstreamErrorName(error);
  if (!response_started_) {
    respondLocally(upstreamErrorStatus(error), upstreamErrorDetail(error),
                   upstreamErrorName(error));
  } else {
    session_.resetStream(id_, NGHTTP2_INTERNAL_ERROR, /*client_caused=*/false);
  }
  session_.flush();
}

void Http2Stream::onUpstreamResponseHead(ResponseHead& head) {
  if (upstream_head_ns_ == 0) upstream_head_ns_ = uv_hrtime();
  if (head.status >= 100 && head.status < 200 && head.status != 101) return;
  std::vector<nghttp2_nv> fields;
  std::vector<std::string> names;  // lower-cased copies the fields point into
  char status_text[4];
  std::to_chars(status_text, status_text + 3, head.status == 101 ? 200 : head.status);
  fields.push_back(http2Field(":status", std::string_view(status_text, 3)));
  if (head.status == 101) {
    if (!websocket_ || !upstream_ || !upstream_->connection()) {
      UpstreamExchange* upstream = upstream_;
      upstream_ = nullptr;
      if (upstream) upstream->close();
      respondLocally(502, "upstream switched protocols unasked", "101 without an upgrade request");
      return;
    }
    // RFC 8441: the stream is the WebSocket now; 200 tells the client so.
    tunnel_ = true;
    status_ = 200;
    response_started_ = true;
    for (const HeaderField& header : head.headers) {
      if (equalsIgnoringCase(header.name, "sec-websocket-protocol") ||
          equalsIgnoringCase(header.name, "sec-websocket-extensions")) {
        names.push_back(toLowerAscii(header.name));
      }
    }
    size_t index = 0;
    for (const HeaderField& header : head.headers) {
      if (equalsIgnoringCase(header.name, "sec-websocket-protocol") ||
          equalsIgnoringCase(header.name, "sec-websocket-extensions")) {
        fields.push_back(http2Field(names[index++], header.value));
      }
    }
    submitResponse(fields, true);
    WorkerCounters::add(session_.worker().mutableCounters().tunnels_opened);
    WorkerCounters::add(session_.worker().mutableCounters().tunnels_open, 1);
    tunnel_idle_timeout_ms_ = route_->tunnel_idle_timeout_ms
                                  ? route_->tunnel_idle_timeout_ms
                                  : session_.worker().limits().tunnel_idle_timeout_ms;
    if (!upstream_) return;
    upstream_->connection()->becomeTunnel();
    if (!upstream_) return;
    upstream_->connection()->releaseTunnelBuffers();
    return;
  }
  status_ = head.status;
  response_started_ = true;
  std::vector<const HeaderField*> forwarded = endToEndResponseFields(head);
  names.reserve(forwarded.size());
  for (const HeaderField* header : forwarded) names.push_back(toLowerAscii(header->name));
  for (size_t i = 0; i < forwarded.size(); ++i) {
    // "Trailer" announces HTTP/1.1 trailers; HTTP/2 sends them as HEADERS.
    if (names[i] == "trailer") continue;
    fields.push_back(http2Field(names[i], forwarded[i]->value));
  }
  bool no_body = request_.method == HTTP_HEAD || head.status == 204 || head.status == 304 ||
                 (head.framing == BodyFraming::kContentLength && head.content_length == 0) ||
                 head.framing == BodyFraming::kNone;
  submitResponse(fields, !no_body);
}

void Http2Stream::submitResponse(const std::vector<nghttp2_nv>& fields, bool has_body) {
  if (closed_ || abandoned_) return;
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = &readResponseCallback;
  int result = nghttp2_submit_response(session_.session(), id_, fields.data(), fields.size(),
                                       has_body ? &provider : nullptr);
  if (result != 0) session_.resetStream(id_, NGHTTP2_INTERNAL_ERROR);
}

void Http2Stream::queueResponseBytes(BufferSlice slice) {
  if (closed_ || abandoned_ || slice.size == 0) return;
  response_queued_ += slice.size;
  response_.push_back(std::move(slice));
  nghttp2_session_resume_data(session_.session(), id_);
  if (response_queued_ > session_.worker().limits().write_high_water && upstream_ &&
      !upstream_paused_) {
    // The client's window (or its socket) is slower than the upstream.
    upstream_paused_ = true;
    upstream_->pauseReading();
  }
}

void Http2Stream::onUpstreamResponseBody(BufferSlice slice) {
  queueResponseBytes(std::move(slice));
}

void Http2Stream::onUpstreamTunnelData(BufferSlice slice) {
  queueResponseBytes(std::move(slice));
}

void Http2Stream::onUpstreamTunnelEnd(bool error) {
  if (error) {
    error_ = "upstream failed in tunnel";
    UpstreamExchange* upstream = upstream_;
    upstream_ = nullptr;
    if (upstream) {
      upstream->setOwner(nullptr);
      upstream->close();
    }
    session_.resetStream(id_, NGHTTP2_CANCEL, /*client_caused=*/false);
    session_.flush();
    return;
  }
  response_complete_ = true;
  if (!closed_ && !abandoned_) nghttp2_session_resume_data(session_.session(), id_);
  session_.flush();
}

void Http2Stream::onUpstreamResponseComplete(const TrailerFields& trailers) {
  response_complete_ = true;
  response_trailers_ = trailers;
  releaseUpstream(request_sent_);
  if (!closed_ && !abandoned_) nghttp2_session_resume_data(session_.session(), id_);
  session_.flush();
}

void Http2Stream::onUpstreamReadDone() {
  session_.flush();
}

void Http2Stream::releaseUpstream(bool reusable) {
  UpstreamExchange* upstream = upstream_;
  upstream_ = nullptr;
  upstream_paused_ = false;
  if (!upstream) return;
  if (upstream->owner() != this) return;
  session_.worker().upstreams().release(upstream, reusable && !websocket_);
}

ssize_t Http2Stream::readResponse(size_t length, uint32_t* data_flags) {
  if (response_queued_ == 0) {
    if (!response_complete_) return NGHTTP2_ERR_DEFERRED;
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!response_trailers_.empty()) {
      std::vector<std::string> names;
      names.reserve(response_trailers_.size());
      std::vector<nghttp2_nv> fields;
      for (const auto& [name, value] : response_trailers_) names.push_back(toLowerAscii(name));
      for (size_t i = 0; i < response_trailers_.size(); ++i) {
        if (isConnectionSpecific(names[i])) continue;
        fields.push_back(http2Field(names[i], response_trailers_[i].second));
      }
      if (!fields.empty() &&
          nghttp2_submit_trailer(session_.session(), id_, fields.data(), fields.size()) == 0) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    }
    return 0;
  }
  size_t size = std::min(length, response_queued_);
  *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (response_complete_ && size == response_queued_ && response_trailers_.empty()) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return static_cast<ssize_t>(size);
}

void Http2Stream::sendResponseData(const uint8_t* frame_head, size_t length) {
  OutboundWrite& write = session_.transport().prepareClientWrite();
  write.appendGenerated(std::string_view(reinterpret_cast<const char*>(frame_head), 9));
  bytes_out_ += length;
  last_activity_ms_ = uv_now(session_.worker().loop());
  if (tunnel_ && route_) route_->stats->touch(session_.worker().nowUnixMs());
  response_queued_ -= length;
  while (length > 0 && !response_.empty()) {
    BufferSlice& front = response_.front();
    size_t take = std::min(length, front.size);
    write.hold(front.slab);
    write.appendView(front.data, take);
    length -= take;
    if (take == front.size) {
      response_.pop_front();
    } else {
      front.data += take;
      front.size -= take;
    }
  }
  if (upstream_paused_ && upstream_ &&
      response_queued_ <= session_.worker().limits().write_low_water) {
    upstream_paused_ = false;
    upstream_->resumeReading();
  }
}

void Http2Stream::respondLocally(int status, std::string_view detail, const char* error,
                                 const std::vector<std::pair<std::string, std::string>>& extra) {
  if (closed_ || abandoned_) return;
  if (upstream_) {
    UpstreamExchange* upstream = upstream_;
    upstream_ = nullptr;
    upstream->setOwner(nullptr);
    upstream->close();
  }
  status_ = status;
  error_ = error;
  response_started_ = true;
  response_complete_ = true;
  if (request_id_.empty()) session_.worker().newRequestId(request_id_);
  char code[4];
  std::to_chars(code, code + 3, status);
  std::string body(code, 3);
  body.append(" ").append(statusReason(status));
  if (!detail.empty()) body.append(": ").append(detail);
  body.append("\n");
  std::string length = std::to_string(body.size());
  std::vector<std::string> names;
  names.reserve(extra.size());
  for (const auto& [name, value] : extra) names.push_back(toLowerAscii(name));
  std::vector<nghttp2_nv> fields = {http2Field(":status", std::string_view(code, 3)),
                                    http2Field("content-type", "text/plain; charset=utf-8"),
                                    http2Field("content-length", length),
                                    http2Field("x-request-id", request_id_)};
  for (size_t i = 0; i < extra.size(); ++i) fields.push_back(http2Field(names[i], extra[i].second));
  BufferPool& buffers = session_.worker().buffers();
  if (method_ == "HEAD") {
    // The body's length, not the body (RFC 9110 9.3.2).
    submitResponse(fields, false);
    return;
  }
  SlabRef slab = buffers.acquireStandard();
  size_t size = std::min<size_t>(body.size(), slab.capacity());
  std::memcpy(slab.data(), body.data(), size);
  response_queued_ += size;
  response_.push_back(BufferSlice{slab, slab.data(), size});
  submitResponse(fields, true);
}

void Http2Stream::onResponseSent() {
  // The client is still sending a body nobody will read: stop it once the
  // whole response is out (RFC 9113 8.1), not before (a reset would discard
  // the response still queued).
  if (!request_ended_ && !tunnel_ && !closed_ && !abandoned_) {
    session_.resetStream(id_, NGHTTP2_NO_ERROR);
  }
}

void Http2Stream::onClosed(uint32_t error_code) {
  if (closed_) return;
  closed_ = true;
  if (error_code != NGHTTP2_NO_ERROR && !response_complete_) {
    if (!*error_) error_ = "stream reset";
    if (status_ == 0) status_ = 499;
  }
  if (upstream_) {
    UpstreamExchange* upstream = upstream_;
    upstream_ = nullptr;
    upstream->setOwner(nullptr);
    upstream->close();
  }
  // Request bytes still counted against the connection's window.
  if (unconsumed_ > 0) session_.consume(0, unconsumed_);
  unconsumed_ = 0;
  logExchange();
}

void Http2Stream::abandon() {
  if (abandoned_) return;
  abandoned_ = true;
  if (upstream_) {
    UpstreamExchange* upstream = upstream_;
    upstream_ = nullptr;
    upstream->setOwner(nullptr);
    upstream->close();
  }
  if (!closed_ && !response_complete_) {
    if (!*error_) error_ = "connection closed";
    if (status_ == 0) status_ = 499;
  }
  logExchange();
}

void Http2Stream::checkDeadlines(uint64_t now_ms) {
  if (closed_ || abandoned_ || start_ns_ == 0) return;
  uint64_t quiet = now_ms - last_activity_ms_;
  if (tunnel_) {
    if (quiet >= tunnel_idle_timeout_ms_) {
      error_ = "tunnel idle timeout";
      WorkerCounters::add(session_.worker().mutableCounters().tunnels_idle_closed);
      session_.resetStream(id_, NGHTTP2_CANCEL, /*client_caused=*/false);
    }
    return;
  }
  // A request body that stops arriving (the HTTP/1.1 path's client body
  // timeout): the stream and its upstream are given up.
  if (!request_ended_ && !response_complete_ &&
      quiet >= session_.worker().limits().client_body_timeout_ms) {
    if (!response_started_) {
      respondLocally(408, "request body not received in time", "request body timeout");
    } else {
      error_ = "request body timeout";
      session_.resetStream(id_, NGHTTP2_CANCEL);
    }
  }
}

void Http2Stream::resetForRouteUpdate() {
  WorkerCounters::add(session_.worker().mutableCounters().connections_closed_by_route_update);
  error_ = "route retired";
  session_.resetStream(id_, NGHTTP2_CANCEL, /*client_caused=*/false);
}

void Http2Stream::logExchange() {
  if (logged_ || start_ns_ == 0) return;
  logged_ = true;
  Worker& worker = session_.worker();
  if (route_open_counted_) {
    route_->stats->open_connections.fetch_sub(1, std::memory_order_relaxed);
    route_open_counted_ = false;
  }
  WorkerCounters& counters = worker.mutableCounters();
  WorkerCounters::add(counters.bytes_in, bytes_in_);
  WorkerCounters::add(counters.bytes_out, bytes_out_);
  if (route_) {
    route_->stats->bytes_in.fetch_add(bytes_in_, std::memory_order_relaxed);
    route_->stats->bytes_out.fetch_add(bytes_out_, std::memory_order_relaxed);
    route_->stats->touch(worker.nowUnixMs());
  }
  if (tunnel_) {
    WorkerCounters::add(counters.tunnels_closed);
    WorkerCounters::add(counters.tunnels_open, -1);
  }
  AccessLogEntry entry;
  entry.request_id = request_id_;
  entry.worker = worker.index();
  entry.client = session_.transport().clientIp();
  entry.method = websocket_ ? std::string_view("CONNECT") : request_.method_name;
  entry.host = request_.host.empty() ? std::string_view(authority_) : request_.host;
  entry.path = request_.path.empty() ? std::string_view(path_) : request_.path;
  entry.protocol = "HTTP/2.0";
  entry.status = status_;
  entry.bytes_in = bytes_in_;
  entry.bytes_out = bytes_out_;
  entry.route = route_ ? std::string_view(route_->id) : std::string_view();
  entry.upstream = route_ ? std::string_view(route_->upstream_text) : std::string_view();
  entry.upstream_time = secondsBetween(upstream_start_ns_, upstream_head_ns_);
  entry.total_time = secondsBetween(start_ns_, uv_hrtime());
  entry.error = error_;
  recordExchange(worker, route_, entry);
}

}  // namespace spacegate
