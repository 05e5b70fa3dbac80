#include "http2/client_session.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "common/log.h"
#include "http/header_rewrite.h"
#include "upstream/upstream_pool.h"

namespace spacegate {

namespace {

// The request fields as HTTP/2 fields: lower-case names, without those
// HTTP/2 forbids (RFC 9113 8.2.2) or carries as pseudo-header fields.
class Http2FieldCollector : public UpstreamFieldSink {
 public:
  void field(const HeaderField& header) override { add(header.name, header.value); }
  void generated(std::string_view name, std::string_view value) override { add(name, value); }
  std::vector<std::pair<std::string, std::string>> fields;

 private:
  void add(std::string_view name, std::string_view value) {
    std::string lower = toLowerAscii(name);
    if (lower == "host" || lower == "connection" || lower == "transfer-encoding" ||
        lower == "upgrade" || lower == "keep-alive" || lower == "proxy-connection") {
      return;
    }
    if (lower == "te" && value != "trailers") return;
    fields.emplace_back(std::move(lower), std::string(value));
  }
};

uint64_t nowMs(uv_loop_t* loop) {
  return uv_now(loop);
}

}  // namespace

// --- Http2UpstreamStream -----------------------------------------------------

Http2UpstreamStream::Http2UpstreamStream(Http2UpstreamSession& session, Owner* owner, bool reused)
    : session_(session), owner_(owner), reused_(reused) {}

void Http2UpstreamStream::writeRequestHead(const RequestHead& request,
                                           const UpstreamRequestContext& context) {
  Http2FieldCollector collector;
  forEachUpstreamRequestField(request, context, collector);
  std::string_view path = context.rewritten_path.empty() ? request.path : context.rewritten_path;
  std::vector<nghttp2_nv> fields = {
      http2Field(":method", request.method_name), http2Field(":scheme", "http"),
      http2Field(":authority", request.host), http2Field(":path", path)};
  for (const auto& [name, value] : collector.fields) fields.push_back(http2Field(name, value));
  bool has_body = request.framing != BodyFraming::kNone;
  request_ended_ = !has_body;
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = [](nghttp2_session*, int32_t, uint8_t*, size_t length,
                              uint32_t* data_flags, nghttp2_data_source* source, void*) -> ssize_t {
    return static_cast<Http2UpstreamStream*>(source->ptr)->readRequest(length, data_flags);
  };
  id_ = nghttp2_submit_request(session_.session(), nullptr, fields.data(), fields.size(),
                               has_body ? &provider : nullptr, this);
  if (id_ < 0) {
    closed_ = true;
    fail(UpstreamError::kClosedEarly);
  }
}

void Http2UpstreamStream::writeRequestBody(const BufferSlice& slice) {
  if (closed_ || slice.size == 0) return;
  body_queued_ += slice.size;
  body_.push_back(slice);
  // The owner stops reading its client above the high-water mark; it hears
  // onUpstreamDrained once the upstream's window has taken the bytes.
  if (queuedBytes() >= session_.limits().write_high_water) drain_wanted_ = true;
  nghttp2_session_resume_data(session_.session(), id_);
}

void Http2UpstreamStream::writeRequestEnd(const TrailerFields& trailers) {
  if (closed_ || request_ended_) return;
  request_ended_ = true;
  request_trailers_ = trailers;
  nghttp2_session_resume_data(session_.session(), id_);
}

void Http2UpstreamStream::submitWrite() {
  session_.flush();
}

void Http2UpstreamStream::requestFullySent() {
  if (!response_complete_) {
    response_deadline_ms_ =
        nowMs(session_.pool().loop()) + session_.limits().upstream_response_timeout_ms;
  }
}

size_t Http2UpstreamStream::queuedBytes() const {
  return body_queued_ + session_.transportQueuedBytes();
}

void Http2UpstreamStream::pauseReading() {
  paused_ = true;
}

void Http2UpstreamStream::resumeReading() {
  if (!paused_) return;
  paused_ = false;
  std::deque<BufferSlice> held;
  held.swap(held_);
  for (BufferSlice& slice : held) {
    if (paused_ || released_) {
      held_.push_back(std::move(slice));
      continue;
    }
    deliver(std::move(slice));
  }
  if (!paused_ && !released_ && response_complete_ && held_.empty() && owner_) {
    Owner* owner = owner_;
    owner->onUpstreamResponseComplete(response_trailers_);
  }
  session_.flush();
}

ssize_t Http2UpstreamStream::readRequest(size_t length, uint32_t* data_flags) {
  if (body_queued_ == 0) {
    if (!request_ended_) return NGHTTP2_ERR_DEFERRED;
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!request_trailers_.empty()) {
      std::vector<std::string> names;
      std::vector<nghttp2_nv> fields;
      names.reserve(request_trailers_.size());
      for (const auto& [name, value] : request_trailers_) names.push_back(toLowerAscii(name));
      for (size_t i = 0; i < names.size(); ++i) {
        fields.push_back(http2Field(names[i], request_trailers_[i].second));
      }
      if (nghttp2_submit_trailer(session_.session(), id_, fields.data(), fields.size()) == 0) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    }
    return 0;
  }
  size_t size = std::min(length, body_queued_);
  *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (request_ended_ && size == body_queued_ && request_trailers_.empty()) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return static_cast<ssize_t>(size);
}

