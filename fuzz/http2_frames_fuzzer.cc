// Fuzz target: an HTTP/2 client's byte stream into a real Http2ServerSession
// (proxy/http2/server_session.h), on a real Worker that is never opened or
// started, through a fake Http2Transport that keeps what the session writes.
// The client preface is put in front of the input unless the input asks
// otherwise; the stream arrives in reads cut at fuzzer-chosen places
// (split_reader.h). No route forwards: the table holds only routes that need
// a token, and the key ring is empty, so every stream is answered by the
// gateway itself (404, 401, the login redirect, 400/413/431/501, resets),
// which drives header collection, pseudo-header checks, limits, the access
// policy, local responses, resets, flow control and GOAWAY without sockets.
// After the input: a flush, the loop's due timers (the reap timer), then the
// session is abandoned and deleted and the loop runs its close callbacks, so
// nothing is carried to the next input.
//
// Beyond the sanitizers it checks what the client would read: the output is
// whole HTTP/2 frames, each within 16,384 bytes and of a type and size a
// server may send, starting with the server's SETTINGS (the configured
// limits); header blocks are never interleaved and decode with HPACK to
// responses a gateway without an upstream can give (:status first, one of
// 302 400 401 403 404 413 431 501; lower-case names; no connection-specific
// field; no CR, LF or NUL in a value); responses only on streams the client
// opened and, once a GOAWAY went out, only on streams within its last stream
// id, which never rises; nothing after a stream's END_STREAM but RST_STREAM;
// DATA as long as the content-length, and none for HEAD; DATA within the
// windows the client gave; ACKs only for the client's own SETTINGS and PINGs
// (the same payload); no write after the transport failed; receive() false
// only once the transport was told to close; no upstream ever asked for.
// HTTP2_FRAMES_DUMP=1 prints the server's frames.
//
// Input: byte 0 seeds the read sizes (split_reader.h); byte 1:
//   bits 0-1  3: no client preface in front of the stream (else prepended)
//   bit 2     tight limits (1 KiB header blocks, 8 fields, 16-byte bodies,
//             4 streams, a 64-byte stream window, 2 CONTINUATIONs, 4 settings,
//             8 queued ACKs, a reset budget of 4, 1 KiB write high-water)
//   bit 3     the transport is TLS
//   bit 4     a slow client: written bytes stay queued until every second
//             read (onTransportDrained), so the high-water mark can block
//   bit 5     the loop runs between reads (the reap timer fires mid-stream)
//   bit 6     after the first read every route is retired
//             (closeStreamsOfRoutes); after the second the worker drains
//             (shutdownGracefully)
//   bit 7     the client's socket fails on the write that takes the total
//             past 64 bytes (the transport abandons the session inside it)
// the rest is the byte stream from the client.
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "common/validation_error.h"
#include "config/gateway_config.h"
#include "http2/server_session.h"
#include "route/route_json.h"
#include "server/worker.h"
#include "split_reader.h"

