// Fuzz target: a WebSocket peer's byte stream into WebSocketFrameDecoder
// (proxy/tunnel/websocket_frame.h), as the gateway's tunnel endpoint and
// `spacegatectl ssh-proxy --via websocket` read it. Input: byte 0 seeds the
// read sizes (fuzz/split_reader.h), byte 1 the limits (bits 0-1: 0 server
// side, require_mask; 1 client side, forbid_mask; 2 and 3 neither; bit 2: a
// 64-byte max_payload instead of 1 MiB); the rest is the stream. Each read is
// a fresh heap copy, which the decoder unmasks in place.
// Checks: every event keeps its contract (consumed within the read, payload
// in place, kFrameEnd only after the announced payload, kNeedMore only when
// the read is used up); accepted headers obey the limits and RFC 6455
// (control frames final and at most 125 bytes, masks as required); the
// stream cut into reads decodes to exactly what it decodes to in one read;
// the frames re-encoded with encodeWebSocketFrameHeader and maskPayload
// decode to the same frames; a close payload that parses re-encodes to the
// same bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "split_reader.h"
#include "tunnel/websocket_frame.h"

namespace {

using spacegate::WebSocketFrameDecoder;
using spacegate::WebSocketFrameHeader;
using spacegate::WebSocketOpcode;
using Event = WebSocketFrameDecoder::Event;

struct DecodedFrame {
  WebSocketFrameHeader header;
  std::string payload;  // unmasked
  bool ended = false;
};

struct DecodedStream {
  std::vector<DecodedFrame> frames;
  bool failed = false;
  uint16_t error_code = 0;
  std::string error_reason;
};

bool sameHeader(const WebSocketFrameHeader& a, const WebSocketFrameHeader& b) {
  return a.fin == b.fin && a.opcode == b.opcode && a.masked == b.masked &&
         (!a.masked || std::memcmp(a.mask, b.mask, 4) == 0) && a.payload_length == b.payload_length;
}

bool sameFrames(const DecodedStream& a, const DecodedStream& b) {
  if (a.frames.size() != b.frames.size()) return false;
  for (size_t i = 0; i < a.frames.size(); ++i) {
    if (!sameHeader(a.frames[i].header, b.frames[i].header)) return false;
    if (a.frames[i].payload != b.frames[i].payload || a.frames[i].ended != b.frames[i].ended)
      return false;
  }
  return true;
}

void checkHeader(const WebSocketFrameHeader& header, const WebSocketFrameDecoder::Limits& limits) {
  FUZZ_CHECK(header.header_length >= 2 && header.header_length <= 14, "header length out of range");
  FUZZ_CHECK(header.payload_length <= limits.max_payload, "a frame over max_payload was accepted");
  if (spacegate::isWebSocketControlOpcode(header.opcode)) {
    FUZZ_CHECK(header.fin, "a fragmented control frame was accepted");
    FUZZ_CHECK(header.payload_length <= 125, "a control frame over 125 bytes was accepted");
  }
  if (limits.require_mask) FUZZ_CHECK(header.masked, "an unmasked client frame was accepted");
  if (limits.forbid_mask) FUZZ_CHECK(!header.masked, "a masked server frame was accepted");
  // The announced size of the header: 2, extended length, mask key.
  size_t extended = header.header_length - 2 - (header.masked ? 4 : 0);
  FUZZ_CHECK(extended == 0 || extended == 2 || extended == 8, "odd extended length size");
}

DecodedStream decodeStream(const uint8_t* data, size_t size, uint8_t split_seed,
                           const WebSocketFrameDecoder::Limits& limits) {
  WebSocketFrameDecoder decoder(limits);
  DecodedStream stream;
  spacegate::fuzz::SplitReader reader(data, size, split_seed);
  while (!reader.done()) {
    std::string_view read = reader.next();
    // A fresh allocation of exactly the read: a byte past it is an ASan report.
    std::unique_ptr<char[]> buffer(new char[read.size()]);
    std::memcpy(buffer.get(), read.data(), read.size());
    size_t offset = 0;
    while (true) {
      size_t consumed = 0;
      std::string_view payload;
      Event event = decoder.next(buffer.get() + offset, read.size() - offset, consumed, payload);
      FUZZ_CHECK(consumed <= read.size() - offset, "consumed past the read");
      offset += consumed;
      if (event == Event::kNeedMore) {
        FUZZ_CHECK(offset == read.size(), "kNeedMore with bytes left");
        break;
      }
      if (event == Event::kError) {
        FUZZ_CHECK(decoder.errorCode() == 1002 || decoder.errorCode() == 1009,
                   "an error with an unexpected close code");
        FUZZ_CHECK(std::strlen(decoder.errorReason()) > 0, "an error without a reason");
        stream.failed = true;
        stream.error_code = decoder.errorCode();
        stream.error_reason = decoder.errorReason();
        size_t again = 1;
        FUZZ_CHECK(
            decoder.next(buffer.get(), read.size(), again, payload) == Event::kError && again == 0,
            "the decoder went on after an error");
        return stream;
      }
      if (event == Event::kHeader) {
        FUZZ_CHECK(stream.frames.empty() || stream.frames.back().ended,
                   "a header before the previous frame ended");
        checkHeader(decoder.header(), limits);
        stream.frames.push_back({decoder.header(), "", false});
        continue;
      }
      FUZZ_CHECK(!stream.frames.empty() && !stream.frames.back().ended,
                 "payload or frame end outside a frame");
      DecodedFrame& frame = stream.frames.back();
      if (event == Event::kPayload) {
        FUZZ_CHECK(!payload.empty() && consumed == payload.size(), "payload size is not consumed");
        FUZZ_CHECK(payload.data() == buffer.get() + offset - consumed, "payload not in place");
        frame.payload.append(payload);
        FUZZ_CHECK(frame.payload.size() + decoder.payloadRemaining() == frame.header.payload_length,
                   "payload delivered and remaining disagree with the header");
      } else {
        FUZZ_CHECK(event == Event::kFrameEnd && consumed == 0, "unknown event");
        FUZZ_CHECK(frame.payload.size() == frame.header.payload_length,
                   "frame end before the whole payload");
        frame.ended = true;
      }
    }
  }
  return stream;
}

// The ended frames written again with the encoder (shortest lengths, the
// same mask keys).
std::string reencode(const DecodedStream& stream) {
  std::string bytes;
  for (const DecodedFrame& frame : stream.frames) {
    if (!frame.ended) break;
    char header[spacegate::kMaxWebSocketFrameHeader];
    size_t header_size = spacegate::encodeWebSocketFrameHeader(
        header, frame.header.fin, frame.header.opcode, frame.header.payload_length,
        frame.header.masked ? frame.header.mask : nullptr);
    bytes.append(header, header_size);
    std::string payload = frame.payload;
    if (frame.header.masked)
      spacegate::maskPayload(payload.data(), payload.size(), frame.header.mask, 0);
    bytes.append(payload);
  }
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  uint8_t split_seed = data[0];
  uint8_t limit_bits = data[1];
  data += 2;
  size -= 2;
  WebSocketFrameDecoder::Limits limits;
  limits.require_mask = (limit_bits & 3) == 0;
  limits.forbid_mask = (limit_bits & 3) == 1;
  if (limit_bits & 4) limits.max_payload = 64;

  DecodedStream whole = decodeStream(data, size, 0, limits);
  DecodedStream split = decodeStream(data, size, split_seed, limits);
  FUZZ_CHECK(sameFrames(whole, split), "reads cut elsewhere decode to other frames");
  FUZZ_CHECK(whole.failed == split.failed && whole.error_code == split.error_code &&
                 whole.error_reason == split.error_reason,
             "reads cut elsewhere end in another error");

  std::string again = reencode(whole);
  DecodedStream reencoded =
      decodeStream(reinterpret_cast<const uint8_t*>(again.data()), again.size(), 0, limits);
  FUZZ_CHECK(!reencoded.failed, "re-encoded frames do not decode");
  size_t ended = 0;
  while (ended < whole.frames.size() && whole.frames[ended].ended) ++ended;
  FUZZ_CHECK(reencoded.frames.size() == ended, "re-encoded frames decode to another count");
  for (size_t i = 0; i < ended; ++i) {
    FUZZ_CHECK(sameHeader(reencoded.frames[i].header, whole.frames[i].header) &&
                   reencoded.frames[i].payload == whole.frames[i].payload,
               "a re-encoded frame decodes differently");
    if (whole.frames[i].header.opcode != WebSocketOpcode::kClose) continue;
    uint16_t code = 0;
    std::string_view reason;
    const std::string& payload = whole.frames[i].payload;
    if (spacegate::parseWebSocketClosePayload(payload, code, reason) && !payload.empty()) {
      FUZZ_CHECK(spacegate::webSocketClosePayload(code, reason) == payload,
                 "a close payload does not re-encode to itself");
    }
  }
  return 0;
}