int Http2UpstreamStream::onHeader(std::string_view name, std::string_view value) {
  const Limits& limits = session_.limits();
  if (fields_.size() + name.size() + value.size() + 4 > limits.header_block_size ||
      fields_.count() + response_trailers_.size() >= limits.header_field_count) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // the stream is reset: a 502
  }
  response_byte_seen_ = true;
  if (in_trailers_) {
    if (!name.empty() && name.front() == ':') return 0;
    response_trailers_.emplace_back(std::string(name), std::string(value));
    return 0;
  }
  if (name == ":status") {
    int status = 0;
    auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), status);
    if (error != std::errc() || end != value.data() + value.size() || status < 100 ||
        status > 999) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    status_ = status;
    return 0;
  }
  if (!name.empty() && name.front() == ':') return 0;
  if (name == "content-length") has_content_length_ = true;
  fields_.add(name, value);
  return 0;
}

void Http2UpstreamStream::onHeadersComplete(bool end_stream, bool trailers) {
  if (trailers) {
    if (end_stream) onEndStream();
    return;
  }
  if (response_deadline_ms_ != 0) {
    response_deadline_ms_ =
        nowMs(session_.pool().loop()) + session_.limits().upstream_response_timeout_ms;
  }
  bool interim = status_ >= 100 && status_ < 200;
  bool no_body = method_ == HTTP_HEAD || status_ == 204 || status_ == 304 || interim;
  // A response that ends with its head and says no length: say 0, or an
  // HTTP/1.1 client would wait for the close.
  if (end_stream && !no_body && !has_content_length_) {
    fields_.add("content-length", "0");
    has_content_length_ = true;
  }
  char status_text[4];
  std::to_chars(status_text, status_text + 3, status_);
  std::string first_line =
      "HTTP/1.1 " + std::string(status_text, 3) + " " + std::string(statusReason(status_)) + "\r\n";
  BufferPool& buffers = session_.pool().buffers();
  size_t size = first_line.size() + fields_.size();
  SlabRef slab =
      size > BufferPool::kStandardSize ? buffers.acquireLarge() : buffers.acquireStandard();
  if (size > slab.capacity()) {
    nghttp2_submit_rst_stream(session_.session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
    return;
  }
  std::memcpy(slab.data(), first_line.data(), first_line.size());
  ResponseHead response;
  response.version_major = 1;
  response.version_minor = 1;
  response.status = static_cast<uint16_t>(status_);
  response.reason = statusReason(status_);
  response.raw_first_line = std::string_view(slab.data(), first_line.size());
  response.keep_alive = true;
  fields_.layOut(slab.data() + first_line.size(), response.headers);
  if (no_body) {
    response.framing = BodyFraming::kNone;
  } else if (has_content_length_) {
    response.framing = BodyFraming::kContentLength;
    const HeaderField* length = findHeader(response.headers, "content-length");
    uint64_t value = 0;
    if (length)
      std::from_chars(length->value.data(), length->value.data() + length->value.size(), value);
    response.content_length = value;
  } else {
    // No length: the client side frames it (chunked, or DATA until the end).
    response.framing = BodyFraming::kChunked;
  }
  response.storage = std::move(slab);
  fields_.clear();
  has_content_length_ = false;
  if (interim) {
    status_ = 0;
  } else {
    in_trailers_ = true;  // a later HEADERS carries trailers
  }
  if (owner_ && !released_) owner_->onUpstreamResponseHead(response);
  if (end_stream && !interim) onEndStream();
}

void Http2UpstreamStream::onData(const SlabRef* slab, const char* data, size_t size) {
  response_byte_seen_ = true;
  if (response_deadline_ms_ != 0) {
    response_deadline_ms_ =
        nowMs(session_.pool().loop()) + session_.limits().upstream_response_timeout_ms;
  }
  BufferSlice slice;
  if (slab) {
    slice = BufferSlice{*slab, data, size};
  } else {
    BufferPool& buffers = session_.pool().buffers();
    SlabRef copy =
        size > BufferPool::kStandardSize ? buffers.acquireLarge() : buffers.acquireStandard();
    std::memcpy(copy.data(), data, size);
    slice = BufferSlice{copy, copy.data(), size};
  }
  if (released_) {
    nghttp2_session_consume(session_.session(), id_, size);
    return;
  }
  if (paused_ || !held_.empty()) {
    held_.push_back(std::move(slice));
    return;
  }
  deliver(std::move(slice));
}

void Http2UpstreamStream::deliver(BufferSlice slice) {
  size_t size = slice.size;
  if (owner_) owner_->onUpstreamResponseBody(std::move(slice));
  // The window opens as the client side takes the bytes.
  if (!closed_) nghttp2_session_consume(session_.session(), id_, size);
}

void Http2UpstreamStream::onEndStream() {
  response_complete_ = true;
  response_deadline_ms_ = 0;
  if (released_ || paused_ || !held_.empty() || !owner_) return;
  owner_->onUpstreamResponseComplete(response_trailers_);
}

void Http2UpstreamStream::onClosed(uint32_t error_code) {
  closed_ = true;
  if (released_ || response_complete_) return;
  if (error_code == NGHTTP2_REFUSED_STREAM && !response_byte_seen_) {
    // Never processed by the upstream (RFC 9113 8.7): safe to retry.
    fail(UpstreamError::kClosedEarly);
    return;
  }
  fail(UpstreamError::kClosedEarly);
}

void Http2UpstreamStream::fail(UpstreamError error) {
  if (released_) return;
  Owner* owner = owner_;
  owner_ = nullptr;
  released_ = true;  // a failed exchange is not the owner's to use again
  if (owner) owner->onUpstreamFailed(*this, error, response_byte_seen_);
}

void Http2UpstreamStream::close() {
  release();
}

void Http2UpstreamStream::release() {
  owner_ = nullptr;
  if (released_ && closed_) {
    session_.forget(this);
    return;
  }
  released_ = true;
  if (!closed_ && id_ >= 0) {
    // Unfinished on either side: the upstream can stop working on it.
    if (!response_complete_ || !request_ended_) {
      nghttp2_submit_rst_stream(session_.session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
      session_.flush();
    }
    return;
  }
  closed_ = true;
  session_.forget(this);
}

// --- Http2UpstreamSession ----------------------------------------------------

Http2UpstreamSession::Http2UpstreamSession(UpstreamPool& pool, std::string key,
                                           const Limits& limits)
    : pool_(pool), key_(std::move(key)), limits_(limits) {}

Http2UpstreamSession::~Http2UpstreamSession() {
  for (Http2UpstreamStream* stream : retired_) delete stream;
  for (Http2UpstreamStream* stream : streams_) delete stream;
  if (session_) nghttp2_session_del(session_);
}

void Http2UpstreamSession::start(const SocketAddress& address) {
  housekeeping_timer_ = new uv_timer_t;
  uv_timer_init(pool_.loop(), housekeeping_timer_);
  housekeeping_timer_->data = this;
  uv_timer_start(housekeeping_timer_, &Http2UpstreamSession::onHousekeeping, 1000, 1000);
  reap_timer_ = new uv_timer_t;
  uv_timer_init(pool_.loop(), reap_timer_);
  reap_timer_->data = this;
  connection_ = pool_.connectRaw(address, key_, this);
}

bool Http2UpstreamSession::acceptsStreams() const {
  if (failed_ || going_away_) return false;
  if (!ready_) return waiting_.size() < 100;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) >
         streams_.size();
}

Http2UpstreamStream* Http2UpstreamSession::openStream(Owner* owner) {
  auto* stream = new Http2UpstreamStream(*this, owner, streams_opened_ > 0);
  ++streams_opened_;
  streams_.push_back(stream);
  idle_since_ms_ = 0;
  if (failed_) {
    stream->closed_ = true;
    stream->fail(UpstreamError::kConnectFailed);
    return stream;
  }
  if (!ready_) {
    waiting_.push_back(stream);
    return stream;
  }
  owner->onUpstreamReady(*stream);
  return stream;
}

size_t Http2UpstreamSession::transportQueuedBytes() const {
  return connection_ ? connection_->queuedBytes() : 0;
}

void Http2UpstreamSession::forget(Http2UpstreamStream* stream) {
  auto found = std::find(streams_.begin(), streams_.end(), stream);
  if (found == streams_.end()) return;
  streams_.erase(found);
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), stream), waiting_.end());
  // Deleted later, never inside a call that may still be using it.
  retired_.push_back(stream);
  if (reap_timer_) uv_timer_start(reap_timer_, &Http2UpstreamSession::onReap, 0, 0);
  if (streams_.empty()) idle_since_ms_ = nowMs(pool_.loop());
}