namespace spacegate::fuzz {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
// nghttp2 never sends a payload over SETTINGS_MAX_FRAME_SIZE's minimum (it
// is not told to, and the gateway announces no larger size either).
constexpr size_t kMaxFramePayload = 16384;
constexpr uint64_t kDefaultWindow = 65535;
constexpr size_t kFailingWriteTotal = 64;

enum FrameType : uint8_t {
  kData = 0,
  kHeaders = 1,
  kPriority = 2,
  kRstStream = 3,
  kSettings = 4,
  kPushPromise = 5,
  kPing = 6,
  kGoaway = 7,
  kWindowUpdate = 8,
  kContinuation = 9,
};
constexpr uint8_t kFlagEndStream = 0x1;  // DATA, HEADERS
constexpr uint8_t kFlagAck = 0x1;        // SETTINGS, PING
constexpr uint8_t kFlagEndHeaders = 0x4;
constexpr uint8_t kFlagPadded = 0x8;
constexpr uint8_t kFlagPriority = 0x20;

struct FrameHeader {
  uint32_t length;
  uint8_t type;
  uint8_t flags;
  int32_t stream_id;
  bool reserved_bit;
};

uint32_t read32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

FrameHeader readFrameHeader(const uint8_t* p) {
  FrameHeader header;
  header.length = uint32_t{p[0]} << 16 | uint32_t{p[1]} << 8 | p[2];
  header.type = p[3];
  header.flags = p[4];
  uint32_t id = read32(p + 5);
  header.reserved_bit = (id & 0x80000000u) != 0;
  header.stream_id = static_cast<int32_t>(id & 0x7fffffffu);
  return header;
}

// --- The gateway under test ---------------------------------------------------

const char* const kRoutes = R"([
  {"id": "owned", "host": "app.test", "upstream": "127.0.0.1:9", "gitspace": "gs-a",
   "owner": "user-1", "access": "owner"},
  {"id": "ide", "host": "*.gitspaces.test", "upstream": "127.0.0.1:9", "access": "authenticated"},
  {"id": "agent", "host": "agent.test", "upstream": "127.0.0.1:9", "gitspace": "gs-a",
   "access": "agent"},
  {"id": "path", "host": "gw.test", "path_prefix": "/gs/gs-x/", "strip_prefix": true,
   "upstream": "127.0.0.1:9", "access": "authenticated"}
])";

// A worker with its config and publishers, made once and kept for the
// process (the Worker holds references to all of them).
struct Gateway {
  GatewayConfig config;
  RouteTablePublisher routes;
  KeyRingPublisher keys;  // empty: no token is ever valid
  TlsContextPublisher tls_contexts;
  AccessLogSink access_log;  // never opened: access logging off
  std::unique_ptr<Worker> worker;
};

Gateway* makeGateway(bool tight) {
  auto* gateway = new Gateway;
  GatewayConfig& config = gateway->config;
  config.access_log = "off";
  config.auth.login_url = "https://login.test/sign-in";
  if (tight) {
    config.limits.header_block_size = 1024;
    config.limits.header_field_count = 8;
    config.limits.request_body_size = 16;
    config.limits.write_high_water = 1024;
    config.limits.write_low_water = 256;
    config.http2.max_concurrent_streams = 4;
    config.http2.initial_window_size = 64;
    config.http2.max_continuations = 2;
    config.http2.max_settings = 4;
    config.http2.max_outbound_ack = 8;
    config.http2.stream_reset_burst = 4;
    config.http2.stream_reset_rate = 1;
  }
  std::vector<Route> routes;
  ValidationError error;
  if (!parseRouteList(nlohmann::json::parse(kRoutes), "routes", routes, error)) std::abort();
  for (const Route& route : routes) {
    if (route.access == RouteAccess::kPublic) std::abort();  // would forward: sockets
  }
  gateway->routes.publish(std::make_shared<const RouteTable>(std::move(routes), 1));
  gateway->worker = std::make_unique<Worker>(0, config, gateway->routes, gateway->keys,
                                             gateway->tls_contexts, gateway->access_log);
  return gateway;
}

Gateway& gatewayFor(bool tight) {
  // Never deleted: the worker's loop lives as long as the process.
  static Gateway* normal = makeGateway(false);
  static Gateway* strict = makeGateway(true);
  return tight ? *strict : *normal;
}

// --- The fake connection --------------------------------------------------------

class FakeTransport final : public Http2Transport {
 public:
  FakeTransport(bool tls, bool slow, bool failing) : tls_(tls), slow_(slow), failing_(failing) {}

  void attach(Http2ServerSession* session) { session_ = session; }

  OutboundWrite& prepareClientWrite() override {
    FUZZ_CHECK(!failed_, "a write prepared after the transport failed");
    if (!prepared_) prepared_ = std::make_unique<OutboundWrite>();
    return *prepared_;
  }

