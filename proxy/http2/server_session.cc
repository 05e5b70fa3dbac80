#include "http2/server_session.h"

#include <algorithm>

#include "common/log.h"
#include "http2/server_stream.h"
#include "server/worker.h"

namespace spacegate {

namespace {

Http2ServerSession* sessionOf(void* user_data) {
  return static_cast<Http2ServerSession*>(user_data);
}

Http2Stream* streamOf(nghttp2_session* session, int32_t stream_id) {
  return static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
}

// The connection's receive window: large, so that one stalled stream (whose
// bytes wait upstream) does not hold up the others; each stream's own
// window bounds what it can pile up.
constexpr int32_t kConnectionWindow = 16 * 1024 * 1024;

}  // namespace

Http2ServerSession::Http2ServerSession(Worker& worker, Http2Transport& transport)
    : worker_(worker),
      transport_(transport),
      limits_(worker.http2Limits()),
      sent_resets_(limits_.stream_reset_burst, limits_.stream_reset_rate),
      received_resets_(limits_.stream_reset_burst, limits_.stream_reset_rate) {}

Http2ServerSession::~Http2ServerSession() {
  abandon();
  reap();
  for (Http2Stream* stream : streams_) delete stream;
  if (session_) nghttp2_session_del(session_);
  for (uv_timer_t* timer : {housekeeping_timer_, reap_timer_}) {
    if (!timer) continue;
    uv_close(reinterpret_cast<uv_handle_t*>(timer),
             [](uv_handle_t* handle) { delete reinterpret_cast<uv_timer_t*>(handle); });
  }
}

bool Http2ServerSession::start() {
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_send_callback(callbacks, &Http2ServerSession::onSend);
  nghttp2_session_callbacks_set_send_data_callback(callbacks, &Http2ServerSession::onSendData);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks,
                                                          &Http2ServerSession::onBeginHeaders);
  // Once nghttp2 has queued a GOAWAY of its own (its Rapid Reset limit) it
  // would go on with the rest of the read, and a later error there would
  // send a second GOAWAY naming later streams (RFC 9113 6.8 forbids the
  // rise): the next frame stops the read instead.
  nghttp2_session_callbacks_set_on_begin_frame_callback(
      callbacks, [](nghttp2_session*, const nghttp2_frame_hd*, void* user_data) {
        return sessionOf(user_data)->cut_off_ ? static_cast<int>(NGHTTP2_ERR_CALLBACK_FAILURE) : 0;
      });
  nghttp2_session_callbacks_set_on_header_callback(callbacks, &Http2ServerSession::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks,
                                                       &Http2ServerSession::onFrameReceived);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks,
                                                            &Http2ServerSession::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks,
                                                         &Http2ServerSession::onStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &Http2ServerSession::onFrameSent);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks,
                                                               &Http2ServerSession::onInvalidFrame);
  // A field nghttp2 finds invalid (CR, LF or NUL in a value, upper case in a
  // name, a connection-specific field): reset the stream rather than drop
  // the field and forward the rest, which would hide a smuggling attempt.
  nghttp2_session_callbacks_set_on_invalid_header_callback(
      callbacks,
      [](nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t, const uint8_t*, size_t,
         uint8_t, void*) { return static_cast<int>(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE); });

  nghttp2_option* option = nullptr;
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_option_set_max_continuations(option, limits_.max_continuations);
  nghttp2_option_set_max_settings(option, limits_.max_settings);
  nghttp2_option_set_max_outbound_ack(option, limits_.max_outbound_ack);
  // The gateway's own count of the client's resets (received_resets_) cuts
  // a Rapid Reset off first, and stops the read there; nghttp2's limit, at
  // twice the budget, stays as a second line.
  nghttp2_option_set_stream_reset_rate_limit(option, uint64_t{limits_.stream_reset_burst} * 2,
                                             uint64_t{limits_.stream_reset_rate} * 2);
  // Closed streams are not kept for priority bookkeeping (memory per reset).
  nghttp2_option_set_no_closed_streams(option, 1);
  int result = nghttp2_session_server_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  if (result != 0) return false;

  const Limits& limits = worker_.limits();
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits.header_block_size},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                          sizeof settings / sizeof settings[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);

  housekeeping_timer_ = new uv_timer_t;
  uv_timer_init(worker_.loop(), housekeeping_timer_);
  housekeeping_timer_->data = this;
  reap_timer_ = new uv_timer_t;
  uv_timer_init(worker_.loop(), reap_timer_);
  reap_timer_->data = this;
  last_activity_ms_ = uv_now(worker_.loop());
  armHousekeeping();
  WorkerCounters::add(worker_.mutableCounters().http2_connections);
  return true;
}