void Http2UpstreamSession::onReap(uv_timer_t* timer) {
  auto* self = static_cast<Http2UpstreamSession*>(timer->data);
  std::vector<Http2UpstreamStream*> retired;
  retired.swap(self->retired_);
  for (Http2UpstreamStream* stream : retired) delete stream;
  self->maybeRetire();
}

void Http2UpstreamSession::onUpstreamReady(UpstreamExchange&) {
  // The connection is a raw byte pipe from here.
  connection_->becomeTunnel();
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_send_callback(callbacks, &Http2UpstreamSession::onSend);
  nghttp2_session_callbacks_set_send_data_callback(callbacks, &Http2UpstreamSession::onSendData);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, &Http2UpstreamSession::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks,
                                                       &Http2UpstreamSession::onFrameReceived);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks,
                                                            &Http2UpstreamSession::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                         &Http2UpstreamSession::onStreamClose);
  nghttp2_option* option = nullptr;
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_max_continuations(option, 8);
  nghttp2_option_set_max_settings(option, 32);
  nghttp2_session_client_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.write_high_water},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.header_block_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                          sizeof settings / sizeof settings[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
  ready_ = true;
  std::vector<Http2UpstreamStream*> waiting;
  waiting.swap(waiting_);
  for (Http2UpstreamStream* stream : waiting) {
    if (stream->released_ || !stream->owner_) continue;
    stream->owner_->onUpstreamReady(*stream);
  }
  flush();
}