  void submitClientWrite() override {
    FUZZ_CHECK(!failed_, "a write submitted after the transport failed");
    if (!prepared_) return;  // ClientConnection sends an empty write then
    std::unique_ptr<OutboundWrite> write = std::move(prepared_);
    std::string bytes = write->flatten();
    FUZZ_CHECK(bytes.size() == write->size(), "a write's size disagrees with its bytes");
    if (failing_ && written_.size() + bytes.size() > kFailingWriteTotal) {
      // As ClientConnection::submitClientWrite: abort() closes the
      // connection, which abandons the session, here inside its own call.
      failed_ = true;
      session_->abandon();
      return;
    }
    written_.append(bytes);
    if (slow_) queued_ += bytes.size();
  }

  size_t clientQueuedBytes() const override { return queued_; }
  void closeAfterSessionEnd() override { ++close_requests_; }
  std::string_view clientIp() const override { return "192.0.2.7"; }
  bool transportIsTls() const override { return tls_; }

  // The client took what was queued.
  void drain() {
    if (queued_ == 0 || failed_ || session_->abandoned()) return;
    queued_ = 0;
    session_->onTransportDrained();
  }

  const std::string& written() const { return written_; }
  bool failed() const { return failed_; }
  int closeRequests() const { return close_requests_; }

 private:
  bool tls_;
  bool slow_;
  bool failing_;
  Http2ServerSession* session_ = nullptr;
  std::unique_ptr<OutboundWrite> prepared_;
  std::string written_;
  size_t queued_ = 0;
  bool failed_ = false;
  int close_requests_ = 0;
};

// --- What the client sent ---------------------------------------------------------

// Decodes one HPACK header block; calls `field` for each field. False on a
// compression error.
template <typename FieldFunction>
bool inflateBlock(nghttp2_hd_inflater* inflater, const std::string& block, FieldFunction field) {
  const uint8_t* in = reinterpret_cast<const uint8_t*>(block.data());
  size_t left = block.size();
  while (true) {
    nghttp2_nv nv;
    int flags = 0;
    ssize_t used = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
    if (used < 0) return false;
    in += used;
    left -= static_cast<size_t>(used);
    if (flags & NGHTTP2_HD_INFLATE_EMIT) {
      field(std::string_view(reinterpret_cast<const char*>(nv.name), nv.namelen),
            std::string_view(reinterpret_cast<const char*>(nv.value), nv.valuelen));
    }
    if (flags & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(inflater);
      return true;
    }
    if (used == 0 && left == 0) return false;  // no progress, not final
  }
}

struct InflaterHolder {
  InflaterHolder() {
    if (nghttp2_hd_inflate_new(&inflater) != 0) std::abort();
  }
  ~InflaterHolder() { nghttp2_hd_inflate_del(inflater); }
  nghttp2_hd_inflater* inflater = nullptr;
};

// The client's frames read as the server reads them, as far as they are
// well formed: upper bounds on the windows it gave and the ACKs it may get,
// and which streams it opened (with which method). Extra frames the server
// never processed only loosen these bounds.
struct ClientView {
  bool has_preface = false;
  std::set<int32_t> opened;
  std::set<int32_t> head_requests;
  uint64_t largest_initial_window = kDefaultWindow;
  uint64_t connection_increments = 0;
  std::map<int32_t, uint64_t> stream_increments;
  size_t settings = 0;  // SETTINGS frames without ACK
  std::multiset<std::string> ping_payloads;
};

