// Http2ServerSession: the server side of one HTTP/2 connection (nghttp2),
// over the client connection's transport (plaintext h2c with prior
// knowledge, or TLS with ALPN h2). Frames in, streams out: each stream is
// an Http2Stream that takes the same routing, auth, rewriting and logging
// path as an HTTP/1.1 exchange and forwards to an HTTP/1.1 upstream.
//
// Flow control follows backpressure: nghttp2's automatic WINDOW_UPDATEs are
// off, and a stream's receive window opens only as its bytes are written
// upstream; a response is pulled from its upstream only as fast as the
// client's window and the socket take it. Abuse limits (Http2Limits): the
// settings sent, nghttp2's flood options, the ResetBudget for resets both
// ways, a deadline for streams stuck at a zero window.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "config/limits.h"
#include "http2/reset_budget.h"
#include "net/buffer.h"
#include "net/write_queue.h"
#include "route/route_table.h"

namespace spacegate {

class Worker;
class Http2Stream;

// What the session needs of the connection it runs on (ClientConnection).
class Http2Transport {
 public:
  virtual ~Http2Transport() = default;
  virtual OutboundWrite& prepareClientWrite() = 0;
  // Sends the prepared write; on failure the transport closes itself.
  virtual void submitClientWrite() = 0;
  virtual size_t clientQueuedBytes() const = 0;
  // The session is over: close once what is queued has gone out.
  virtual void closeAfterSessionEnd() = 0;
  virtual std::string_view clientIp() const = 0;
  virtual bool transportIsTls() const = 0;
};

class Http2ServerSession {
 public:
  Http2ServerSession(Worker& worker, Http2Transport& transport);
  ~Http2ServerSession();
  Http2ServerSession(const Http2ServerSession&) = delete;
  Http2ServerSession& operator=(const Http2ServerSession&) = delete;

  // Queues the server's SETTINGS. False when nghttp2 cannot start.
  bool start();
  // Bytes from the client, all of them consumed. `slab` holds them: request
  // body bytes go upstream as slices of it, without a copy. False: the
  // session ended (GOAWAY queued); the transport closes after the flush.
  bool receive(const SlabRef& slab, const char* data, size_t size);
  // Asks for pending frames to be written at the end of this loop iteration
  // (the worker's flush check calls flushNow()).
  void flush();
  // Serializes pending frames into the transport, unless its queue is over
  // the high-water mark (then onTransportDrained() resumes).
  void flushNow();
  void onTransportDrained();
  // GOAWAY(NO_ERROR): streams in flight finish, no new ones; the session ends
  // when the last one does.
  void shutdownGracefully();
  // Resets the streams of these (retired) routes.
  void closeStreamsOfRoutes(const std::vector<RoutePtr>& routes);
  // The transport is closing: every stream lets go of its upstream; no more
  // frames are produced. The object lives on until the transport deletes it.
  void abandon();
  bool abandoned() const { return abandoned_; }
  size_t openStreams() const { return streams_.size(); }

  // For streams.
  Worker& worker() { return worker_; }
  Http2Transport& transport() { return transport_; }
  nghttp2_session* session() { return session_; }
  const Http2Limits& limits() const { return limits_; }
  // A stream is done (its nghttp2 stream closed): deleted at a safe point.
  void retire(Http2Stream* stream);
  // The gateway resets a stream. `client_caused` resets (invalid frames,
  // limits, stalls) draw on the reset budget; the gateway's own (a route
  // retired, an upstream failed, a WebSocket idle) do not.
  void resetStream(int32_t stream_id, uint32_t error_code, bool client_caused = true);
  // Gives `size` bytes of a stream's (or a dropped stream's) window back.
  void consume(int32_t stream_id, size_t size);
  // Ends the session: GOAWAY with `error_code`, then close.
  void terminate(uint32_t error_code, const char* reason);
  // Abuse: GOAWAY(ENHANCE_YOUR_CALM), and nothing more of the client's is
  // read (the frames after it in the same read included).
  void cutOff(const char* reason);

 private:
  static ssize_t onSend(nghttp2_session* session, const uint8_t* data, size_t length, int flags,
                        void* user_data);
  static int onSendData(nghttp2_session* session, nghttp2_frame* frame, const uint8_t* frame_head,
                        size_t length, nghttp2_data_source* source, void* user_data);
  static int onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length, uint8_t flags,
                      void* user_data);
  static int onFrameReceived(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int onDataChunk(nghttp2_session* session, uint8_t flags, int32_t stream_id,
                         const uint8_t* data, size_t length, void* user_data);
  static int onStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user_data);
  static int onFrameSent(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int onInvalidFrame(nghttp2_session* session, const nghttp2_frame* frame, int error_code,
                            void* user_data);
  static void onHousekeeping(uv_timer_t* timer);
  static void onReap(uv_timer_t* timer);
  void reap();
  void checkStalledStreams(uint64_t now_ms);
  void armHousekeeping();
  void endIfDone();

  Worker& worker_;
  Http2Transport& transport_;
  const Http2Limits& limits_;
  nghttp2_session* session_ = nullptr;
  std::vector<Http2Stream*> streams_;         // open streams
  std::vector<Http2Stream*> retired_;         // closed, waiting for a safe point
  ResetBudget sent_resets_;                   // resets the gateway sends because of the client
  ResetBudget received_resets_;               // the client's RST_STREAMs (Rapid Reset)
  std::vector<int32_t> uncounted_resets_;     // streams reset on the gateway's account
  uv_timer_t* housekeeping_timer_ = nullptr;  // idle, zero-window stalls
  uv_timer_t* reap_timer_ = nullptr;
  // The received bytes being processed (for zero-copy body slices).
  const SlabRef* input_slab_ = nullptr;
  const char* input_begin_ = nullptr;
  const char* input_end_ = nullptr;
  uint64_t last_activity_ms_ = 0;
  bool flushing_ = false;
  bool going_away_ = false;  // GOAWAY sent: the session ends with its last stream
  bool cut_off_ = false;     // abuse: no frame of the client's is processed any more
  bool ended_ = false;       // the transport was told to close
  bool abandoned_ = false;
  bool write_blocked_ = false;    // the transport's queue is over the high-water mark
  bool flush_scheduled_ = false;  // in the worker's list for this iteration's flush
};

}  // namespace spacegate