void Http2UpstreamSession::onUpstreamFailed(UpstreamExchange&, UpstreamError error, bool) {
  connection_ = nullptr;  // it closes itself
  failAll(error);
}

void Http2UpstreamSession::failAll(UpstreamError error) {
  failed_ = true;
  std::vector<Http2UpstreamStream*> streams = streams_;
  for (Http2UpstreamStream* stream : streams) {
    stream->closed_ = true;
    stream->response_deadline_ms_ = 0;
    if (!stream->released_) {
      stream->fail(error);
    }
  }
  // Every stream has been let go of: the pool forgets them with the session.
  for (Http2UpstreamStream* stream : std::vector<Http2UpstreamStream*>(streams_)) {
    if (stream->released_) forget(stream);
  }
  maybeRetire();
}

void Http2UpstreamSession::close() {
  if (connection_) {
    UpstreamConnection* connection = connection_;
    connection_ = nullptr;
    connection->setOwner(nullptr);
    connection->close();
  }
  failAll(UpstreamError::kClosedEarly);
}

void Http2UpstreamSession::maybeRetire() {
  if (!streams_.empty() || !failed_ || !housekeeping_timer_) return;
  pool_.forgetSession(this);
  uv_timer_stop(housekeeping_timer_);
  uv_timer_stop(reap_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(reap_timer_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_timer_t*>(handle); });
  reap_timer_ = nullptr;
  uv_timer_t* timer = housekeeping_timer_;
  housekeeping_timer_ = nullptr;
  // Deleted once the timer handle is closed: never inside a callback of its own.
  uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* handle) {
    delete static_cast<Http2UpstreamSession*>(handle->data);
    delete reinterpret_cast<uv_timer_t*>(handle);
  });
}