ClientView readClientStream(std::string_view stream) {
  ClientView view;
  if (!stream.starts_with(kPreface)) return view;
  view.has_preface = true;
  InflaterHolder hpack;
  const auto* bytes = reinterpret_cast<const uint8_t*>(stream.data());
  size_t offset = kPreface.size();
  std::string block;         // a header block being collected
  int32_t block_stream = 0;  // its stream; 0: none open
  bool block_is_request = false;
  while (offset + 9 <= stream.size()) {
    FrameHeader frame = readFrameHeader(bytes + offset);
    if (offset + 9 + frame.length > stream.size()) break;  // never complete
    const uint8_t* payload = bytes + offset + 9;
    offset += 9 + frame.length;
    if (frame.length > kMaxFramePayload) break;  // FRAME_SIZE_ERROR: the end
    if (block_stream != 0 && (frame.type != kContinuation || frame.stream_id != block_stream)) {
      break;  // an interleaved header block: PROTOCOL_ERROR, the end
    }
    switch (frame.type) {
      case kHeaders:
      case kContinuation: {
        const uint8_t* fragment = payload;
        size_t size = frame.length;
        if (frame.type == kHeaders) {
          if (frame.stream_id == 0) return view;
          size_t padding = 0;
          if (frame.flags & kFlagPadded) {
            if (size < 1) return view;
            padding = fragment[0];
            ++fragment;
            --size;
          }
          if (frame.flags & kFlagPriority) {
            if (size < 5) return view;
            fragment += 5;
            size -= 5;
          }
          if (padding > size) return view;
          size -= padding;
          block.clear();
          block_stream = frame.stream_id;
          // The first block on an odd stream opens it; a later one is trailers.
          block_is_request = (frame.stream_id & 1) && !view.opened.count(frame.stream_id);
          if (block_is_request) view.opened.insert(frame.stream_id);
        } else if (block_stream == 0) {
          return view;  // CONTINUATION without a header block: the end
        }
        block.append(reinterpret_cast<const char*>(fragment), size);
        if (frame.flags & kFlagEndHeaders) {
          bool first_method = true;
          bool ok = inflateBlock(hpack.inflater, block,
                                 [&](std::string_view name, std::string_view value) {
                                   if (name != ":method" || !first_method) return;
                                   first_method = false;
                                   if (block_is_request && value == "HEAD")
                                     view.head_requests.insert(block_stream);
                                 });
          if (!ok) return view;  // COMPRESSION_ERROR: the end
          block_stream = 0;
        }
        break;
      }
      case kSettings:
        if (frame.stream_id != 0) return view;
        if (frame.flags & kFlagAck) break;
        if (frame.length % 6 != 0) return view;
        ++view.settings;
        for (size_t i = 0; i < frame.length; i += 6) {
          uint16_t id = static_cast<uint16_t>(payload[i] << 8 | payload[i + 1]);
          uint32_t value = read32(payload + i + 2);
          if (id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE && value <= 0x7fffffffu) {
            view.largest_initial_window = std::max<uint64_t>(view.largest_initial_window, value);
          }
        }
        break;
      case kPing:
        if (frame.stream_id != 0 || frame.length != 8) return view;
        if (!(frame.flags & kFlagAck)) {
          view.ping_payloads.insert(std::string(reinterpret_cast<const char*>(payload), 8));
        }
        break;
      case kWindowUpdate: {
        if (frame.length != 4) return view;
        uint64_t increment = read32(payload) & 0x7fffffffu;
        if (frame.stream_id == 0) {
          view.connection_increments += increment;
        } else {
          view.stream_increments[frame.stream_id] += increment;
        }
        break;
      }
      default: break;
    }
  }
  return view;
}

// --- What the client reads ----------------------------------------------------------

bool isLocalStatus(int status) {
  for (int local : {302, 400, 401, 403, 404, 413, 431, 501}) {
    if (status == local) return true;
  }
  return false;
}

bool isConnectionSpecific(std::string_view name) {
  for (std::string_view hop : {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                               "upgrade", "te", "trailer"}) {
    if (name == hop) return true;
  }
  return false;
}

struct ResponseStream {
  bool response_seen = false;  // the response's HEADERS
  bool ended = false;          // END_STREAM sent
  int status = 0;
  int64_t content_length = -1;
  uint64_t data_bytes = 0;
};

