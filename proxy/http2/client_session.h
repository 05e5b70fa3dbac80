// Http2UpstreamSession: a multiplexed HTTP/2 connection with prior knowledge
// (h2c) to one upstream of `protocol: h2c` routes, and Http2UpstreamStream,
// one exchange on it. The session rides on an UpstreamConnection used as a
// raw byte pipe (its connect, DNS and timeouts are the HTTP/1.1 pool's);
// nghttp2 does the framing. Streams are UpstreamExchanges: the client side
// (an HTTP/1.1 connection or an HTTP/2 stream) drives them exactly as it
// drives a pooled HTTP/1.1 connection.
//
// Flow control: the request body waits in the stream until the upstream's
// window takes it (queuedBytes() tells the client side to stop reading);
// response DATA is acknowledged (WINDOW_UPDATE) only as the client side
// takes it, so a slow client stalls its stream, not the session.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "config/limits.h"
#include "http2/header_block.h"
#include "net/socket_address.h"
#include "upstream/upstream_connection.h"
#include "upstream/upstream_exchange.h"

namespace spacegate {

class UpstreamPool;
class Http2UpstreamSession;

class Http2UpstreamStream : public UpstreamExchange {
 public:
  Http2UpstreamStream(Http2UpstreamSession& session, Owner* owner, bool reused);

  // UpstreamExchange.
  void setOwner(Owner* owner) override { owner_ = owner; }
  Owner* owner() const override { return owner_; }
  bool reused() const override { return reused_; }
  bool closing() const override { return released_; }
  void close() override;
  void startExchange(uint8_t method) override { method_ = method; }
  void writeRequestHead(const RequestHead& request, const UpstreamRequestContext& context) override;
  void writeRequestBody(const BufferSlice& slice) override;
  void writeRequestEnd(const TrailerFields& trailers) override;
  void submitWrite() override;
  void requestFullySent() override;
  size_t queuedBytes() const override;
  void pauseReading() override;
  void resumeReading() override;

  // The pool hands the stream back (the owner is done with it).
  void release();

 private:
  friend class Http2UpstreamSession;
  // nghttp2 events, through the session.
  int onHeader(std::string_view name, std::string_view value);
  void onHeadersComplete(bool end_stream, bool trailers);
  void onData(const SlabRef* slab, const char* data, size_t size);
  void onEndStream();
  void onClosed(uint32_t error_code);
  void fail(UpstreamError error);
  ssize_t readRequest(size_t length, uint32_t* data_flags);
  void deliver(BufferSlice slice);

  Http2UpstreamSession& session_;
  Owner* owner_;
  bool reused_;
  int32_t id_ = -1;
  uint8_t method_ = 0;
  bool released_ = false;  // the owner let go: no more callbacks
  bool closed_ = false;    // the nghttp2 stream is closed (or never opened)
  // Request side.
  std::deque<BufferSlice> body_;
  size_t body_queued_ = 0;
  bool drain_wanted_ = false;  // the owner waits for onUpstreamDrained
  bool request_ended_ = false;
  TrailerFields request_trailers_;
  uint64_t response_deadline_ms_ = 0;  // 0: not waiting
  // Response side.
  HeaderBlock fields_;
  int status_ = 0;
  bool has_content_length_ = false;
  bool response_byte_seen_ = false;
  bool response_complete_ = false;
  TrailerFields response_trailers_;
  bool in_trailers_ = false;
  bool paused_ = false;
  std::deque<BufferSlice> held_;  // response bytes while paused
  size_t unacknowledged_ = 0;     // delivered response bytes not yet given back as window
};

class Http2UpstreamSession : private UpstreamExchange::Owner {
 public:
  Http2UpstreamSession(UpstreamPool& pool, std::string key, const Limits& limits);
  ~Http2UpstreamSession() override;

  // Connects (DNS, TCP, the connection preface).
  void start(const SocketAddress& address);
  // A new stream for `owner`. When the session is up, the owner hears
  // onUpstreamReady before this returns; else once it connects.
  Http2UpstreamStream* openStream(Owner* owner);
  // Takes more streams: not failed, no GOAWAY, under the upstream's limit.
  bool acceptsStreams() const;
  const std::string& key() const { return key_; }
  // Closes the session (its streams fail).
  void close();
  bool idle() const { return streams_.empty(); }

  // For streams.
  nghttp2_session* session() { return session_; }
  void flush();
  UpstreamPool& pool() { return pool_; }
  const Limits& limits() const { return limits_; }
  size_t transportQueuedBytes() const;
  void forget(Http2UpstreamStream* stream);

 private:
  // The transport (UpstreamExchange::Owner of the raw connection).
  void onUpstreamReady(UpstreamExchange& exchange) override;
  void onUpstreamFailed(UpstreamExchange& exchange, UpstreamError error,
                        bool response_byte_seen) override;
  void onUpstreamResponseHead(ResponseHead&) override {}
  void onUpstreamResponseBody(BufferSlice) override {}
  void onUpstreamResponseComplete(const TrailerFields&) override {}
  void onUpstreamDrained() override;
  void onUpstreamTunnelData(BufferSlice slice) override;
  void onUpstreamTunnelEnd(bool error) override;
  void onUpstreamReadDone() override;

  static ssize_t onSend(nghttp2_session*, const uint8_t* data, size_t length, int, void* user);
  static int onSendData(nghttp2_session*, nghttp2_frame*, const uint8_t* frame_head, size_t length,
                        nghttp2_data_source* source, void*);
  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length, uint8_t,
                      void*);
  static int onFrameReceived(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t length, void* user);
  static int onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  static void onHousekeeping(uv_timer_t* timer);
  static void onReap(uv_timer_t* timer);
  // The session cannot go on: every stream fails with `error`.
  void failAll(UpstreamError error);
  // Tells owners whose request bytes have gone out that they may read on.
  void notifyDrained();
  void maybeRetire();

  UpstreamPool& pool_;
  std::string key_;
  const Limits& limits_;
  UpstreamConnection* connection_ = nullptr;
  nghttp2_session* session_ = nullptr;
  std::vector<Http2UpstreamStream*> streams_;
  std::vector<Http2UpstreamStream*> waiting_;  // opened before the session was up
  uv_timer_t* housekeeping_timer_ = nullptr;   // response deadlines, idle close
  uv_timer_t* reap_timer_ = nullptr;           // deletes retired streams
  std::vector<Http2UpstreamStream*> retired_;
  const SlabRef* input_slab_ = nullptr;
  const char* input_begin_ = nullptr;
  const char* input_end_ = nullptr;
  uint64_t streams_opened_ = 0;
  uint64_t idle_since_ms_ = 0;
  bool ready_ = false;
  bool failed_ = false;
  bool going_away_ = false;
  bool flushing_ = false;
};

}  // namespace spacegate