void Http2UpstreamSession::flush() {
  if (!session_ || !connection_ || flushing_ || failed_) return;
  flushing_ = true;
  int result = nghttp2_session_send(session_);
  flushing_ = false;
  if (connection_) connection_->submitWrite();
  if (result != 0) {
    logEvent(LogLevel::kWarning, "h2c upstream session failed")
        .with("upstream", key_)
        .with("error", nghttp2_strerror(result))
        .emit();
    close();
  }
}

void Http2UpstreamSession::onUpstreamTunnelData(BufferSlice slice) {
  if (!session_ || failed_) return;
  input_slab_ = &slice.slab;
  input_begin_ = slice.data;
  input_end_ = slice.data + slice.size;
  ssize_t result =
      nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(slice.data), slice.size);
  input_slab_ = nullptr;
  input_begin_ = input_end_ = nullptr;
  if (result < 0) {
    logEvent(LogLevel::kWarning, "h2c upstream sent an invalid frame stream")
        .with("upstream", key_)
        .with("error", nghttp2_strerror(static_cast<int>(result)))
        .emit();
    close();
  }
}

void Http2UpstreamSession::onUpstreamTunnelEnd(bool) {
  if (connection_) {
    UpstreamConnection* connection = connection_;
    connection_ = nullptr;
    connection->setOwner(nullptr);
    connection->close();
  }
  failAll(UpstreamError::kClosedEarly);
}

void Http2UpstreamSession::onUpstreamReadDone() {
  flush();
  std::vector<Http2UpstreamStream*> streams = streams_;
  for (Http2UpstreamStream* stream : streams) {
    if (!stream->released_ && stream->owner_) stream->owner_->onUpstreamReadDone();
  }
  notifyDrained();
}

void Http2UpstreamSession::onUpstreamDrained() {
  flush();
  notifyDrained();
}

void Http2UpstreamSession::notifyDrained() {
  std::vector<Http2UpstreamStream*> streams = streams_;
  for (Http2UpstreamStream* stream : streams) {
    if (stream->drain_wanted_ && !stream->released_ && stream->owner_ &&
        stream->queuedBytes() <= limits_.write_low_water) {
      stream->drain_wanted_ = false;
      stream->owner_->onUpstreamDrained();
    }
  }
}

void Http2UpstreamSession::onHousekeeping(uv_timer_t* timer) {
  auto* self = static_cast<Http2UpstreamSession*>(timer->data);
  uint64_t now = nowMs(self->pool_.loop());
  std::vector<Http2UpstreamStream*> streams = self->streams_;
  for (Http2UpstreamStream* stream : streams) {
    if (stream->response_deadline_ms_ != 0 && now >= stream->response_deadline_ms_ &&
        !stream->released_) {
      stream->response_deadline_ms_ = 0;
      if (stream->id_ >= 0 && !stream->closed_) {
        nghttp2_submit_rst_stream(self->session_, NGHTTP2_FLAG_NONE, stream->id_, NGHTTP2_CANCEL);
      }
      stream->fail(UpstreamError::kResponseTimeout);
    }
  }
  self->flush();
  if (self->streams_.empty() && self->idle_since_ms_ != 0 &&
      now - self->idle_since_ms_ >= self->pool_.idleTimeoutMs()) {
    // Idle past the pool's idle timeout: close it like an idle connection.
    if (self->session_ && self->connection_) {
      nghttp2_session_terminate_session(self->session_, NGHTTP2_NO_ERROR);
      self->flush();
    }
    self->close();
  }
}