void checkSettings(const FrameHeader& frame, const uint8_t* payload, const Worker& worker) {
  const Http2Limits& http2 = worker.http2Limits();
  std::map<uint16_t, uint32_t> values;
  for (size_t i = 0; i < frame.length; i += 6) {
    values[static_cast<uint16_t>(payload[i] << 8 | payload[i + 1])] = read32(payload + i + 2);
  }
  auto announced = [&](uint16_t id, uint32_t expected) {
    auto found = values.find(id);
    return found != values.end() && found->second == expected;
  };
  FUZZ_CHECK(
      announced(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, http2.max_concurrent_streams) &&
          announced(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, http2.initial_window_size) &&
          announced(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, worker.limits().header_block_size) &&
          announced(NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1),
      "the server's SETTINGS are not the configured limits");
}

void checkResponseBlock(const std::string& block, nghttp2_hd_inflater* inflater,
                        ResponseStream& stream, bool trailers) {
  bool first = true;
  bool ok = inflateBlock(inflater, block, [&](std::string_view name, std::string_view value) {
    FUZZ_CHECK(!name.empty(), "an empty field name");
    for (char c : name) {
      FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "an upper-case field name");
    }
    FUZZ_CHECK(value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos,
               "CR, LF or NUL in a response field value");
    if (trailers) {
      FUZZ_CHECK(name.front() != ':', "a pseudo-header in trailers");
      return;
    }
    if (first) {
      FUZZ_CHECK(name == ":status" && value.size() == 3, "the response does not open with :status");
      stream.status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
      FUZZ_CHECK(isLocalStatus(stream.status), "a status the gateway cannot give by itself");
    } else {
      FUZZ_CHECK(name.front() != ':', "a second pseudo-header in a response");
    }
    first = false;
    FUZZ_CHECK(!isConnectionSpecific(name), "a connection-specific field in an HTTP/2 response");
    if (name == "content-length") {
      FUZZ_CHECK(stream.content_length < 0, "two content-length fields");
      int64_t length = 0;
      FUZZ_CHECK(!value.empty() && value.size() < 10, "content-length value");
      for (char c : value) {
        FUZZ_CHECK(c >= '0' && c <= '9', "content-length value");
        length = length * 10 + (c - '0');
      }
      stream.content_length = length;
    }
  });
  FUZZ_CHECK(ok, "a response header block that does not decode (HPACK)");
  FUZZ_CHECK(trailers || !first, "an empty response header block");
}

void checkStreamEnd(int32_t id, const ResponseStream& stream, const ClientView& client) {
  if (client.head_requests.count(id)) {
    FUZZ_CHECK(stream.data_bytes == 0, "a response to HEAD carries content");
    return;
  }
  if (stream.content_length >= 0) {
    FUZZ_CHECK(stream.data_bytes == static_cast<uint64_t>(stream.content_length),
               "the DATA sent is not the content-length announced");
  }
}