bool Http2ServerSession::receive(const SlabRef& slab, const char* data, size_t size) {
  if (ended_ || abandoned_) return false;
  if (!nghttp2_session_want_read(session_)) {
    // GOAWAY queued: nothing more from this client is read.
    flush();
    return !ended_;
  }
  last_activity_ms_ = uv_now(worker_.loop());
  input_slab_ = &slab;
  input_begin_ = data;
  input_end_ = data + size;
  ssize_t result = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), size);
  input_slab_ = nullptr;
  input_begin_ = input_end_ = nullptr;
  if (abandoned_) return false;
  if (result < 0 && cut_off_) {
    // The read stopped at cutOff: its GOAWAY goes out, then the close.
    terminate(NGHTTP2_ENHANCE_YOUR_CALM, "cut off");
    return false;
  }
  if (result < 0) {
    // Fatal for the connection: a protocol error, a flood nghttp2 caught
    // (NGHTTP2_ERR_FLOODED), too many CONTINUATIONs, a bad preface.
    bool flood = result == NGHTTP2_ERR_FLOODED || result == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ||
                 result == NGHTTP2_ERR_TOO_MANY_SETTINGS;
    terminate(flood ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR,
              nghttp2_strerror(static_cast<int>(result)));
    return false;
  }
  flush();
  reap();
  return !ended_;
}

void Http2ServerSession::flush() {
  if (!session_ || abandoned_ || flush_scheduled_) return;
  // Once per loop iteration: the responses and frames of one iteration
  // leave in one write (fewer TLS records and syscalls than a write each).
  flush_scheduled_ = true;
  worker_.scheduleFlush(this);
}

void Http2ServerSession::flushNow() {
  flush_scheduled_ = false;
  if (!session_ || abandoned_ || flushing_) return;
  if (transport_.clientQueuedBytes() > worker_.limits().write_high_water) {
    // The client is not taking what was sent: frames wait inside nghttp2
    // (where max_outbound_ack bounds the control frames of a flood).
    write_blocked_ = true;
    return;
  }
  write_blocked_ = false;
  flushing_ = true;
  int result = nghttp2_session_send(session_);
  flushing_ = false;
  if (abandoned_) return;
  transport_.submitClientWrite();
  if (abandoned_) return;
  if (result != 0) {
    terminate(NGHTTP2_INTERNAL_ERROR, nghttp2_strerror(result));
    return;
  }
  endIfDone();
}

void Http2ServerSession::endIfDone() {
  if (ended_ || abandoned_) return;
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    ended_ = true;
    transport_.closeAfterSessionEnd();
  }
}

void Http2ServerSession::onTransportDrained() {
  if (write_blocked_ && transport_.clientQueuedBytes() <= worker_.limits().write_low_water) {
    flushNow();
    reap();
  }
}