ssize_t Http2UpstreamSession::onSend(nghttp2_session*, const uint8_t* data, size_t length, int,
                                     void* user) {
  auto* self = static_cast<Http2UpstreamSession*>(user);
  if (!self->connection_) return NGHTTP2_ERR_CALLBACK_FAILURE;
  self->connection_->prepareWrite().appendGenerated(
      std::string_view(reinterpret_cast<const char*>(data), length));
  return static_cast<ssize_t>(length);
}

int Http2UpstreamSession::onSendData(nghttp2_session*, nghttp2_frame*, const uint8_t* frame_head,
                                     size_t length, nghttp2_data_source* source, void* user) {
  auto* self = static_cast<Http2UpstreamSession*>(user);
  auto* stream = static_cast<Http2UpstreamStream*>(source->ptr);
  if (!self->connection_) return NGHTTP2_ERR_CALLBACK_FAILURE;
  OutboundWrite& write = self->connection_->prepareWrite();
  write.appendGenerated(std::string_view(reinterpret_cast<const char*>(frame_head), 9));
  stream->body_queued_ -= length;
  while (length > 0 && !stream->body_.empty()) {
    BufferSlice& front = stream->body_.front();
    size_t take = std::min(length, front.size);
    write.hold(front.slab);
    write.appendView(front.data, take);
    length -= take;
    if (take == front.size) {
      stream->body_.pop_front();
    } else {
      front.data += take;
      front.size -= take;
    }
  }
  return 0;
}

int Http2UpstreamSession::onHeader(nghttp2_session* session, const nghttp2_frame* frame,
                                   const uint8_t* name, size_t name_length, const uint8_t* value,
                                   size_t value_length, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto* stream = static_cast<Http2UpstreamStream*>(
      nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (!stream) return 0;
  return stream->onHeader(std::string_view(reinterpret_cast<const char*>(name), name_length),
                          std::string_view(reinterpret_cast<const char*>(value), value_length));
}

int Http2UpstreamSession::onFrameReceived(nghttp2_session* session, const nghttp2_frame* frame,
                                          void* user) {
  auto* self = static_cast<Http2UpstreamSession*>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    // No new streams here; those above last_stream_id are closed by nghttp2.
    self->going_away_ = true;
    return 0;
  }
  if (frame->hd.stream_id == 0) return 0;
  auto* stream = static_cast<Http2UpstreamStream*>(
      nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (!stream) return 0;
  bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  if (frame->hd.type == NGHTTP2_HEADERS) {
    stream->onHeadersComplete(end_stream,
                              frame->headers.cat == NGHTTP2_HCAT_HEADERS && stream->in_trailers_);
  } else if (frame->hd.type == NGHTTP2_DATA && end_stream) {
    stream->onEndStream();
  }
  return 0;
}

int Http2UpstreamSession::onDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                                      const uint8_t* data, size_t length, void* user) {
  auto* self = static_cast<Http2UpstreamSession*>(user);
  auto* stream =
      static_cast<Http2UpstreamStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (!stream) {
    nghttp2_session_consume_connection(session, length);
    return 0;
  }
  const char* bytes = reinterpret_cast<const char*>(data);
  bool inside = bytes >= self->input_begin_ && bytes + length <= self->input_end_;
  stream->onData(inside ? self->input_slab_ : nullptr, bytes, length);
  return 0;
}

int Http2UpstreamSession::onStreamClose(nghttp2_session* session, int32_t stream_id,
                                        uint32_t error_code, void* user) {
  auto* self = static_cast<Http2UpstreamSession*>(user);
  auto* stream =
      static_cast<Http2UpstreamStream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (!stream) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
  stream->onClosed(error_code);
  if (stream->released_) self->forget(stream);
  return 0;
}

}  // namespace spacegate