void checkOutput(const std::string& output, const ClientView& client, const Worker& worker) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(output.data());
  InflaterHolder hpack;
  std::map<int32_t, ResponseStream> streams;
  size_t offset = 0;
  bool first_frame = true;
  std::string block;
  int32_t block_stream = 0;  // a header block is open on it
  bool block_trailers = false;
  bool block_end_stream = false;
  int64_t goaway_last_stream = INT64_MAX;
  uint64_t connection_data = 0;
  size_t settings_acks = 0;
  std::multiset<std::string> pings = client.ping_payloads;
  while (offset < output.size()) {
    FUZZ_CHECK(offset + 9 <= output.size(), "the output ends inside a frame header");
    FrameHeader frame = readFrameHeader(bytes + offset);
    FUZZ_CHECK(frame.length <= kMaxFramePayload, "a frame over 16,384 bytes");
    FUZZ_CHECK(offset + 9 + frame.length <= output.size(), "the output ends inside a frame");
    FUZZ_CHECK(!frame.reserved_bit, "the reserved bit of a stream id is set");
    const uint8_t* payload = bytes + offset + 9;
    offset += 9 + frame.length;
    if (first_frame) {
      FUZZ_CHECK(frame.type == kSettings && !(frame.flags & kFlagAck) && frame.stream_id == 0,
                 "the server's preface is not a SETTINGS frame");
      checkSettings(frame, payload, worker);
    }
    first_frame = false;
    if (block_stream != 0) {
      FUZZ_CHECK(frame.type == kContinuation && frame.stream_id == block_stream,
                 "another frame inside a header block");
    }
    bool on_stream = frame.stream_id != 0;
    switch (frame.type) {
      case kSettings:
      case kPing:
      case kGoaway: FUZZ_CHECK(!on_stream, "a connection frame on a stream"); break;
      case kData:
      case kHeaders:
      case kRstStream:
      case kContinuation:
        FUZZ_CHECK(on_stream && (frame.stream_id & 1), "a stream frame on no client stream");
        break;
      case kWindowUpdate: break;
      default: FUZZ_CHECK(false, "a frame type the server never sends (PRIORITY, PUSH_PROMISE, ?)");
    }
    ResponseStream* stream = on_stream ? &streams[frame.stream_id] : nullptr;
    switch (frame.type) {
      case kSettings:
        FUZZ_CHECK(frame.length % 6 == 0, "a SETTINGS length not a multiple of 6");
        if (frame.flags & kFlagAck) {
          FUZZ_CHECK(frame.length == 0, "a SETTINGS ACK with a payload");
          ++settings_acks;
          FUZZ_CHECK(settings_acks <= client.settings, "a SETTINGS ACK the client did not ask for");
        }
        break;
      case kPing: {
        FUZZ_CHECK(frame.length == 8, "a PING not of 8 bytes");
        FUZZ_CHECK(frame.flags & kFlagAck, "a PING the server started");
        auto found = pings.find(std::string(reinterpret_cast<const char*>(payload), 8));
        FUZZ_CHECK(found != pings.end(), "a PING ACK for a PING the client did not send");
        pings.erase(found);
        break;
      }
      case kGoaway: {
        FUZZ_CHECK(frame.length >= 8, "a GOAWAY under 8 bytes");
        int64_t last = read32(payload) & 0x7fffffffu;
        { FUZZ_CHECK(last <= goaway_last_stream, "a GOAWAY raised the last stream id"); }
        goaway_last_stream = std::min(goaway_last_stream, last);
        break;
      }
      case kWindowUpdate:
        FUZZ_CHECK(frame.length == 4, "a WINDOW_UPDATE not of 4 bytes");
        FUZZ_CHECK((read32(payload) & 0x7fffffffu) != 0, "a WINDOW_UPDATE of 0");
        break;
      case kRstStream: FUZZ_CHECK(frame.length == 4, "a RST_STREAM not of 4 bytes"); break;
      case kHeaders:
        FUZZ_CHECK(!(frame.flags & (kFlagPadded | kFlagPriority)),
                   "HEADERS with padding or priority");
        FUZZ_CHECK(client.opened.count(frame.stream_id),
                   "a response on a stream the client never opened");
        {
          FUZZ_CHECK(frame.stream_id <= goaway_last_stream,
                     "a response on a stream past the GOAWAY");
        }
        FUZZ_CHECK(!stream->ended, "HEADERS after the stream ended");
        block.assign(reinterpret_cast<const char*>(payload), frame.length);
        block_trailers = stream->response_seen;
        if (block_trailers) {
          FUZZ_CHECK(frame.flags & kFlagEndStream, "trailers without END_STREAM");
        }
        block_end_stream = frame.flags & kFlagEndStream;
        block_stream = frame.stream_id;
        break;
      case kContinuation:
        FUZZ_CHECK(block_stream == frame.stream_id, "a CONTINUATION outside a header block");
        block.append(reinterpret_cast<const char*>(payload), frame.length);
        break;
      case kData:
        FUZZ_CHECK(!(frame.flags & kFlagPadded), "padded DATA");
        FUZZ_CHECK(stream->response_seen && !stream->ended, "DATA outside a response");
        { FUZZ_CHECK(frame.stream_id <= goaway_last_stream, "DATA on a stream past the GOAWAY"); }
        FUZZ_CHECK(frame.length > 0 || (frame.flags & kFlagEndStream), "an empty DATA frame");
        stream->data_bytes += frame.length;
        connection_data += frame.length;
        {
          auto increments = client.stream_increments.find(frame.stream_id);
          uint64_t window = client.largest_initial_window +
                            (increments == client.stream_increments.end() ? 0 : increments->second);
          FUZZ_CHECK(stream->data_bytes <= window, "DATA past the stream's window");
          FUZZ_CHECK(connection_data <= kDefaultWindow + client.connection_increments,
                     "DATA past the connection's window");
        }
        if (frame.flags & kFlagEndStream) {
          stream->ended = true;
          checkStreamEnd(frame.stream_id, *stream, client);
        }
        break;
      default: break;
    }
    if ((frame.type == kHeaders || frame.type == kContinuation) &&
        (frame.flags & kFlagEndHeaders)) {
      ResponseStream& owner = streams[block_stream];
      checkResponseBlock(block, hpack.inflater, owner, block_trailers);
      owner.response_seen = true;
      if (block_end_stream) {
        owner.ended = true;
        checkStreamEnd(block_stream, owner, client);
      }
      block_stream = 0;
    }
  }
  FUZZ_CHECK(block_stream == 0, "the output ends inside a header block");
}