void Http2ServerSession::terminate(uint32_t error_code, const char* reason) {
  if (ended_ || abandoned_) return;
  // A GOAWAY already queued (by nghttp2, or by cutOff) stays the only one:
  // a second would name a later last stream (RFC 9113 6.8).
  bool goaway_queued = cut_off_ || !nghttp2_session_want_read(session_);
  logEvent(LogLevel::kInfo, "HTTP/2 connection ended by the gateway")
      .with("client", transport_.clientIp())
      .with("reason", reason)
      .emit();
  if (!goaway_queued) nghttp2_session_terminate_session(session_, error_code);
  // The GOAWAY goes out if the socket takes it; the client is cut either way.
  flushing_ = true;
  nghttp2_session_send(session_);
  flushing_ = false;
  if (abandoned_) return;
  ended_ = true;
  transport_.submitClientWrite();
  if (abandoned_) return;
  transport_.closeAfterSessionEnd();
}

void Http2ServerSession::cutOff(const char* reason) {
  if (cut_off_ || ended_ || abandoned_) return;
  cut_off_ = true;  // no further frame of this client is processed
  going_away_ = true;
  logEvent(LogLevel::kInfo, reason).with("client", transport_.clientIp()).emit();
  nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
}

void Http2ServerSession::shutdownGracefully() {
  if (going_away_ || ended_ || abandoned_ || !session_) return;
  going_away_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  flushNow();
  if (streams_.empty() && !ended_ && !abandoned_) {
    ended_ = true;
    transport_.closeAfterSessionEnd();
  }
}

void Http2ServerSession::closeStreamsOfRoutes(const std::vector<RoutePtr>& routes) {
  std::vector<Http2Stream*> streams = streams_;
  for (Http2Stream* stream : streams) {
    for (const RoutePtr& retired : routes) {
      if (stream->route() == retired.get()) {
        stream->resetForRouteUpdate();
        break;
      }
    }
  }
  flush();
}

void Http2ServerSession::abandon() {
  if (abandoned_) return;
  abandoned_ = true;
  if (flush_scheduled_) worker_.cancelFlush(this);
  flush_scheduled_ = false;
  for (Http2Stream* stream : streams_) stream->abandon();
  if (housekeeping_timer_) uv_timer_stop(housekeeping_timer_);
  if (reap_timer_) uv_timer_stop(reap_timer_);
}

void Http2ServerSession::retire(Http2Stream* stream) {
  auto found = std::find(streams_.begin(), streams_.end(), stream);
  if (found != streams_.end()) streams_.erase(found);
  retired_.push_back(stream);
  if (!abandoned_ && reap_timer_) uv_timer_start(reap_timer_, &Http2ServerSession::onReap, 0, 0);
}

void Http2ServerSession::onReap(uv_timer_t* timer) {
  auto* self = static_cast<Http2ServerSession*>(timer->data);
  self->reap();
  if (self->going_away_ && self->streams_.empty() && !self->ended_ && !self->abandoned_) {
    self->ended_ = true;
    self->transport_.closeAfterSessionEnd();
  }
}

void Http2ServerSession::reap() {
  if (flushing_) return;
  std::vector<Http2Stream*> retired;
  retired.swap(retired_);
  for (Http2Stream* stream : retired) delete stream;
}

