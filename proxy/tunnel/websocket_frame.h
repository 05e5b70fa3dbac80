// WebSocket framing (RFC 6455 section 5), sans IO: the decoder is fed
// whatever bytes a read produced and says what they hold (a frame header,
// a piece of payload, a frame's end), unmasking payload in place in the
// caller's buffer, so a tunnel forwards payload from the buffer it was read
// into without a copy. The encoder writes only frame headers; payload goes
// out from wherever the caller has it (masked in place with
// maskPayload when the caller is a client). The gateway's WebSocket
// tunnel endpoint and `spacegatectl ssh-proxy --via websocket` share it.
// No extensions are negotiated, so reserved bits are always an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace spacegate {

enum class WebSocketOpcode : uint8_t {
  kContinuation = 0,
  kText = 1,
  kBinary = 2,
  kClose = 8,
  kPing = 9,
  kPong = 10,
};

// Close codes (RFC 6455 section 7.4.1) the tunnel code sends.
inline constexpr uint16_t kWebSocketCloseNormal = 1000;
inline constexpr uint16_t kWebSocketCloseGoingAway = 1001;
inline constexpr uint16_t kWebSocketCloseProtocolError = 1002;
inline constexpr uint16_t kWebSocketCloseUnsupportedData = 1003;
inline constexpr uint16_t kWebSocketCloseTooBig = 1009;

// Largest frame header: 2 bytes, 8 of extended length, 4 of mask key.
inline constexpr size_t kMaxWebSocketFrameHeader = 14;
// Control frames (close, ping, pong) carry at most this much payload.
inline constexpr uint64_t kMaxWebSocketControlPayload = 125;

struct WebSocketFrameHeader {
  bool fin = false;
  WebSocketOpcode opcode = WebSocketOpcode::kContinuation;
  bool masked = false;
  uint8_t mask[4] = {0, 0, 0, 0};
  uint64_t payload_length = 0;
  size_t header_length = 0;  // bytes of header on the wire (2..14)
};

inline bool isWebSocketControlOpcode(WebSocketOpcode opcode) {
  return static_cast<uint8_t>(opcode) >= 8;
}

class WebSocketFrameDecoder {
 public:
  struct Limits {
    // A frame whose payload is longer is refused with 1009 before any of
    // its payload is read (the check is per frame: a tunnel never holds a
    // whole message).
    uint64_t max_payload = 1 << 20;
    // Server side: every client frame must be masked (RFC 6455 5.1).
    bool require_mask = true;
    // Client side: a masked server frame is an error (RFC 6455 5.1).
    bool forbid_mask = false;
  };

  enum class Event {
    kNeedMore,  // every byte given was used (kept inside when part of a header)
    kHeader,    // header() holds the next frame's header
    kPayload,   // `payload` is the next piece of the frame's payload, unmasked
    kFrameEnd,  // the frame's payload is complete (comes even for empty frames)
    kError,     // errorCode() / errorReason(); every later call says kError too
  };

  WebSocketFrameDecoder();
  explicit WebSocketFrameDecoder(const Limits& limits);

  // Decodes from data[0..size). Returns one event per call; the caller
  // drops `consumed` bytes and calls again (with the rest, or with the next
  // read once the rest is empty). On kPayload, `payload` points into data
  // (unmasked in place) and `consumed` equals its size. kFrameEnd consumes
  // nothing and needs no bytes.
  Event next(char* data, size_t size, size_t& consumed, std::string_view& payload);

  // The current frame's header (valid from kHeader until the next kHeader).
  const WebSocketFrameHeader& header() const { return header_; }
  // Payload bytes of the current frame not yet delivered.
  uint64_t payloadRemaining() const { return payload_remaining_; }
  // True while a fragmented data message (fin=0 data frame) is unfinished.
  bool inFragmentedMessage() const { return in_fragmented_message_; }
  // After kError: the close code to send (1002 protocol error, 1009 too big).
  uint16_t errorCode() const { return error_code_; }
  // After kError: a short text for the close frame and the logs ("" before).
  const char* errorReason() const { return error_reason_; }

 private:
  // What the next bytes are.
  enum class State {
    kHeader,    // header bytes; gathered in header_bytes_ until complete
    kPayload,   // payload_remaining_ bytes of payload
    kFrameEnd,  // payload complete; kFrameEnd not yet reported
    kFailed,    // an error was reported; nothing more is decoded
  };

  Event fail(uint16_t code, const char* reason);
  // Checks the header bytes gathered so far; false after fail().
  bool checkFirstByte();
  bool checkSecondByte();
  // Bytes of header that the gathered prefix says the frame has.
  size_t headerLengthSoFar() const;
  // Fills header_ from the complete header bytes; false after fail().
  bool finishHeader();

  Limits limits_;
  State state_ = State::kHeader;
  uint8_t header_bytes_[kMaxWebSocketFrameHeader] = {};
  size_t header_have_ = 0;
  WebSocketFrameHeader header_;
  uint64_t payload_remaining_ = 0;
  uint64_t payload_offset_ = 0;  // payload delivered so far: the mask's phase
  bool in_fragmented_message_ = false;
  uint16_t error_code_ = 0;
  const char* error_reason_ = "";
};

// Writes a frame header for a payload of `length` bytes into out (room for
// kMaxWebSocketFrameHeader bytes) and returns its size. `mask` null: an
// unmasked (server) frame; otherwise the client's 4-byte mask key, which the
// caller also applies to the payload with maskPayload. Lengths use
// the shortest encoding.
size_t encodeWebSocketFrameHeader(char* out, bool fin, WebSocketOpcode opcode, uint64_t length,
                                  const uint8_t* mask);

// XORs data[0..size) with the mask key, as bytes `offset`.. of a frame's
// payload (so a payload can be masked or unmasked piece by piece). Masking
// twice restores the bytes.
void maskPayload(char* data, size_t size, const uint8_t mask[4], uint64_t offset);

// The payload of a close frame: the code (big-endian) and a reason, the
// reason cut to fit a control frame. Code 0 makes an empty payload (a close
// without a code).
std::string webSocketClosePayload(uint16_t code, std::string_view reason);

// Reads a close frame's payload. An empty payload gives code 1005 (no code
// present). False for a one-byte payload or a code an endpoint may not send
// (RFC 6455 7.4: below 1000, 1004-1006, 1015, 1016-2999 unassigned).
bool parseWebSocketClosePayload(std::string_view payload, uint16_t& code, std::string_view& reason);

// The Sec-WebSocket-Accept value for a Sec-WebSocket-Key:
// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
std::string webSocketAcceptValue(std::string_view key);

}  // namespace spacegate