// With HTTP2_FRAMES_DUMP set (reproducing one input): the server's frames
// on stderr, one a line, header blocks decoded.
void dumpFrames(const std::string& output) {
  static const char* const kNames[] = {"DATA",          "HEADERS",      "PRIORITY", "RST_STREAM",
                                       "SETTINGS",      "PUSH_PROMISE", "PING",     "GOAWAY",
                                       "WINDOW_UPDATE", "CONTINUATION"};
  InflaterHolder hpack;
  const auto* bytes = reinterpret_cast<const uint8_t*>(output.data());
  std::string block;
  for (size_t offset = 0; offset + 9 <= output.size();) {
    FrameHeader frame = readFrameHeader(bytes + offset);
    size_t length = std::min<size_t>(frame.length, output.size() - offset - 9);
    std::string payload(output, offset + 9, length);
    offset += 9 + length;
    std::fprintf(stderr, "server: %s flags=0x%02x stream=%d length=%u",
                 frame.type < 10 ? kNames[frame.type] : "?", frame.flags, frame.stream_id,
                 frame.length);
    if (frame.type == kRstStream || frame.type == kWindowUpdate) {
      if (length >= 4) std::fprintf(stderr, " value=%u", read32(bytes + offset - length));
    } else if (frame.type == kGoaway && length >= 8) {
      std::fprintf(stderr, " last_stream=%u error=%u debug=\"%s\"", read32(bytes + offset - length),
                   read32(bytes + offset - length + 4), payload.substr(8).c_str());
    } else if (frame.type == kData) {
      std::fprintf(stderr, " \"%s\"", payload.c_str());
    }
    std::fputc('\n', stderr);
    if (frame.type == kHeaders || frame.type == kContinuation) {
      if (frame.type == kHeaders) block.clear();
      block.append(payload);
      if (frame.flags & kFlagEndHeaders) {
        inflateBlock(hpack.inflater, block, [](std::string_view name, std::string_view value) {
          std::fprintf(stderr, "    %.*s: %.*s\n", static_cast<int>(name.size()), name.data(),
                       static_cast<int>(value.size()), value.data());
        });
      }
    }
  }
}

// --- One connection -------------------------------------------------------------------

void runLoopOnce(Worker& worker) {
  uv_run(worker.loop(), UV_RUN_NOWAIT);
}

