#include "tunnel/websocket_frame.h"

#include <openssl/base.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "Spacegate links BoringSSL (android-libboringssl-dev), not OpenSSL"
#endif
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>

#include "auth/base64url.h"

namespace spacegate {

namespace {

constexpr uint8_t kFinBit = 0x80;
constexpr uint8_t kReservedBits = 0x70;
constexpr uint8_t kOpcodeBits = 0x0f;
constexpr uint8_t kMaskBit = 0x80;
constexpr uint8_t kLengthBits = 0x7f;
// Second-byte length values that announce an extended length.
constexpr uint8_t kLength16 = 126;
constexpr uint8_t kLength64 = 127;

bool isKnownOpcode(uint8_t opcode) {
  switch (static_cast<WebSocketOpcode>(opcode)) {
    case WebSocketOpcode::kContinuation:
    case WebSocketOpcode::kText:
    case WebSocketOpcode::kBinary:
    case WebSocketOpcode::kClose:
    case WebSocketOpcode::kPing:
    case WebSocketOpcode::kPong: return true;
  }
  return false;
}

}  // namespace

WebSocketFrameDecoder::WebSocketFrameDecoder() : WebSocketFrameDecoder(Limits{}) {}

WebSocketFrameDecoder::WebSocketFrameDecoder(const Limits& limits) : limits_(limits) {}

WebSocketFrameDecoder::Event WebSocketFrameDecoder::next(char* data, size_t size, size_t& consumed,
                                                         std::string_view& payload) {
  consumed = 0;
  payload = {};
  switch (state_) {
    case State::kFailed: return Event::kError;
    case State::kFrameEnd: state_ = State::kHeader; return Event::kFrameEnd;
    case State::kPayload: {
      if (size == 0) return Event::kNeedMore;
      size_t piece = static_cast<size_t>(std::min<uint64_t>(size, payload_remaining_));
      if (header_.masked) maskPayload(data, piece, header_.mask, payload_offset_);
      payload = std::string_view(data, piece);
      consumed = piece;
      payload_offset_ += piece;
      payload_remaining_ -= piece;
      if (payload_remaining_ == 0) state_ = State::kFrameEnd;
      return Event::kPayload;
    }
    case State::kHeader: {
      // Byte by byte: a header is at most 14 bytes, and each byte is
      // checked as it arrives, so a bad frame is refused at its first bad
      // byte, not after the peer chose to send the rest.
      while (consumed < size) {
        header_bytes_[header_have_++] = static_cast<uint8_t>(data[consumed++]);
        if (header_have_ == 1 && !checkFirstByte()) return Event::kError;
        if (header_have_ == 2 && !checkSecondByte()) return Event::kError;
        if (header_have_ >= 2 && header_have_ == headerLengthSoFar()) {
          return finishHeader() ? Event::kHeader : Event::kError;
        }
      }
      return Event::kNeedMore;
    }
  }
  return Event::kError;
}

WebSocketFrameDecoder::Event WebSocketFrameDecoder::fail(uint16_t code, const char* reason) {
  state_ = State::kFailed;
  error_code_ = code;
  error_reason_ = reason;
  return Event::kError;
}

bool WebSocketFrameDecoder::checkFirstByte() {
  uint8_t first = header_bytes_[0];
  if (first & kReservedBits) {
    fail(kWebSocketCloseProtocolError, "reserved bits set");
    return false;
  }
  uint8_t opcode_bits = first & kOpcodeBits;
  if (!isKnownOpcode(opcode_bits)) {
    fail(kWebSocketCloseProtocolError, "unknown opcode");
    return false;
  }
  auto opcode = static_cast<WebSocketOpcode>(opcode_bits);
  bool fin = first & kFinBit;
  if (isWebSocketControlOpcode(opcode) && !fin) {
    fail(kWebSocketCloseProtocolError, "fragmented control frame");
    return false;
  }
  if (opcode == WebSocketOpcode::kContinuation && !in_fragmented_message_) {
    fail(kWebSocketCloseProtocolError, "continuation frame without a started message");
    return false;
  }
  if ((opcode == WebSocketOpcode::kText || opcode == WebSocketOpcode::kBinary) &&
      in_fragmented_message_) {
    fail(kWebSocketCloseProtocolError, "new data frame inside a fragmented message");
    return false;
  }
  return true;
}

bool WebSocketFrameDecoder::checkSecondByte() {
  uint8_t second = header_bytes_[1];
  bool masked = second & kMaskBit;
  if (limits_.require_mask && !masked) {
    fail(kWebSocketCloseProtocolError, "unmasked client frame");
    return false;
  }
  if (limits_.forbid_mask && masked) {
    fail(kWebSocketCloseProtocolError, "masked server frame");
    return false;
  }
  auto opcode = static_cast<WebSocketOpcode>(header_bytes_[0] & kOpcodeBits);
  if (isWebSocketControlOpcode(opcode) && (second & kLengthBits) > kMaxWebSocketControlPayload) {
    fail(kWebSocketCloseProtocolError, "control frame payload over 125 bytes");
    return false;
  }
  return true;
}

size_t WebSocketFrameDecoder::headerLengthSoFar() const {
  uint8_t second = header_bytes_[1];
  size_t length = 2;
  uint8_t length_bits = second & kLengthBits;
  if (length_bits == kLength16) length += 2;
  if (length_bits == kLength64) length += 8;
  if (second & kMaskBit) length += 4;
  return length;
}

bool WebSocketFrameDecoder::finishHeader() {
  uint8_t first = header_bytes_[0];
  uint8_t second = header_bytes_[1];
  size_t position = 2;
  uint64_t length = second & kLengthBits;
  if (length == kLength16) {
    length = (uint64_t{header_bytes_[2]} << 8) | header_bytes_[3];
    position += 2;
  } else if (length == kLength64) {
    length = 0;
    for (size_t i = 0; i < 8; ++i) length = (length << 8) | header_bytes_[2 + i];
    position += 8;
    if (length >> 63) {
      fail(kWebSocketCloseProtocolError, "64-bit length with the top bit set");
      return false;
    }
  }
  if (length > limits_.max_payload) {
    fail(kWebSocketCloseTooBig, "frame too big");
    return false;
  }
  WebSocketFrameHeader header;
  header.fin = first & kFinBit;
  header.opcode = static_cast<WebSocketOpcode>(first & kOpcodeBits);
  header.masked = second & kMaskBit;
  if (header.masked) {
    std::memcpy(header.mask, header_bytes_ + position, 4);
    position += 4;
  }
  header.payload_length = length;
  header.header_length = position;
  header_ = header;

  // A data frame without fin opens a message; the continuation with fin
  // closes it. Control frames may come in between and change nothing.
  if (!isWebSocketControlOpcode(header.opcode)) in_fragmented_message_ = !header.fin;

  header_have_ = 0;
  payload_remaining_ = length;
  payload_offset_ = 0;
  state_ = length == 0 ? State::kFrameEnd : State::kPayload;
  return true;
}

size_t encodeWebSocketFrameHeader(char* out, bool fin, WebSocketOpcode opcode, uint64_t length,
                                  const uint8_t* mask) {
  auto* bytes = reinterpret_cast<uint8_t*>(out);
  bytes[0] = static_cast<uint8_t>((fin ? kFinBit : 0) | static_cast<uint8_t>(opcode));
  uint8_t mask_bit = mask ? kMaskBit : 0;
  size_t position = 2;
  if (length < kLength16) {
    bytes[1] = static_cast<uint8_t>(mask_bit | length);
  } else if (length <= 0xffff) {
    bytes[1] = mask_bit | kLength16;
    bytes[2] = static_cast<uint8_t>(length >> 8);
    bytes[3] = static_cast<uint8_t>(length);
    position = 4;
  } else {
    bytes[1] = mask_bit | kLength64;
    for (size_t i = 0; i < 8; ++i) bytes[2 + i] = static_cast<uint8_t>(length >> (56 - 8 * i));
    position = 10;
  }
  if (mask) {
    std::memcpy(bytes + position, mask, 4);
    position += 4;
  }
  return position;
}

void maskPayload(char* data, size_t size, const uint8_t mask[4], uint64_t offset) {
  size_t i = 0;
  unsigned phase = offset & 3;
  // Byte by byte until the key lines up with data[i], then 8 bytes at a
  // time: tunnels mask or unmask every byte they carry.
  for (; i < size && phase != 0; ++i, phase = (phase + 1) & 3) data[i] ^= mask[phase];
  uint8_t doubled[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
  uint64_t word_mask;
  std::memcpy(&word_mask, doubled, 8);
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    word ^= word_mask;
    std::memcpy(data + i, &word, 8);
  }
  for (size_t k = 0; i < size; ++i, ++k) data[i] ^= mask[k & 3];
}

std::string webSocketClosePayload(uint16_t code, std::string_view reason) {
  std::string payload;
  if (code == 0) return payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xff));
  payload.append(reason.substr(0, kMaxWebSocketControlPayload - 2));
  return payload;
}

bool parseWebSocketClosePayload(std::string_view payload, uint16_t& code,
                                std::string_view& reason) {
  reason = {};
  if (payload.empty()) {
    code = 1005;  // "no status code present" (never sent, only reported)
    return true;
  }
  if (payload.size() < 2) return false;
  code = static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) |
                               static_cast<uint8_t>(payload[1]));
  reason = payload.substr(2);
  bool defined = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
  bool application = code >= 3000 && code <= 4999;
  return defined || application;
}

std::string webSocketAcceptValue(std::string_view key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input;
  input.reserve(key.size() + kGuid.size());
  input.append(key).append(kGuid);
  uint8_t digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const uint8_t*>(input.data()), input.size(), digest);
  // Standard base64 with padding (RFC 4648 section 4).
  return base64Encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)),
                      /*padded=*/true);
}

}  // namespace spacegate