void Http2ServerSession::resetStream(int32_t stream_id, uint32_t error_code, bool client_caused) {
  if (!session_ || ended_ || abandoned_) return;
  if (!client_caused) uncounted_resets_.push_back(stream_id);
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

void Http2ServerSession::consume(int32_t stream_id, size_t size) {
  if (!session_ || size == 0 || abandoned_) return;
  if (stream_id == 0 || nghttp2_session_find_stream(session_, stream_id) == nullptr) {
    nghttp2_session_consume_connection(session_, size);
  } else {
    nghttp2_session_consume(session_, stream_id, size);
  }
}

void Http2ServerSession::armHousekeeping() {
  uint64_t period =
      std::min<uint64_t>(1000, std::max<uint64_t>(limits_.zero_window_timeout_ms / 4, 50));
  uv_timer_start(housekeeping_timer_, &Http2ServerSession::onHousekeeping, period, period);
}

void Http2ServerSession::onHousekeeping(uv_timer_t* timer) {
  auto* self = static_cast<Http2ServerSession*>(timer->data);
  if (self->abandoned_ || self->ended_) return;
  uint64_t now = uv_now(self->worker_.loop());
  if (self->streams_.empty() &&
      now - self->last_activity_ms_ >= self->worker_.limits().keepalive_idle_timeout_ms) {
    // Idle: GOAWAY(NO_ERROR) and close.
    self->shutdownGracefully();
    return;
  }
  if (!self->streams_.empty()) self->last_activity_ms_ = now;
  self->checkStalledStreams(now);
  if (self->abandoned_ || self->ended_) return;
  std::vector<Http2Stream*> streams = self->streams_;
  for (Http2Stream* stream : streams) stream->checkDeadlines(now);
  self->flush();
}

void Http2ServerSession::checkStalledStreams(uint64_t now_ms) {
  bool connection_window_closed = nghttp2_session_get_remote_window_size(session_) <= 0;
  std::vector<Http2Stream*> streams = streams_;
  bool reset_any = false;
  for (Http2Stream* stream : streams) {
    bool stalled = stream->waitingOnWindow() &&
                   (connection_window_closed ||
                    nghttp2_session_get_stream_remote_window_size(session_, stream->id()) <= 0);
    if (!stalled) {
      stream->stalled_since_ms = 0;
      continue;
    }
    if (stream->stalled_since_ms == 0) {
      stream->stalled_since_ms = now_ms;
      continue;
    }
    if (now_ms - stream->stalled_since_ms >= limits_.zero_window_timeout_ms) {
      // The client holds the response at a zero window: give up the stream
      // (and its upstream) rather than hold them for ever.
      logEvent(LogLevel::kInfo, "HTTP/2 stream reset: zero window for too long")
          .with("client", transport_.clientIp())
          .with("stream", static_cast<uint64_t>(stream->id()))
          .emit();
      resetStream(stream->id(), NGHTTP2_CANCEL);
      reset_any = true;
    }
  }
  if (reset_any) flush();
}

// --- nghttp2 callbacks -------------------------------------------------------

ssize_t Http2ServerSession::onSend(nghttp2_session*, const uint8_t* data, size_t length, int,
                                   void* user_data) {
  Http2ServerSession* self = sessionOf(user_data);
  self->transport_.prepareClientWrite().appendGenerated(
      std::string_view(reinterpret_cast<const char*>(data), length));
  return static_cast<ssize_t>(length);
}

int Http2ServerSession::onSendData(nghttp2_session*, nghttp2_frame* frame,
                                   const uint8_t* frame_head, size_t length,
                                   nghttp2_data_source* source, void*) {
  auto* stream = static_cast<Http2Stream*>(source->ptr);
  (void)frame;
  stream->sendResponseData(frame_head, length);
  return 0;
}

int Http2ServerSession::onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame,
                                       void* user_data) {
  Http2ServerSession* self = sessionOf(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (self->going_away_) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  // nghttp2 has queued a GOAWAY of its own (its Rapid Reset limit) but goes
  // on with the rest of the read: streams past it are not begun, so none
  // is answered or forwarded after the client was told it was not.
  if (!nghttp2_session_want_read(session)) return 0;
  auto* stream = new Http2Stream(*self, frame->hd.stream_id);
  self->streams_.push_back(stream);
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, stream);
  WorkerCounters::add(self->worker_.mutableCounters().http2_streams);
  return 0;
}

int Http2ServerSession::onHeader(nghttp2_session* session, const nghttp2_frame* frame,
                                 const uint8_t* name, size_t name_length, const uint8_t* value,
                                 size_t value_length, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Http2Stream* stream = streamOf(session, frame->hd.stream_id);
  if (!stream) return 0;
  return stream->onHeader(std::string_view(reinterpret_cast<const char*>(name), name_length),
                          std::string_view(reinterpret_cast<const char*>(value), value_length),
                          frame->headers.cat == NGHTTP2_HCAT_HEADERS);
}