void runConnection(const uint8_t* data, size_t size, uint8_t split_seed, uint8_t options) {
  bool with_preface = (options & 3) != 3;
  Gateway& gateway = gatewayFor(options & 4);
  Worker& worker = *gateway.worker;
  bool slow = options & 16;
  bool loop_between_reads = options & 32;
  bool worker_events = options & 64;

  std::string stream;
  if (with_preface) stream.append(kPreface);
  stream.append(reinterpret_cast<const char*>(data), size);
  ClientView client = readClientStream(stream);

  const WorkerCounters& counters = worker.counters();
  uint64_t upstreams_before = counters.upstream_pool_hits + counters.upstream_pool_misses;
  uint64_t streams_before = counters.http2_streams;

  FakeTransport transport(options & 8, slow, options & 128);
  uv_update_time(worker.loop());  // timers armed now count from now
  auto session = std::make_unique<Http2ServerSession>(worker, transport);
  transport.attach(session.get());
  if (!session->start()) std::abort();

  // Seed 0 is the whole stream in one read, as split_reader.h promises
  // (its SplitReader cuts even that one at a random size).
  SplitReader reader(reinterpret_cast<const uint8_t*>(stream.data()), stream.size(), split_seed);
  bool whole_unread = split_seed == 0;
  auto moreToRead = [&] { return split_seed == 0 ? whole_unread : !reader.done(); };
  bool open = true;
  for (int reads = 0; open && moreToRead(); ++reads) {
    std::string_view read = split_seed == 0 ? std::string_view(stream) : reader.next();
    whole_unread = false;
    // Into slabs from the worker's pool, as ClientConnection reads them
    // (request body bytes would go upstream as slices of them).
    while (open && !read.empty()) {
      SlabRef slab = read.size() > BufferPool::kStandardSize ? worker.buffers().acquireLarge()
                                                             : worker.buffers().acquireStandard();
      size_t piece = std::min(read.size(), slab.capacity());
      std::memcpy(slab.data(), read.data(), piece);
      read.remove_prefix(piece);
      bool alive = session->receive(slab, slab.data(), piece);
      if (!alive) {
        FUZZ_CHECK(transport.closeRequests() > 0 || transport.failed() || session->abandoned(),
                   "receive() gave up without telling the transport to close");
        open = false;
      }
    }
    if (!open || transport.failed()) break;
    if (slow && reads % 2 == 1) transport.drain();
    if (worker_events && reads == 0) {
      session->closeStreamsOfRoutes(worker.routes()->sortedRoutes());
    } else if (worker_events && reads == 1) {
      session->shutdownGracefully();
    }
    if (transport.failed()) break;
    if (loop_between_reads) runLoopOnce(worker);
    if (transport.closeRequests() > 0) break;
  }

  // The client reads what is left; timers that are due run.
  if (!transport.failed()) {
    transport.drain();
    session->flush();
  }
  runLoopOnce(worker);
  runLoopOnce(worker);
  if (!transport.failed()) session->flush();

  if (std::getenv("HTTP2_FRAMES_DUMP")) {
    dumpFrames(transport.written());
    std::fprintf(stderr, "streams begun: %llu\n",
                 static_cast<unsigned long long>(counters.http2_streams - streams_before));
  }
  checkOutput(transport.written(), client, worker);
  FUZZ_CHECK(counters.upstream_pool_hits + counters.upstream_pool_misses == upstreams_before,
             "an upstream was asked for without a valid token");

  // As ClientConnection::close(), then its deletion; the close callbacks of
  // the session's timers run in the loop.
  session->abandon();
  session.reset();
  runLoopOnce(worker);
  runLoopOnce(worker);
}

}  // namespace
}  // namespace spacegate::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // "HTTP/2 connection ended by the gateway" and the like, once per input.
  spacegate::Log::setLevel(spacegate::LogLevel::kError);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  spacegate::fuzz::runConnection(data + 2, size - 2, data[0], data[1]);
  return 0;
}