int Http2ServerSession::onFrameReceived(nghttp2_session* session, const nghttp2_frame* frame,
                                        void* user_data) {
  Http2ServerSession* self = sessionOf(user_data);
  if (frame->hd.type == NGHTTP2_RST_STREAM &&
      !self->received_resets_.spend(uv_now(self->worker_.loop()))) {
    // Rapid Reset (CVE-2023-44487): the client makes the gateway start and
    // drop work faster than the budget allows.
    self->cutOff("HTTP/2 connection ended: too many stream resets from the client");
    return 0;
  }
  Http2Stream* stream = frame->hd.stream_id ? streamOf(session, frame->hd.stream_id) : nullptr;
  if (!stream) return 0;
  bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        stream->onHeadersComplete(end_stream);
      } else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && end_stream) {
        stream->onTrailersComplete();
      }
      break;
    case NGHTTP2_DATA:
      if (end_stream) stream->onRequestEnd();
      break;
    default: break;
  }
  return 0;
}

int Http2ServerSession::onDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                                    const uint8_t* data, size_t length, void* user_data) {
  Http2ServerSession* self = sessionOf(user_data);
  Http2Stream* stream = streamOf(session, stream_id);
  if (!stream) {
    // A stream already answered or reset: its bytes still count against the
    // connection window.
    nghttp2_session_consume_connection(session, length);
    return 0;
  }
  const char* bytes = reinterpret_cast<const char*>(data);
  bool inside_input = bytes >= self->input_begin_ && bytes + length <= self->input_end_;
  stream->onData(inside_input ? self->input_slab_ : nullptr, bytes, length);
  return 0;
}

int Http2ServerSession::onStreamClose(nghttp2_session* session, int32_t stream_id,
                                      uint32_t error_code, void* user_data) {
  Http2ServerSession* self = sessionOf(user_data);
  Http2Stream* stream = streamOf(session, stream_id);
  if (!stream) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
  stream->onClosed(error_code);
  self->retire(stream);
  return 0;
}

int Http2ServerSession::onFrameSent(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  Http2ServerSession* self = sessionOf(user_data);
  WorkerCounters& counters = self->worker_.mutableCounters();
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    if (Http2Stream* stream = streamOf(self->session_, frame->hd.stream_id)) {
      stream->onResponseSent();
    }
  }
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    WorkerCounters::add(counters.http2_goaway_sent);
    // Cut off for abuse: the gateway's limits (ENHANCE_YOUR_CALM) or
    // nghttp2's Rapid Reset limit (INTERNAL_ERROR).
    uint32_t code = frame->goaway.error_code;
    if (code == NGHTTP2_ENHANCE_YOUR_CALM || code == NGHTTP2_INTERNAL_ERROR) {
      WorkerCounters::add(counters.http2_flood_closes);
    }
  } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
    WorkerCounters::add(counters.http2_streams_reset);
    // Resets the gateway sends on the client's account (MadeYouReset).
    auto uncounted = std::find(self->uncounted_resets_.begin(), self->uncounted_resets_.end(),
                               frame->hd.stream_id);
    if (uncounted != self->uncounted_resets_.end()) {
      self->uncounted_resets_.erase(uncounted);
    } else if (!self->sent_resets_.spend(uv_now(self->worker_.loop())) && !self->ended_) {
      self->cutOff("HTTP/2 connection ended: too many stream resets caused by the client");
    }
  }
  return 0;
}

int Http2ServerSession::onInvalidFrame(nghttp2_session*, const nghttp2_frame*, int, void*) {
  // nghttp2 answers invalid frames itself (RST_STREAM or GOAWAY); those
  // resets are counted in onFrameSent.
  return 0;
}

}  // namespace spacegate
